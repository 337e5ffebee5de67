"""Why a request's bytes do not decode, naming the field: the requests that gRPC cannot parse
(a string that is not UTF-8, bytes cut short inside a message) are refused like any other
invalid field, with INVALID_ARGUMENT and "<field path>: <reason>". It reads the wire format
itself, because protobuf's parser only says that the whole message failed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from hourglass.api.validation import Invalid, map_key


def undecodable(message_type: Descriptor, data: bytes) -> Invalid:
    """Why `data` does not parse as a message of `message_type`, naming the field where it
    can: a string that is not UTF-8 ("spec.task.command[0]: is not valid UTF-8") or bytes cut
    short inside a message. "request" names the request as a whole. For the requests that
    gRPC cannot decode, so that they are refused like any other invalid field."""
    found = _wire_error(message_type, data, "")
    if found is None:
        return Invalid("request", f"is not a valid {message_type.full_name} message")
    path, reason = found
    return Invalid(path or "request", reason)


class _Cut(Exception):
    """The bytes end inside a field, or use a wire type that proto3 never writes."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
    raise _Cut


def _wire_fields(data: bytes) -> Iterator[tuple[int, bytes | None]]:
    """Each field of a message's wire format: its number, and its bytes when it is
    length-delimited (a string, bytes, a message or a packed list)."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        value = None
        if number == 0:
            raise _Cut
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise _Cut
        if pos > len(data):
            raise _Cut
        yield number, value


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _wire_error(message_type: Descriptor, data: bytes, prefix: str) -> tuple[str, str] | None:
    seen: defaultdict[int, int] = defaultdict(int)
    try:
        for number, value in _wire_fields(data):
            field = message_type.fields_by_number.get(number)
            if field is None or value is None:
                continue  # unknown fields and numbers parse whatever they hold
            path = f"{prefix}.{field.name}" if prefix else field.name
            if _is_map(field):
                found = _map_entry_error(field, value, path)
            else:
                if field.is_repeated:
                    path, seen[number] = f"{path}[{seen[number]}]", seen[number] + 1
                found = _value_error(field, value, path)
            if found is not None:
                return found
    except _Cut:
        return prefix, "is cut short or corrupt"
    return None


def _value_error(field: FieldDescriptor, value: bytes, path: str) -> tuple[str, str] | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            value.decode()
        except UnicodeDecodeError:
            return path, "is not valid UTF-8"
    elif field.message_type is not None:
        return _wire_error(field.message_type, value, path)
    return None


def _map_entry_error(field: FieldDescriptor, entry: bytes, path: str) -> tuple[str, str] | None:
    assert field.message_type is not None  # a map's entry
    fields = dict(_wire_fields(entry))
    try:
        key = (fields.get(1) or b"").decode()
    except UnicodeDecodeError:
        return path, "has a key that is not valid UTF-8"
    value_field = field.message_type.fields_by_name["value"]
    return _value_error(value_field, fields.get(2) or b"", f"{path}[{map_key(key)}]")
