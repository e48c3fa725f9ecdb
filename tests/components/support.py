"""What the component and conformance test modules share: a fresh event loop per test (over a
shared backend server, when there is one), and waiting for a condition on that loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
C = TypeVar("C")


class Restartable(Protocol):
    @property
    def running(self) -> bool: ...

    def start(self) -> object: ...


class LoopHarness:
    """A fresh event loop for one test; the components it built are closed at its end, and a
    shared server the test stopped (when one is given) is started again."""

    def __init__(self, server: Restartable | None = None) -> None:
        self._server = server
        self.loop = asyncio.new_event_loop()
        self._components: list[Any] = []

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def started(self, component: C) -> C:
        """``component``, initialised on this loop and closed with the harness."""
        self.run(component.init())  # type: ignore[attr-defined]
        self._components.append(component)
        return component

    def close(self) -> None:
        if self._server is not None and not self._server.running:  # a failed test must not leave it down
            self._server.start()
        for component in reversed(self._components):
            self.run(component.close())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


async def until(condition: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds, checked every ``interval``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True
