"""Pure-Python HTTP/1.1 server protocol for the actuator endpoint.

Reference implementation and fallback for the compiled ``http_protocol``
module (Cython).  Both must behave byte-for-byte the same; the unit tests run
every case against both and cross-check them on random input.

``HttpProtocol(router)`` is an asyncio protocol::

    server = await loop.create_server(lambda: HttpProtocol(router), host, port)

``router(method, path) -> (status, content_type, body)`` is called
synchronously on the loop with the method (``"GET"`` or ``"HEAD"``) and the
request target up to the first ``?`` or ``#``, undecoded (ASCII).  For
``HEAD`` the router must return the body it would return for ``GET``: the
protocol sends only the headers, with that body's Content-Length.

Behaviour:

* request line and headers are parsed from a buffer; requests may be split
  across ``data_received`` calls at any byte and several may be pipelined in
  one call.  Lines end in LF with an optional CR before it; empty lines before
  a request line are skipped.
* GET and HEAD go to the router.  Any other (well-formed) method gets 405 with
  ``Allow: GET, HEAD``.
* a request body announced by Content-Length is read and discarded; with
  ``Expect: 100-continue`` the body is not waited for: the response closes the
  connection instead.
* any ``Transfer-Encoding`` -> 501 and close.
* malformed request line or header, bad Content-Length -> 400 and close;
  an HTTP major version other than 1 -> 505 and close; a head (request line +
  headers + blank line) longer than 16 KiB -> 431 and close.
* keep-alive by default for HTTP/1.1; ``Connection: close`` closes after the
  response; HTTP/1.0 closes unless it sent ``Connection: keep-alive`` (then
  the response carries ``Connection: keep-alive``).
* an exception in the router, or a malformed return value, -> 500 with a short
  body, logged on the ``layotto_fast.actuator`` logger.
* response: ``HTTP/1.1 {code} {reason}``, ``Content-Type``, ``Content-Length``
  (+ ``Allow`` for 405, + ``Connection``), blank line, body: one
  ``transport.write`` per response, and responses to requests pipelined in one
  read are joined into one write (flushed every 64 KiB).
* back-pressure: when the transport calls ``pause_writing`` the protocol stops
  after the current response, pauses reading and keeps the rest of the input
  until ``resume_writing``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus

__all__ = ["MAX_HEAD_SIZE", "HttpProtocol", "Router"]

logger = logging.getLogger("layotto_fast.actuator")

Router = Callable[[str, str], tuple[int, bytes, bytes]]

MAX_HEAD_SIZE = 16384  # request line + headers + blank line, bytes
_MAX_CL_DIGITS = 18  # fits in a signed 64-bit integer
_OUT_FLUSH = 65536  # flush batched pipelined responses at this size

_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TARGET_OK = bytes(range(0x21, 0x7F))  # visible ASCII
_VALUE_OK = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))  # HTAB, SP, VCHAR, obs-text
_OWS = b" \t"
_CRLF_BYTES = (10, 13)

_TEXT = b"text/plain; charset=utf-8"
_CONN_NONE = b""
_CONN_CLOSE = b"Connection: close\r\n"
_CONN_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_ALLOW = b"Allow: GET, HEAD\r\n"

_STATUS_PREFIX: dict[int, bytes] = {}


def _status_prefix(code: int) -> bytes:
    prefix = _STATUS_PREFIX.get(code)
    if prefix is None:
        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = "Unknown"
        prefix = b"HTTP/1.1 %d %s\r\nContent-Type: " % (code, reason.encode("ascii"))
        _STATUS_PREFIX[code] = prefix
    return prefix


def _response(code: int, ctype: bytes, body: bytes, head_only: bool, conn: bytes, allow: bool) -> bytes:
    parts = [
        _status_prefix(code),
        ctype,
        b"\r\nContent-Length: %d\r\n" % len(body),
        _ALLOW if allow else b"",
        conn,
        b"\r\n",
    ]
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def _error(code: int) -> bytes:
    """An error response that closes the connection."""
    body = HTTPStatus(code).phrase.encode("ascii") + b"\n"
    return _response(code, _TEXT, body, False, _CONN_CLOSE, False)


_RESP_400 = _error(400)
_RESP_431 = _error(431)
_RESP_501 = _error(501)
_RESP_505 = _error(505)
_BODY_405 = b"Method Not Allowed\n"
_BODY_500 = b"Internal Server Error\n"


# (error status or 0, method, target, HTTP/1.1?, Content-Length, "close", "keep-alive", Transfer-Encoding?, Expect?)
_Head = tuple[int, bytes, bytes, bool, int, bool, bool, bool, bool]
_BAD: _Head = (400, b"", b"", True, 0, False, False, False, False)
_BAD_VERSION: _Head = (505, b"", b"", True, 0, False, False, False, False)


def _parse_head(head: bytes) -> _Head:
    """Parse the request line and headers; ``head`` ends with the LF of the last line."""
    # one CR before each LF is part of the line ending
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    lines.pop()
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return _BAD
    method, target, version = parts
    if not method or method.translate(None, _TCHAR):
        return _BAD
    if not target or target.translate(None, _TARGET_OK):
        return _BAD
    if (
        len(version) != 8
        or not version.startswith(b"HTTP/")
        or not version[5:6].isdigit()
        or version[6:7] != b"."
        or not version[7:8].isdigit()
    ):
        return _BAD
    if version[5] != 0x31:  # "1"
        return _BAD_VERSION
    http11 = version[7] != 0x30  # "0"

    cl = -1
    conn_close = conn_keep_alive = has_te = expect = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TCHAR) or value.translate(None, _VALUE_OK):
            return _BAD
        if len(name) not in _INTERESTING_LENGTHS:
            continue
        lname = name.lower()
        value = value.strip(_OWS)
        if lname == b"content-length":
            if not value or len(value) > _MAX_CL_DIGITS or not value.isdigit():
                return _BAD
            n = int(value)
            if cl >= 0 and n != cl:
                return _BAD
            cl = n
        elif lname == b"transfer-encoding":
            has_te = True
        elif lname == b"connection":
            for token in value.split(b","):
                token = token.strip(_OWS).lower()
                if token == b"close":
                    conn_close = True
                elif token == b"keep-alive":
                    conn_keep_alive = True
        elif lname == b"expect" and value.lower() == b"100-continue":
            expect = True
    return (0, method, target, http11, max(cl, 0), conn_close, conn_keep_alive, has_te, expect)


_INTERESTING_LENGTHS = frozenset(len(n) for n in (b"content-length", b"transfer-encoding", b"connection", b"expect"))


def _find_head_end(data: bytes, start: int) -> tuple[int, int]:
    """First LF at or after ``start`` followed by LF or CR LF.

    Returns (index of that LF, index just past the blank line), or (-1, -1).
    """
    i = data.find(b"\n\n", start)
    j = data.find(b"\n\r\n", start)
    if i < 0:
        if j < 0:
            return -1, -1
        return j, j + 3
    if j < 0 or i < j:
        return i, i + 2
    return j, j + 3


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 server protocol for the actuator (pure Python)."""

    __slots__ = (
        "_buf",
        "_closing",
        "_discard",
        "_paused",
        "_reading_paused",
        "_router",
        "_scan",
        "_transport",
        "_write",
    )

    def __init__(self, router: Router) -> None:
        self._router = router
        self._transport: asyncio.Transport | None = None
        self._write: Callable[[bytes], object] | None = None
        self._buf = b""  # unparsed input (an incomplete head, or input held while paused)
        self._scan = 0  # bytes at the start of _buf known to hold no end of head
        self._discard = 0  # request body bytes still to skip
        self._closing = False
        self._paused = False
        self._reading_paused = False

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._write = transport.write  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._transport = None
        self._write = None
        self._buf = b""

    def eof_received(self) -> bool | None:
        return False  # let the transport close

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._closing:
            return
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        if self._buf:
            data = self._buf
            self._buf = b""
            self._process(data)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if not isinstance(data, bytes):
            data = bytes(data)
        if self._paused:
            self._buf += data
            return
        if self._buf:
            data = self._buf + data
            self._buf = b""
        self._process(data)

    # -- internals --------------------------------------------------------

    def _process(self, data: bytes) -> None:
        n = len(data)
        pos = 0
        scan = self._scan
        self._scan = 0
        out: list[bytes] = []
        out_size = 0
        close = False
        while pos < n:
            if self._discard:
                take = min(self._discard, n - pos)
                pos += take
                self._discard -= take
                continue
            if scan == 0:
                while pos < n and data[pos] in _CRLF_BYTES:
                    pos += 1
                if pos == n:
                    break
            k, end = _find_head_end(data, pos + scan)
            scan = 0
            if k < 0:
                if n - pos >= MAX_HEAD_SIZE:
                    out.append(_RESP_431)
                    close = True
                    break
                self._buf = data[pos:]
                self._scan = max(0, n - pos - 2)
                pos = n
                break
            if end - pos > MAX_HEAD_SIZE:
                out.append(_RESP_431)
                close = True
                break
            head = _parse_head(data[pos : k + 1])
            err, method, target, http11, cl, conn_close, conn_keep_alive, has_te, expect = head
            pos = end
            if err:
                out.append(_RESP_400 if err == 400 else _RESP_505)
                close = True
                break
            if has_te:
                out.append(_RESP_501)
                close = True
                break
            close = conn_close if http11 else conn_close or not conn_keep_alive
            if expect and cl:
                close = True
            resp = self._respond(method, target, http11, close)
            out.append(resp)
            out_size += len(resp)
            if close:
                break
            self._discard = cl
            if out_size >= _OUT_FLUSH:
                self._flush(out)
                out = []
                out_size = 0
                if self._paused:
                    break
        if out:
            self._flush(out)
        if close:
            self._close()
        elif pos < n:
            # stopped by pause_writing: keep the rest for resume_writing
            self._buf = data[pos:]
            self._scan = 0
        if self._paused and not self._closing and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _respond(self, method_b: bytes, target: bytes, http11: bool, close: bool) -> bytes:
        if close:
            conn = _CONN_CLOSE
        elif http11:
            conn = _CONN_NONE
        else:
            conn = _CONN_KEEP_ALIVE
        if method_b == b"GET":
            method = "GET"
        elif method_b == b"HEAD":
            method = "HEAD"
        else:
            return _response(405, _TEXT, _BODY_405, False, conn, True)
        # the path: the target up to the first "?" or "#"
        path = target.split(b"?", 1)[0].split(b"#", 1)[0].decode("ascii")
        try:
            status, ctype, body = self._router(method, path)
            code = status.__index__()
            if not 200 <= code <= 599:
                raise ValueError(f"status code out of range: {code!r}")
            if not isinstance(ctype, bytes) or not isinstance(body, bytes):
                raise TypeError("content type and body must be bytes")
            if b"\r" in ctype or b"\n" in ctype:
                raise ValueError("content type contains CR or LF")
        except Exception:
            logger.exception("actuator router failed for %s %s", method, path)
            code, ctype, body = 500, _TEXT, _BODY_500
        return _response(code, ctype, body, method == "HEAD", conn, False)

    def _flush(self, out: list[bytes]) -> None:
        if self._write is None:
            return
        self._write(out[0] if len(out) == 1 else b"".join(out))

    def _close(self) -> None:
        self._closing = True
        self._buf = b""
        if self._transport is not None:
            self._transport.close()
