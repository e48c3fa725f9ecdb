"""``pubsub.in-memory``: topics fanned out to subscribers inside this process."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Self

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.pubsub import Handler, Message

log = logging.getLogger(__name__)


class InMemoryPubSub(NoBackend):
    def __init__(self) -> None:
        self._handlers: dict[str, dict[int, Handler]] = {}
        self._next = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls()

    async def publish(self, topic: str, data: bytes, content_type: str, metadata: dict[str, str]) -> str:
        message = Message(str(uuid.uuid4()), topic, data, content_type, dict(metadata))
        for handler in list(self._handlers.get(topic, {}).values()):
            task = asyncio.get_running_loop().create_task(self._deliver(handler, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return message.id

    @staticmethod
    async def _deliver(handler: Handler, message: Message) -> None:
        try:
            await handler(message)
        except Exception:
            log.exception("in-memory subscriber of %s failed on message %s", message.topic, message.id)

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        handler_id = self._next
        self._next += 1
        self._handlers.setdefault(topic, {})[handler_id] = handler
        return lambda: self._handlers.get(topic, {}).pop(handler_id, None) and None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
