"""Type stub for the compiled actuator HTTP protocol (http_protocol.pyx).

At run time ``HttpProtocol`` is a ``cdef class`` that implements the
``asyncio.Protocol`` methods without inheriting from it (an extension type
cannot); it is declared as a subclass here so that it type-checks wherever a
protocol factory is expected, e.g. ``loop.create_server(lambda:
HttpProtocol(router), host, port)``.  Same behaviour as
``layotto_fast.actuator.http_protocol_py.HttpProtocol``.
"""

import asyncio
from collections.abc import Callable

__all__ = ["MAX_HEAD_SIZE", "HttpProtocol"]

MAX_HEAD_SIZE: int

class HttpProtocol(asyncio.Protocol):
    def __init__(self, router: Callable[[str, str], tuple[int, bytes, bytes]]) -> None: ...
    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
