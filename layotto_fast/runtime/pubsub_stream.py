"""A subscriber that is a stream (SubscribeTopicEvents): events go out in order of delivery,
verdicts come back by event id, so one event of an id is out at a time.

A delivery waits for the answer with its event's id; the pub/sub service's timeout and
retry rules apply to it as to a callback. A delivery that ends before its event went out
(the client stopped reading) takes the event back: a stalled stream holds at most what is
being delivered, not every retry of it. When the stream ends (or fails on a bad request)
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
        # events not sent yet, each with the delivery waiting for its answer
        self._outbox: deque[tuple[Event, asyncio.Future[Verdict]]] = deque()
        self._sending: asyncio.Future[None] | None = None  # next() waiting for an event
        # the delivery whose event of that id is out (or about to go): one per id, as
        # answers name only the id, and two events may share one (unique per source only)
        self._out: dict[str, asyncio.Future[Verdict]] = {}
        self._closed = False
        self._failure: RuntimeApiError | None = None

    async def deliver(self, event: Event, timeout: float) -> Verdict:
        if self._closed:
            raise SubscriberGone("the subscriber's stream has ended")
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                while (ahead := self._out.get(event.id)) is not None and not ahead.done():
                    await asyncio.wait([ahead])  # an event of this id is out: this one waits its turn
                    if self._closed:
                        raise SubscriberGone("the subscriber's stream has ended")
                self._out[event.id] = future
                self._outbox.append((event, future))
                self._wake_sender()
                return await future
        finally:
            if not future.done():
                future.cancel()
            if future.cancelled():  # given up on (a timeout cancels it too): its event may still wait to go out
                self._withdraw(future)
            if self._out.get(event.id) is future:
                del self._out[event.id]

    async def next(self) -> Event | None:
        """The next event to send; None once the stream is closed; the error it failed with."""
        while not self._closed:
            while self._outbox:
                event, future = self._outbox.popleft()
                if not future.done():
                    return event
            self._sending = asyncio.get_running_loop().create_future()
            await self._sending
        if self._failure is not None:
            raise self._failure
        return None

    def _wake_sender(self) -> None:
        if self._sending is not None and not self._sending.done():
            self._sending.set_result(None)

    def _withdraw(self, future: asyncio.Future[Verdict]) -> None:
        for index, (_, queued) in enumerate(self._outbox):
            if queued is future:
                del self._outbox[index]
                return

    def answer(self, event_id: str, verdict: Verdict) -> None:
        future = self._out.get(event_id)
        if future is not None and not future.done():
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
        self._outbox.clear()
        self._wake_sender()
        for future in self._out.values():
            if not future.done():
                future.set_exception(SubscriberGone("the subscriber's stream ended before it answered"))
        self._out.clear()
