"""``pubsub.in-memory``: topics inside this process. Not durable: a restart loses every message.

It keeps the contract the backed components keep, so that an app tried against it behaves
the same against Redis or JetStream: each consumer group of a topic gets every message
published once the group exists, the subscribers of one group share them, a message the
handler does not acknowledge (RETRY, an error, or its subscriber going away first) is
handed out again after ``redeliverInterval``, and DROP forgets it. Unsubscribing lets the
handler calls in flight finish until the deadline it is given (see ``Unsubscribe``); the
messages it cuts off are handed out again after ``redeliverInterval``.

A group nobody subscribes to any more keeps what is published for it, within bounds, since
memory is all it has: the newest MAX_IDLE_BACKLOG messages, in the MAX_IDLE_GROUPS groups left
most recently; older messages and groups are dropped, and said so in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Self

from layotto_fast.components.pubsub import DEFAULT_GROUP
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.pubsub import Handler, Message, SubscribeOptions, Unsubscribe, Verdict
from layotto_fast.runtime.pubsub_dispatch import Dispatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InMemoryConfig:
    consumer_id: str = DEFAULT_GROUP
    concurrency: int = 16
    redeliver_interval: float = 0.5

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> InMemoryConfig:
        return cls(
            consumer_id=metadata.text(manifest, "consumerID", DEFAULT_GROUP),
            concurrency=metadata.integer(manifest, "concurrency", 16, minimum=1),
            redeliver_interval=metadata.duration(manifest, "redeliverInterval", 0.5),
        )


MAX_IDLE_GROUPS = 100  # groups without a subscriber that are kept, across topics
MAX_IDLE_BACKLOG = 10_000  # messages kept for one such group


class _Group:
    """One consumer group of a topic: the messages it has not acknowledged yet."""

    def __init__(self, topic: str, name: str) -> None:
        self.topic, self.name = topic, name
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.subscribers = 0
        self.dropped = 0  # messages let go while nobody subscribed

    def put(self, message: Message) -> None:
        if self.subscribers == 0 and self.queue.qsize() >= MAX_IDLE_BACKLOG:
            self.queue.get_nowait()  # the oldest goes
            if self.dropped == 0:
                log.warning("pubsub.in-memory: group %s of topic %s has no subscriber and %d messages waiting: "
                            "older ones are dropped", self.name, self.topic, MAX_IDLE_BACKLOG)  # fmt: skip
            self.dropped += 1
        self.queue.put_nowait(message)


class InMemoryPubSub(NoBackend):
    def __init__(self, config: InMemoryConfig) -> None:
        self._config = config
        self._groups: dict[str, dict[str, _Group]] = {}  # topic -> group name -> group
        self._idle: OrderedDict[_Group, None] = OrderedDict()  # without a subscriber, longest idle first
        self._stops: set[Unsubscribe] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(InMemoryConfig.from_manifest(manifest))

    async def publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        message = Message(topic, data, dict(metadata))
        for group in self._groups.get(topic, {}).values():
            group.put(message)

    async def subscribe(self, topic: str, options: SubscribeOptions, handler: Handler) -> Unsubscribe:
        name = options.group or self._config.consumer_id
        groups = self._groups.setdefault(topic, {})
        group = groups.get(name)
        if group is None:
            group = groups[name] = _Group(topic, name)
        group.subscribers += 1
        group.dropped = 0
        self._idle.pop(group, None)
        unsettled: dict[int, Message] = {}

        def settle(message: Message, verdict: Verdict) -> None:
            unsettled.pop(id(message), None)
            if verdict == Verdict.RETRY:
                self._later(group, message)

        dispatcher = Dispatcher(handler, settle, options.concurrency or self._config.concurrency, topic)

        async def consume() -> None:
            while True:
                message = await group.queue.get()
                unsettled[id(message)] = message
                try:
                    await dispatcher.submit(message)
                except asyncio.CancelledError:
                    unsettled.pop(id(message), None)
                    group.queue.put_nowait(message)  # taken but not started: back at once
                    raise

        reader = asyncio.get_running_loop().create_task(consume())

        stopping: asyncio.Task[None] | None = None

        async def stop(deadline: float | None = None) -> None:
            # Once: a second stop would count the group's subscriber out again. A later call
            # waits for the first to be over.
            nonlocal stopping
            if stopping is None:
                stopping = asyncio.get_running_loop().create_task(stop_once(deadline))
            await asyncio.shield(stopping)

        async def stop_once(deadline: float | None) -> None:
            self._stops.discard(stop)
            reader.cancel()
            await asyncio.wait([reader])
            await dispatcher.drain(deadline)
            for message in unsettled.values():  # cut off before settling: someone else's now
                self._later(group, message)
            unsettled.clear()
            group.subscribers -= 1
            if group.subscribers == 0:
                self._left(group)

        self._stops.add(stop)
        return stop

    def _left(self, group: _Group) -> None:
        """``group``'s last subscriber stopped: kept, unless it is one idle group too many."""
        self._idle[group] = None
        while len(self._idle) > MAX_IDLE_GROUPS:
            oldest, _ = self._idle.popitem(last=False)
            del self._groups[oldest.topic][oldest.name]
            if not self._groups[oldest.topic]:
                del self._groups[oldest.topic]
            log.warning("pubsub.in-memory: group %s of topic %s dropped with %d messages: more than %d "
                        "groups have no subscriber", oldest.name, oldest.topic, oldest.queue.qsize(),
                        MAX_IDLE_GROUPS)  # fmt: skip

    def _later(self, group: _Group, message: Message) -> None:
        again = replace(message, delivery_count=message.delivery_count + 1)

        def put() -> None:
            self._timers.discard(timer)
            group.put(again)

        timer = asyncio.get_running_loop().call_later(self._config.redeliver_interval, put)
        self._timers.add(timer)

    async def close(self) -> None:
        for stop in list(self._stops):
            await stop()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
