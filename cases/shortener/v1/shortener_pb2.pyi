import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShortenRequest(_message.Message):
    __slots__ = ("url", "alias", "expires_at", "max_visits")
    URL_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_VISITS_FIELD_NUMBER: _ClassVar[int]
    url: str
    alias: str
    expires_at: _timestamp_pb2.Timestamp
    max_visits: int
    def __init__(self, url: _Optional[str] = ..., alias: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_visits: _Optional[int] = ...) -> None: ...

class ShortenResponse(_message.Message):
    __slots__ = ("key", "short_url", "delete_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHORT_URL_FIELD_NUMBER: _ClassVar[int]
    DELETE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    short_url: str
    delete_token: str
    def __init__(self, key: _Optional[str] = ..., short_url: _Optional[str] = ..., delete_token: _Optional[str] = ...) -> None: ...

class CreatePasteRequest(_message.Message):
    __slots__ = ("text", "data", "syntax", "expires_at")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SYNTAX_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    text: str
    data: bytes
    syntax: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, text: _Optional[str] = ..., data: _Optional[bytes] = ..., syntax: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePasteResponse(_message.Message):
    __slots__ = ("key", "short_url", "size", "digest", "delete_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHORT_URL_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DELETE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    short_url: str
    size: int
    digest: str
    delete_token: str
    def __init__(self, key: _Optional[str] = ..., short_url: _Optional[str] = ..., size: _Optional[int] = ..., digest: _Optional[str] = ..., delete_token: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "delete_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DELETE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    delete_token: str
    def __init__(self, key: _Optional[str] = ..., delete_token: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class Count(_message.Message):
    __slots__ = ("name", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("key", "kind", "url", "created_at", "expires_at", "max_visits", "total", "days", "referrers", "agents")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_VISITS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    REFERRERS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    key: str
    kind: str
    url: str
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    max_visits: int
    total: int
    days: _containers.RepeatedCompositeFieldContainer[Count]
    referrers: _containers.RepeatedCompositeFieldContainer[Count]
    agents: _containers.RepeatedCompositeFieldContainer[Count]
    def __init__(self, key: _Optional[str] = ..., kind: _Optional[str] = ..., url: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_visits: _Optional[int] = ..., total: _Optional[int] = ..., days: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., referrers: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., agents: _Optional[_Iterable[_Union[Count, _Mapping]]] = ...) -> None: ...

class PurgeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeResponse(_message.Message):
    __slots__ = ("keys_deleted", "blobs_deleted")
    KEYS_DELETED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_DELETED_FIELD_NUMBER: _ClassVar[int]
    keys_deleted: int
    blobs_deleted: int
    def __init__(self, keys_deleted: _Optional[int] = ..., blobs_deleted: _Optional[int] = ...) -> None: ...

class RollupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollupResponse(_message.Message):
    __slots__ = ("rows_rolled", "batches_forgotten")
    ROWS_ROLLED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    rows_rolled: int
    batches_forgotten: int
    def __init__(self, rows_rolled: _Optional[int] = ..., batches_forgotten: _Optional[int] = ...) -> None: ...
