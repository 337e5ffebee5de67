"""Turns UrlShortener requests into plain values, or says which field is wrong and why (pure).

Every check raises Invalid("<field>", "<reason>"); the gRPC service answers it with
INVALID_ARGUMENT "<field>: <reason>", the HTTP face with 400 and a JSON body naming the
field, before anything is stored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.cases import Invalid
from hourglass.cases.shortener import keys
from hourglass.cases.shortener.spec import Spec
from hourglass.cases.shortener.v1 import shortener_pb2 as pb

__all__ = ["Invalid", "Link", "Paste"]

MAX_KEY = 64
MAX_VISITS = 1_000_000_000
MAX_AHEAD = 10 * 366 * 86400  # expiry at most ten years ahead
# Paths of the read service that a custom alias would shadow.
RESERVED = frozenset({"p", "healthz", "metrics", "api", "favicon.ico", "robots.txt"})
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ALIAS = re.compile(r"[A-Za-z0-9_-]{3,64}")
_SYNTAX = re.compile(r"[a-z0-9+#-]{1,32}")
# Whitespace and control characters: never in a URL that is stored and sent as Location.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
# Schemes without an authority ("mailto:ada@example.com").
_OPAQUE = frozenset({"mailto", "magnet", "tel", "sms", "geo"})


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    alias: str | None
    expires_at: int | None
    max_visits: int | None


@dataclass(frozen=True, slots=True)
class Paste:
    body: bytes
    binary: bool
    syntax: str | None
    expires_at: int | None


def key(value: str, field: str = "key") -> str:
    if not value:
        raise Invalid(field, "is required")
    if len(value) > MAX_KEY or not _KEY.fullmatch(value):
        raise Invalid(field, f"must be 1 to {MAX_KEY} of A-Z a-z 0-9 _ -")
    return value


def url(value: str, spec: Spec, own_hosts: tuple[str, ...] = (), field: str = "url") -> str:
    """An absolute URL with an allowed scheme and a host, not this service's own."""
    if not value:
        raise Invalid(field, "is required")
    if len(value) > spec.max_url_length:
        raise Invalid(field, f"must be at most {spec.max_url_length} characters")
    if _UNSAFE.search(value):
        raise Invalid(field, "must not contain spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise Invalid(field, f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise Invalid(field, "must be absolute, with a scheme such as https://")
    if scheme not in spec.schemes:
        raise Invalid(
            field, f"scheme {scheme!r} is not allowed (allowed: {', '.join(spec.schemes)})"
        )
    if scheme in _OPAQUE:
        if not parts.path:
            raise Invalid(field, f"a {scheme}: URL needs something after the colon")
        return value
    if parts.username is not None or parts.password is not None:
        raise Invalid(field, "must not carry user:password@ (a common disguise of the real host)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise Invalid(field, "must name a host")
    if not _host_ok(host):
        raise Invalid(field, f"host {host!r} is not a valid host name or address")
    netloc = host if port is None else f"{host}:{port}"
    if host in own_hosts or netloc in own_hosts:
        raise Invalid(field, f"points at this shortener ({netloc}): it would redirect to itself")
    return value


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return len(ascii_host) <= 253 and bool(_HOSTNAME.fullmatch(ascii_host))


def own_hosts(spec: Spec, http_listen: str | None) -> tuple[str, ...]:
    """The host names (and host:port) under which this service answers: spec.baseUrl's,
    spec.hosts, and the HTTP face's own listen address when it names a host."""
    hosts = [h.lower() for h in spec.hosts]
    if http_listen:
        host, _, port = http_listen.rpartition(":")
        host = host.strip("[]").lower()
        if host and host not in ("0.0.0.0", "::"):
            hosts.append(f"{host}:{port}")
            if host in ("127.0.0.1", "::1"):
                hosts.append(f"localhost:{port}")
    # "sho.rt:443" also means "sho.rt" for https; keep both spellings.
    hosts += [h.rsplit(":", 1)[0] for h in hosts if h.endswith((":80", ":443"))]
    return tuple(dict.fromkeys(hosts))


def alias(value: str) -> str | None:
    if not value:
        return None
    if not _ALIAS.fullmatch(value):
        raise Invalid("alias", "must be 3 to 64 of A-Z a-z 0-9 _ -")
    if keys.is_generated_shape(value):
        raise Invalid(
            "alias",
            f"must not be {keys.LENGTH} letters and digits (the shape of generated keys);"
            " add a - or _, or pick another length",
        )
    if value.lower() in RESERVED:
        raise Invalid("alias", f"{value!r} is a path of the service itself")
    return value


def expiry(stamp: Timestamp, present: bool, *, now: int, field: str = "expires_at") -> int | None:
    if not present:
        return None
    if not 0 <= stamp.nanos < 1_000_000_000:
        raise Invalid(f"{field}.nanos", "must be in [0, 999999999]")
    if stamp.seconds <= now:
        raise Invalid(field, "must be in the future")
    if stamp.seconds > now + MAX_AHEAD:
        raise Invalid(field, "must be at most ten years ahead")
    return int(stamp.seconds)


def link(request: pb.ShortenRequest, spec: Spec, *, now: int, own: tuple[str, ...]) -> Link:
    """A ShortenRequest -> Link."""
    url_ = url(request.url, spec, own)
    chosen = alias(request.alias)
    expires = expiry(request.expires_at, request.HasField("expires_at"), now=now)
    visits = request.max_visits
    if not 0 <= visits <= MAX_VISITS:
        raise Invalid("max_visits", f"must be between 0 (no limit) and {MAX_VISITS}")
    return Link(url_, chosen, expires, visits or None)


def paste(request: pb.CreatePasteRequest, spec: Spec, *, now: int) -> Paste:
    """A CreatePasteRequest -> Paste."""
    which = request.WhichOneof("body")
    if which is None:
        raise Invalid("text", "give the paste's text (or its bytes as data)")
    body = request.text.encode() if which == "text" else bytes(request.data)
    if not body:
        raise Invalid(which, "must not be empty")
    if len(body) > spec.max_paste_bytes:
        raise Invalid(which, f"must be at most {spec.max_paste_bytes} bytes")
    syntax = request.syntax
    if syntax and not _SYNTAX.fullmatch(syntax):
        raise Invalid("syntax", "must be 1 to 32 of a-z 0-9 + # -")
    expires = expiry(request.expires_at, request.HasField("expires_at"), now=now)
    return Paste(body, which == "data", syntax or None, expires)
