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
        self._concurrency = max(1, concurrency)
        self._slots = asyncio.Semaphore(self._concurrency)
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_of_key: dict[str, asyncio.Task[None]] = {}
        self._room_wanted: tuple[int, asyncio.Future[None]] | None = None  # a room() waiting

    @property
    def free(self) -> int:
        """Messages that could start being handled now."""
        return self._concurrency - len(self._tasks)

    async def room(self, wanted: int) -> int:
        """How many messages could start now, once at least ``wanted`` could (never more than
        ``concurrency`` are waited for). A reader that asks its backend for that many at a time
        fetches in batches, not one message per freed slot. One caller at a time: the reader."""
        wanted = min(max(1, wanted), self._concurrency)
        if self.free < wanted:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room_wanted = (wanted, future)
            try:
                await future
            finally:
                self._room_wanted = None
        return self.free

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        waiting = self._room_wanted
        if waiting is not None and self.free >= waiting[0] and not waiting[1].done():
            waiting[1].set_result(None)

    async def submit(self, message: Message) -> None:
        """Start handling ``message`` once a slot is free (waits for one)."""
        await self._slots.acquire()
        key = message.metadata.get(PARTITION_KEY, "")
        before = self._last_of_key.get(key) if key else None
        task = asyncio.get_running_loop().create_task(self._run(message, before))
        self._tasks.add(task)
        task.add_done_callback(self._ended)
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
