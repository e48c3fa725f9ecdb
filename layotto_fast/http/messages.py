"""What a handler sees and returns, and how an answer is written on the wire."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs

__all__ = ["HEADER_CONTROL", "HEADER_NAME", "TEXT", "Headers", "Request", "Response", "encode", "plain"]

TEXT = "text/plain; charset=utf-8"

CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"  # HTTP/1.0 clients close unless told otherwise
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a token (RFC 9110, 5.1)
HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what no header value may hold (RFC 9110, 5.5)
_UNSAFE = re.compile(r"[\r\n\0]")
# The protocol owns the framing: a handler that set these could desynchronise the stream.
_RESERVED = frozenset({"content-length", "content-type", "transfer-encoding", "connection"})
_NO_BODY = frozenset({204, 304})
_status_lines: dict[int, bytes] = {}
_type_lines: dict[str, bytes] = {}  # "Content-Type: ...\r\nContent-Length: " by content type, checked once
_TYPE_LINES_KEPT = 64  # content types are a handful of constants; a handler inventing them is not cached


class Headers(Mapping[str, str]):
    """A request's header fields: names in any case, a repeated field's values joined with ", ".

    Decoded on first use: most handlers never look at them.
    """

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def __getitem__(self, name: str) -> str:
        return self._fields()[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())

    def __repr__(self) -> str:
        return f"Headers({self._fields()!r})"

    def _fields(self) -> dict[str, str]:
        if self._decoded is None:
            fields: dict[str, str] = {}
            for raw_name, raw_value in self._raw:
                name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                fields[name] = f"{fields[name]}, {value}" if name in fields else value
            self._decoded = fields
        return self._decoded


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # as sent: still percent-encoded, no query
    params: Mapping[str, str]  # the route's {placeholders}, percent-decoded
    query: str  # raw, without the "?"
    headers: Mapping[str, str]  # see Headers
    body: bytes

    def query_params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)


@dataclass(frozen=True, slots=True)
class Response:
    status: int = 200
    content_type: str = TEXT
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def plain(status: int) -> Response:
    """The protocol's own answers: the reason phrase as the body."""
    return Response(status, TEXT, f"{HTTPStatus(status).phrase}\n".encode())


def encode(response: Response, head_only: bool, connection: bytes) -> bytes:
    """The whole answer; raises ValueError or TypeError for a response that cannot be sent."""
    status, body = response.status, response.body
    line = _status_lines.get(status) if type(status) is int else None
    if line is None:
        line = _status_line(status)
    if not isinstance(body, bytes):
        raise TypeError(f"body must be bytes, not {type(body).__name__}")
    if status in _NO_BODY:
        if body:
            raise ValueError(f"a {status} answer has no body")
        framing = b""
    else:
        framing = b"%s%d\r\n" % (_type_lines.get(response.content_type) or _type_line(response.content_type), len(body))
    extra = _extra_headers(response.headers) if response.headers else b""
    return b"".join((line, framing, extra, connection, b"\r\n", b"" if head_only else body))


def _status_line(status: object) -> bytes:
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ValueError(f"status must be an int in 200..599, not {status!r}")
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    line = f"HTTP/1.1 {int(status)} {reason}\r\n".encode("ascii")
    _status_lines[int(status)] = line
    return line


def _type_line(content_type: object) -> bytes:
    line = b"Content-Type: %s\r\nContent-Length: " % _field(content_type)
    if isinstance(content_type, str) and len(_type_lines) < _TYPE_LINES_KEPT:
        _type_lines[content_type] = line
    return line


def _extra_headers(headers: tuple[tuple[str, str], ...]) -> bytes:
    lines = []
    for name, value in headers:
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED:
            raise ValueError(f"header name {name!r} is not allowed")
        lines.append(b"%s: %s\r\n" % (name.encode("ascii"), _field(value)))
    return b"".join(lines)


def _field(value: object) -> bytes:
    if not isinstance(value, str) or _UNSAFE.search(value):
        raise ValueError(f"header value {value!r} is not allowed")
    return value.encode("latin-1")
