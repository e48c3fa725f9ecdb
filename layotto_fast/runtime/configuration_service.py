"""The configuration service: app id defaults, validation, and subscriptions.

A subscription is one caller's set of watches with a bounded queue of changes: a
subscriber that stops reading is told (ResourceExhausted) and dropped once its queue
holds more than ``max_changes`` changes or ``max_bytes`` of content, so a slow reader
never makes the sidecar hold unbounded memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from layotto_fast.errors import InvalidArgument, ResourceExhausted, RuntimeApiError
from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery, ConfigurationStore
from layotto_fast.runtime.lifecycle import Components

MAX_QUEUED_CHANGES = 10_000
MAX_QUEUED_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Items of one store and app that changed; a deleted item has empty content."""

    store_name: str
    app_id: str
    items: list[ConfigItem]


class ConfigurationService:
    def __init__(
        self,
        components: Components,
        app_id: str,
        max_changes: int = MAX_QUEUED_CHANGES,
        max_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._components = components
        self._app_id = app_id
        self.max_changes, self.max_bytes = max_changes, max_bytes
        self.active_subscriptions = 0
        self.dropped_subscriptions = 0

    def store(self, name: str) -> ConfigurationStore:
        store: ConfigurationStore = self._components.lookup("configuration", name, "store_name")
        return store

    def query(self, app_id: str, keys: Sequence[str], group: str = "", label: str = "") -> ConfigQuery:
        for index, key in enumerate(keys):
            if not key:
                raise InvalidArgument(f"keys[{index}] is empty: a configuration key is required")
        return ConfigQuery(app_id=app_id or self._app_id, keys=tuple(keys), group=group, label=label)

    async def get(
        self, store_name: str, app_id: str, keys: Sequence[str], group: str = "", label: str = ""
    ) -> list[ConfigItem]:
        store = self.store(store_name)
        return await store.get(self.query(app_id, keys, group, label))

    async def save(
        self, store_name: str, items: Sequence[ConfigItem], metadata: Mapping[str, str] | None = None
    ) -> None:
        """Save ``items``, each under its app id (the sidecar's own when empty); request
        metadata is the default of items that carry none."""
        store = self.store(store_name)
        ready = []
        for index, item in enumerate(items):
            if not item.key:
                raise InvalidArgument(f"items[{index}].key is empty: a configuration key is required")
            ready.append(
                replace(
                    item,
                    app_id=item.app_id or self._app_id,
                    tags=dict(item.tags),
                    metadata=dict(item.metadata) or dict(metadata or {}),
                )
            )
        await store.save(ready)

    async def delete(self, store_name: str, app_id: str, keys: Sequence[str], group: str = "", label: str = "") -> None:
        store = self.store(store_name)
        if not keys:
            raise InvalidArgument("keys is empty: name the configuration keys to delete")
        await store.delete(self.query(app_id, keys, group, label))

    def subscription(self) -> Subscription:
        return Subscription(self)


class Subscription:
    """One subscriber's watches and its queue of changes; ``close()`` removes every watch."""

    def __init__(self, service: ConfigurationService) -> None:
        self._service = service
        self._cancels: list[Callable[[], None]] = []
        self._queue: deque[ConfigChange] = deque()
        self._queued_bytes = 0
        self._failure: RuntimeApiError | None = None
        self._wakeup = asyncio.Event()
        self._closed = False
        self._requests_ended = False
        service.active_subscriptions += 1

    def add(self, store_name: str, app_id: str, keys: Sequence[str], group: str = "", label: str = "") -> ConfigQuery:
        """Watch ``keys`` of ``store_name``: every later matching change is queued."""
        store = self._service.store(store_name)
        query = self._service.query(app_id, keys, group, label)
        if not query.keys:
            raise InvalidArgument("keys is empty: name the configuration keys to subscribe to")
        self._cancels.append(store.watch(query, self._listener(store_name, query.app_id)))
        return query

    def _listener(self, store_name: str, app_id: str) -> Callable[[list[ConfigItem]], None]:
        def push(items: list[ConfigItem]) -> None:
            if self._failure is not None or self._closed:
                return
            size = sum(len(item.content) + len(item.key) for item in items)
            service = self._service
            if len(self._queue) >= service.max_changes or self._queued_bytes + size > service.max_bytes:
                self._drop(
                    f"subscriber is too slow: more than {service.max_changes} changes or "
                    f"{service.max_bytes} bytes are waiting for it"
                )
                return
            self._queue.append(ConfigChange(store_name, app_id, items))
            self._queued_bytes += size
            self._wakeup.set()

        return push

    def _drop(self, reason: str) -> None:
        self._failure = ResourceExhausted(reason)
        self._service.dropped_subscriptions += 1
        self._queue.clear()
        self._queued_bytes = 0
        self._cancel_watches()
        self._wakeup.set()

    def fail(self, error: RuntimeApiError) -> None:
        """End the subscription with ``error`` (a bad request on the request stream)."""
        self._failure = error
        self._cancel_watches()
        self._wakeup.set()

    def requests_ended(self) -> None:
        """The caller sent its last request: with nothing watched, the subscription ends."""
        self._requests_ended = True
        self._wakeup.set()

    async def next(self) -> ConfigChange | None:
        """The next change; None when the subscription has ended; ResourceExhausted
        once this subscriber has been dropped."""
        while not self._queue:
            if self._failure is not None:
                raise self._failure
            if self._requests_ended and not self._cancels:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        change = self._queue.popleft()
        self._queued_bytes -= sum(len(item.content) + len(item.key) for item in change.items)
        return change

    def _cancel_watches(self) -> None:
        for cancel in self._cancels:
            cancel()
        self._cancels.clear()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._service.active_subscriptions -= 1
            self._cancel_watches()
