"""The server's side of httptools (llhttp): the request parser, its errors, the target split.

Its names are re-exported here behind small typed declarations, so the server's modules
see only what they use of the parser; ``client.py`` parses responses with httptools itself.
"""

from __future__ import annotations

from typing import Protocol

import httptools

__all__ = ["ParserError", "ParserUpgrade", "RequestParser", "request_parser", "split_target"]


class Callbacks(Protocol):
    """What llhttp calls while it parses; a callback that raises stops the parse."""

    def on_message_begin(self) -> None: ...
    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class RequestParser(Protocol):
    def feed_data(self, data: bytes | memoryview) -> None: ...
    def get_method(self) -> bytes: ...
    def get_http_version(self) -> str: ...
    def should_keep_alive(self) -> bool: ...
    def should_upgrade(self) -> bool: ...


# Every malformed input (httptools' other errors subclass this one).
ParserError: type[Exception] = httptools.HttpParserError
# Raised after an Upgrade or CONNECT request: the rest of the stream is not HTTP/1.
ParserUpgrade: type[Exception] = httptools.HttpParserUpgrade


def request_parser(callbacks: Callbacks) -> RequestParser:
    parser: RequestParser = httptools.HttpRequestParser(callbacks)
    return parser


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, query) of a request target llhttp has already validated."""
    if target.startswith(b"/"):
        # origin-form, nearly every request: no need for the full URL parser
        path, _, query = target.partition(b"#")[0].partition(b"?")
        return path, query
    # absolute-form (sent to proxies), asterisk-form ("OPTIONS *") or CONNECT's authority:
    # the last is no path at all, so it is kept whole and matches no route
    try:
        url = httptools.parse_url(target)
    except ParserError:
        return target, b""
    return url.path or b"/", url.query or b""
