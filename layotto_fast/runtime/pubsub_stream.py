"""A subscriber that is a stream (SubscribeTopicEvents): events go out in order of delivery,
verdicts come back by event id.

A delivery waits for the answer with its event's id; the pub/sub service's timeout and
retry rules apply to it as to a callback. When the stream ends (or fails on a bad request)
every unanswered delivery ends with SubscriberGone: the messages go back to their backend,
not to a dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from layotto_fast.errors import RuntimeApiError
from layotto_fast.runtime.cloudevents import Event
from layotto_fast.runtime.pubsub import SubscriberGone, Verdict

log = logging.getLogger(__name__)


class StreamSubscriber:
    def __init__(self) -> None:
        self._outbox: asyncio.Queue[Event | None] = asyncio.Queue()
        self._waiting: dict[str, deque[asyncio.Future[Verdict]]] = {}
        self._closed = False
        self._failure: RuntimeApiError | None = None

    async def deliver(self, event: Event, timeout: float) -> Verdict:
        if self._closed:
            raise SubscriberGone("the subscriber's stream has ended")
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(event.id, deque()).append(future)
        self._outbox.put_nowait(event)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            waiting = self._waiting.get(event.id)
            if waiting is not None and future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiting.pop(event.id, None)

    async def next(self) -> Event | None:
        """The next event to send; None once the stream is closed; the error it failed with."""
        event = None if self._closed else await self._outbox.get()
        if event is None and self._failure is not None:
            raise self._failure
        return event

    def answer(self, event_id: str, verdict: Verdict) -> None:
        waiting = self._waiting.get(event_id)
        while waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_result(verdict)
                return
        log.info("an answer for event %r, which is not awaiting one: ignored", event_id)

    def fail(self, error: RuntimeApiError) -> None:
        """End the stream with ``error`` (a bad request from the subscriber)."""
        if not self._closed:
            self._failure = error
        self.close()

    def close(self) -> None:
        self._closed = True
        self._outbox.put_nowait(None)
        for waiting in self._waiting.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(SubscriberGone("the subscriber's stream ended before it answered"))
        self._waiting.clear()
