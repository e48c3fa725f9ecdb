"""``pubsub.in-memory``: topics inside this process. Not durable: a restart loses every message.

It keeps the contract the backed components keep, so that an app tried against it behaves
the same against Redis or JetStream: each consumer group of a topic gets every message
published once the group exists, the subscribers of one group share them, a message the
handler does not acknowledge (RETRY, an error, or its subscriber going away first) is
handed out again after ``redeliverInterval``, and DROP forgets it. Unsubscribing lets the
handler calls in flight finish until the deadline it is given (see ``Unsubscribe``); the
messages it cuts off are handed out again after ``redeliverInterval``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Self

from layotto_fast.components.pubsub import DEFAULT_GROUP
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.pubsub import Handler, Message, SubscribeOptions, Unsubscribe, Verdict
from layotto_fast.runtime.pubsub_dispatch import Dispatcher


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


class _Group:
    """One consumer group of a topic: the messages it has not acknowledged yet."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()


class InMemoryPubSub(NoBackend):
    def __init__(self, config: InMemoryConfig) -> None:
        self._config = config
        self._groups: dict[str, dict[str, _Group]] = {}  # topic -> group name -> group
        self._stops: set[Unsubscribe] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(InMemoryConfig.from_manifest(manifest))

    async def publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        message = Message(topic, data, dict(metadata))
        for group in self._groups.get(topic, {}).values():
            group.queue.put_nowait(message)

    async def subscribe(self, topic: str, options: SubscribeOptions, handler: Handler) -> Unsubscribe:
        name = options.group or self._config.consumer_id
        group = self._groups.setdefault(topic, {}).setdefault(name, _Group())
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

        async def stop(deadline: float | None = None) -> None:
            self._stops.discard(stop)
            reader.cancel()
            await asyncio.wait([reader])
            await dispatcher.drain(deadline)
            for message in unsettled.values():  # cut off before settling: someone else's now
                self._later(group, message)
            unsettled.clear()

        self._stops.add(stop)
        return stop

    def _later(self, group: _Group, message: Message) -> None:
        again = replace(message, delivery_count=message.delivery_count + 1)

        def put() -> None:
            self._timers.discard(timer)
            group.queue.put_nowait(again)

        timer = asyncio.get_running_loop().call_later(self._config.redeliver_interval, put)
        self._timers.add(timer)

    async def close(self) -> None:
        for stop in list(self._stops):
            await stop()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
