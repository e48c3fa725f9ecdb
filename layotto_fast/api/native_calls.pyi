"""Type stub for the compiled per-call path of the native transport (native_calls.pyx)."""

from collections.abc import Callable
from typing import Any

from layotto_fast.api.stats import MethodStats

def now() -> float: ...
def dispatch(protocol: Any, connection: Any, methods: list[Any], events: list[tuple[Any, ...]]) -> None: ...
def receive(protocol: Any, connection: Any, transport: Any, methods: list[Any], data: bytes) -> None: ...
def flush(protocol: Any, connection: Any, transport: Any, methods: list[Any]) -> None: ...

class Method:
    name: str
    handler: Callable[..., Any]
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    client_streaming: bool
    server_streaming: bool
    stats: MethodStats
    inline: bool
    def __init__(
        self,
        name: str,
        handler: Callable[..., Any],
        decode: Callable[[bytes], Any],
        encode: Callable[[Any], bytes],
        client_streaming: bool,
        server_streaming: bool,
        stats: MethodStats,
        inline: bool = True,
    ) -> None: ...
