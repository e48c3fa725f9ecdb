"""Handing a subscription's messages to its handler: a bounded number at once, in order per key.

Every pub/sub component reads its backend in order and calls ``Dispatcher.submit`` for each
message; ``submit`` waits while ``concurrency`` messages are being handled, so a slow
subscriber slows the reading rather than piling messages up in memory. Messages that
carry the same ``partitionKey`` are handled one after another in the order submitted;
others run side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from layotto_fast.runtime.pubsub import PARTITION_KEY, Handler, Message, Verdict

log = logging.getLogger(__name__)

Settle = Callable[[Message, Verdict], Awaitable[None]]


class Dispatcher:
    def __init__(self, handler: Handler, settle: Settle, concurrency: int, name: str) -> None:
        self._handler = handler
        self._settle = settle
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_of_key: dict[str, asyncio.Task[None]] = {}

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def submit(self, message: Message) -> None:
        """Start handling ``message`` once a slot is free (waits for one)."""
        await self._slots.acquire()
        key = message.metadata.get(PARTITION_KEY, "")
        before = self._last_of_key.get(key) if key else None
        task = asyncio.get_running_loop().create_task(self._run(message, before))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if key:
            self._last_of_key[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: str, done: asyncio.Task[None]) -> None:
        if self._last_of_key.get(key) is done:
            del self._last_of_key[key]

    async def _run(self, message: Message, before: asyncio.Task[None] | None) -> None:
        try:
            if before is not None:
                await asyncio.wait([before])  # its outcome is its own; only its end matters here
            try:
                verdict = await self._handler(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("subscriber of %s failed on a message: it stays unacknowledged", self._name)
                verdict = Verdict.RETRY
            await self._settle(message, verdict)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("settling a message of %s failed: the backend will hand it out again", self._name)
        finally:
            self._slots.release()

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the messages being handled, then cancel what is left
        (unsettled messages stay unacknowledged in the backend)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
