"""Type stub for the compiled driver of suspended unary handlers (suspended.pyx)."""

from collections.abc import Coroutine
from typing import Any

def suspend(
    protocol: Any,
    key: int,
    method: Any,
    coro: Coroutine[Any, Any, Any],
    yielded: Any,
    started: float,
    timeout_us: int,
) -> None: ...

class SuspendedCall:
    key: int
    method: Any
    started: float
    deadline: float
    def wait(self, yielded: Any) -> None: ...
    def cancel(self, msg: Any = None) -> bool: ...
    def cancelling(self) -> int: ...
    def uncancel(self) -> int: ...
    def done(self) -> bool: ...
