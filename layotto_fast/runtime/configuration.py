"""The configuration building block: items by app, group, label and key, with watches."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from layotto_fast.runtime.component import Component

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConfigItem:
    app_id: str
    key: str
    content: str = ""
    group: str = ""
    label: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConfigQuery:
    """Empty group or label matches any; empty keys matches every key of the app.

    What a store is given: the service (configuration_service) has already put the
    default group and label in place of blank ones, and "" in place of ``*``."""

    app_id: str
    keys: tuple[str, ...] = ()
    group: str = ""
    label: str = ""

    def matches(self, item: ConfigItem) -> bool:
        return (
            item.app_id == self.app_id
            and (not self.keys or item.key in self.keys)
            and (not self.group or item.group == self.group)
            and (not self.label or item.label == self.label)
        )


# Called on the loop with the items changed; a deleted item has empty content.
ChangeListener = Callable[[list[ConfigItem]], None]


class Watches:
    """A store's watches: each a query, and the listener told of the changes that match it."""

    def __init__(self) -> None:
        self._watches: dict[int, tuple[ConfigQuery, ChangeListener]] = {}
        self._ids = itertools.count()

    def add(self, query: ConfigQuery, listener: ChangeListener) -> int:
        """The new watch's id, for ``remove``."""
        watch_id = next(self._ids)
        self._watches[watch_id] = (query, listener)
        return watch_id

    def remove(self, watch_id: int) -> bool:
        """Whether the watch was there (a cancel may come twice)."""
        return self._watches.pop(watch_id, None) is not None

    def __len__(self) -> int:
        return len(self._watches)

    def queries(self) -> list[ConfigQuery]:
        return [query for query, _ in self._watches.values()]

    def notify(self, changed: list[ConfigItem]) -> None:
        """Tell each listener the changed items its query matches; one that fails is logged
        and keeps its watch."""
        if not changed:
            return
        for query, listener in list(self._watches.values()):  # a listener may cancel a watch
            matching = [item for item in changed if query.matches(item)]
            if matching:
                try:
                    listener(matching)
                except Exception:
                    log.exception("configuration listener failed")


class ConfigurationStore(Component, Protocol):
    async def get(self, query: ConfigQuery) -> list[ConfigItem]: ...

    async def save(self, items: list[ConfigItem]) -> None: ...

    async def delete(self, query: ConfigQuery) -> None: ...

    def watch(self, query: ConfigQuery, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on every later change matching ``query``; returns the cancel."""
        ...
