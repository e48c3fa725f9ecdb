"""The configuration service: app id, group and label defaults, validation, and subscriptions.

Group and label, one rule for every store (as Layotto's API applies its stores'
defaults): a blank one (empty or only spaces) is ``DEFAULT_GROUP`` / ``DEFAULT_LABEL``
in every call, so an item saved without them is read, deleted and watched without them
too. In a get, delete or subscribe, ``*`` matches any group or label (as in Layotto's
etcd store); an item cannot be saved under ``*`` (InvalidArgument).

A subscription is one caller's set of watches with a bounded queue of changes: a
subscriber that stops reading is told (ResourceExhausted) and dropped once its queue
holds more than ``max_changes`` changes or ``max_bytes`` (the UTF-8 bytes of the items'
keys, contents, groups, labels, tags and metadata), so a slow reader never makes the
sidecar hold unbounded memory. A subscription watches each (store, app id, group, label,
key) once however many requests name it, and a key in a group or label it watches with
``*`` already is not watched again; a change two of its watches match (one with ``*``, one
without, made in either order; or ``g``/``*`` and ``*``/``l``) is queued by the one made
first, so a change is queued once. Past ``max_watched_keys`` of them, each counted once
(one that a ``*`` covers is not counted apart), a request is refused (ResourceExhausted)
and the subscription ends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from layotto_fast.errors import InvalidArgument, ResourceExhausted, RuntimeApiError, Unavailable
from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery, ConfigurationStore
from layotto_fast.runtime.lifecycle import Components

MAX_QUEUED_CHANGES = 10_000
MAX_QUEUED_BYTES = 16 * 1024 * 1024
MAX_WATCHED_KEYS = 1_000  # (store, app id, group, label, key) watched by one subscription

DEFAULT_GROUP = "default"
DEFAULT_LABEL = "default"
ANY = "*"  # a query's group or label that matches any


def _blank(value: str) -> bool:
    return not value.strip(" ")


def _query_part(value: str, default: str) -> str:
    """A query's group or label for the store: the default when blank, "" (any) for ``*``."""
    if _blank(value):
        return default
    return "" if value == ANY else value


def _item_part(value: str, default: str, field: str) -> str:
    """A saved item's group or label: the default when blank; ``*`` is refused."""
    if _blank(value):
        return default
    if value == ANY:
        raise InvalidArgument(f"{field} is '*': an item is saved under a name ('*' matches any in a query)")
    return value


def _covers(pattern: tuple[str, str], other: tuple[str, str]) -> bool:
    """Whether a watch's (group, label) ``pattern`` ("" for ``*``) matches every item ``other`` does."""
    return pattern[0] in ("", other[0]) and pattern[1] in ("", other[1])


def _utf8_size(text: str) -> int:
    # surrogatepass: a lone surrogate (from a backend's bytes) is counted, never raised on.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def item_size(item: ConfigItem) -> int:
    """The UTF-8 bytes of an item's key, content, group, label, and every tag's and metadata
    entry's name and value: what a subscription's queue counts against ``max_bytes``."""
    size = sum(_utf8_size(text) for text in (item.key, item.content, item.group, item.label))
    for entries in (item.tags, item.metadata):
        size += sum(_utf8_size(name) + _utf8_size(value) for name, value in entries.items())
    return size


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Items of one store and app that changed; a deleted item has empty content.

    ``size``: the items' bytes (``item_size``), counted once when the change is made."""

    store_name: str
    app_id: str
    items: list[ConfigItem]
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", sum(item_size(item) for item in self.items))


# The items' bytes one change (one response on the stream) holds at most, unless one item is
# larger alone: a backend's batch (Redis' reads of up to 1000 keys, an etcd catch-up) in one
# response could pass the 4 MiB message limit, which ends the stream, though each item fits.
MAX_CHANGE_BYTES = 1024 * 1024


def _parts(change: ConfigChange) -> list[ConfigChange]:
    """``change`` as changes of at most MAX_CHANGE_BYTES each (an item larger alone goes alone)."""
    if change.size <= MAX_CHANGE_BYTES:
        return [change]
    parts: list[ConfigChange] = []
    batch: list[ConfigItem] = []
    size = 0
    for item in change.items:
        item_bytes = item_size(item)
        if batch and size + item_bytes > MAX_CHANGE_BYTES:
            parts.append(ConfigChange(change.store_name, change.app_id, batch))
            batch, size = [], 0
        batch.append(item)
        size += item_bytes
    parts.append(ConfigChange(change.store_name, change.app_id, batch))
    return parts


class ConfigurationService:
    def __init__(
        self,
        components: Components,
        app_id: str,
        max_changes: int = MAX_QUEUED_CHANGES,
        max_bytes: int = MAX_QUEUED_BYTES,
        max_watched_keys: int = MAX_WATCHED_KEYS,
    ) -> None:
        self._components = components
        self._app_id = app_id
        self.max_changes, self.max_bytes = max_changes, max_bytes
        self.max_watched_keys = max_watched_keys
        self.active_subscriptions = 0
        self.dropped_subscriptions = 0
        self._open: set[Subscription] = set()
        self._ending: RuntimeApiError | None = None

    def store(self, name: str) -> ConfigurationStore:
        store: ConfigurationStore = self._components.lookup("configuration", name, "store_name")
        return store

    def query(self, app_id: str, keys: Sequence[str], group: str = "", label: str = "") -> ConfigQuery:
        """The query a store is given: the sidecar's app id when empty, the default group and
        label when blank, any group or label for ``*``."""
        for index, key in enumerate(keys):
            if not key:
                raise InvalidArgument(f"keys[{index}] is empty: a configuration key is required")
        return ConfigQuery(
            app_id=app_id or self._app_id,
            keys=tuple(keys),
            group=_query_part(group, DEFAULT_GROUP),
            label=_query_part(label, DEFAULT_LABEL),
        )

    async def get(
        self, store_name: str, app_id: str, keys: Sequence[str], group: str = "", label: str = ""
    ) -> list[ConfigItem]:
        store = self.store(store_name)
        return await store.get(self.query(app_id, keys, group, label))

    async def save(
        self, store_name: str, items: Sequence[ConfigItem], metadata: Mapping[str, str] | None = None
    ) -> None:
        """Save ``items``, each under its app id (the sidecar's own when empty) and its group
        and label (the defaults when blank), with its own tags and metadata.

        The request's ``metadata`` is not written into the items: Layotto's SaveConfiguration
        drops it (its stores' SetRequest has no metadata), so it never comes back from a get."""
        store = self.store(store_name)
        ready = []
        for index, item in enumerate(items):
            if not item.key:
                raise InvalidArgument(f"items[{index}].key is empty: a configuration key is required")
            ready.append(
                replace(
                    item,
                    app_id=item.app_id or self._app_id,
                    group=_item_part(item.group, DEFAULT_GROUP, f"items[{index}].group"),
                    label=_item_part(item.label, DEFAULT_LABEL, f"items[{index}].label"),
                    tags=dict(item.tags),
                    metadata=dict(item.metadata),
                )
            )
        await store.save(ready)

    async def delete(self, store_name: str, app_id: str, keys: Sequence[str], group: str = "", label: str = "") -> None:
        store = self.store(store_name)
        if not keys:
            raise InvalidArgument("keys is empty: name the configuration keys to delete")
        await store.delete(self.query(app_id, keys, group, label))

    def subscription(self) -> Subscription:
        subscription = Subscription(self)
        if self._ending is not None:
            subscription.fail(self._ending)
        else:
            self._open.add(subscription)
        return subscription

    def end_subscriptions(self, reason: str) -> None:
        """Ends every subscription, and any made from now on, with UNAVAILABLE ``reason`` (the
        sidecar stops): a stream never ends on its own, and would hold the shutdown's grace."""
        self._ending = Unavailable(reason)
        for subscription in list(self._open):
            subscription.fail(self._ending)

    def _closed(self, subscription: Subscription) -> None:
        self._open.discard(subscription)


class Subscription:
    """One subscriber's watches and its queue of changes; ``close()`` removes every watch."""

    def __init__(self, service: ConfigurationService) -> None:
        self._service = service
        self._cancels: list[Callable[[], None]] = []
        # (store, app id, group, label, key) -> the number of the watch made for it: a change
        # several watches match is queued by the lowest number among them.
        self._watch_of: dict[tuple[str, str, str, str, str], int] = {}
        # (store, app id, key) -> the (group, label) patterns counted for it, those no other
        # pattern watched covers (a "" of a pattern being ``*``); and how many in all.
        self._counted: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self._watched_keys = 0
        self._watches_made = 0
        self._queue: deque[ConfigChange] = deque()
        self._queued_bytes = 0
        self._failure: RuntimeApiError | None = None
        self._wakeup = asyncio.Event()
        self._closed = False
        self._requests_ended = False
        self._reader_waiting = False  # its reader has read everything and waits in next()
        service.active_subscriptions += 1

    def add(self, store_name: str, app_id: str, keys: Sequence[str], group: str = "", label: str = "") -> ConfigQuery:
        """Watch ``keys`` of ``store_name``: every later matching change is queued. A key
        this subscription watches already (same store and app id, the same group and label
        or ``*`` in their place) is not watched again; ResourceExhausted when the new ones
        would pass ``max_watched_keys`` (nothing is watched then)."""
        store = self._service.store(store_name)
        query = self._service.query(app_id, keys, group, label)
        if not query.keys:
            raise InvalidArgument("keys is empty: name the configuration keys to subscribe to")
        if self._failure is not None or self._closed:
            return query  # ended: nothing more is delivered
        pattern = (query.group, query.label)
        new: list[str] = []
        covered = 0  # counted patterns of the new keys that this one covers: no longer counted
        for key in dict.fromkeys(query.keys):
            counted = self._counted.get((store_name, query.app_id, key), ())
            if any(_covers(other, pattern) for other in counted):
                continue
            new.append(key)
            covered += sum(1 for other in counted if _covers(pattern, other))
        if not new:
            return query
        limit = self._service.max_watched_keys
        total = self._watched_keys + len(new) - covered
        if total > limit:
            raise ResourceExhausted(
                f"keys: a configuration subscription watches at most {limit} keys (each store, app id, "
                f"group, label and key counted once); this request would make it {total}"
            )
        number = self._watches_made
        self._watches_made += 1
        listener = self._listener(store_name, query.app_id, number)
        self._cancels.append(store.watch(replace(query, keys=tuple(new)), listener))
        for key in new:
            counted = self._counted.setdefault((store_name, query.app_id, key), set())
            counted.difference_update([other for other in counted if _covers(pattern, other)])
            counted.add(pattern)
            self._watch_of[(store_name, query.app_id, *pattern, key)] = number
        self._watched_keys = total
        return query

    def _queued_by(self, store_name: str, app_id: str, item: ConfigItem) -> int | None:
        """The number of the first watch made of those matching ``item``."""
        watch_of = self._watch_of
        numbers = [
            watch_of[scope]
            for group in {item.group, ""}
            for label in {item.label, ""}
            if (scope := (store_name, app_id, group, label, item.key)) in watch_of
        ]
        return min(numbers, default=None)

    def _listener(self, store_name: str, app_id: str, number: int) -> Callable[[list[ConfigItem]], None]:
        def push(items: list[ConfigItem]) -> None:
            if self._failure is not None or self._closed:
                return
            # Every watch of this subscription that matches a change is told of it: only the
            # first made queues it.
            items = [item for item in items if self._queued_by(store_name, app_id, item) in (number, None)]
            if not items:
                return
            service = self._service
            # A backend's one batch (a Redis read of many keys, an etcd catch-up) may be past
            # the bounds alone: a subscriber that had read everything before it keeps up. One
            # batch reaches each watch of the subscription in turn, while its reader waits.
            kept_up = not self._queue or self._reader_waiting
            for change in _parts(ConfigChange(store_name, app_id, items)):
                if not kept_up and (
                    len(self._queue) >= service.max_changes or self._queued_bytes + change.size > service.max_bytes
                ):
                    self._drop(
                        f"subscriber is too slow: more than {service.max_changes} changes or "
                        f"{service.max_bytes} bytes are waiting for it"
                    )
                    return
                self._queue.append(change)
                self._queued_bytes += change.size
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
            self._reader_waiting = True
            try:
                await self._wakeup.wait()
            finally:
                self._reader_waiting = False
        change = self._queue.popleft()
        self._queued_bytes -= change.size
        return change

    def _cancel_watches(self) -> None:
        for cancel in self._cancels:
            cancel()
        self._cancels.clear()
        self._watch_of.clear()
        self._counted.clear()
        self._watched_keys = 0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._service.active_subscriptions -= 1
            self._service._closed(self)
            self._cancel_watches()
