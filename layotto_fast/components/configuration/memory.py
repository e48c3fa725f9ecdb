"""``configuration.in-memory``: configuration items and watches in this process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Self

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.configuration import ChangeListener, ConfigItem, ConfigQuery, Watches

ItemId = tuple[str, str, str, str]  # app_id, group, label, key


class InMemoryConfigurationStore(NoBackend):
    def __init__(self) -> None:
        self._items: dict[ItemId, ConfigItem] = {}
        self._watches = Watches()

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls()

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        return [item for item in self._items.values() if query.matches(item)]

    async def save(self, items: list[ConfigItem]) -> None:
        for item in items:
            self._items[(item.app_id, item.group, item.label, item.key)] = item
        self._watches.notify(items)

    async def delete(self, query: ConfigQuery) -> None:
        gone = [item for item in self._items.values() if query.matches(item)]
        for item in gone:
            del self._items[(item.app_id, item.group, item.label, item.key)]
        self._watches.notify([replace(item, content="") for item in gone])

    def watch(self, query: ConfigQuery, listener: ChangeListener) -> Callable[[], None]:
        watch_id = self._watches.add(query, listener)

        def cancel() -> None:
            self._watches.remove(watch_id)

        return cancel

    @property
    def watch_count(self) -> int:
        return len(self._watches)
