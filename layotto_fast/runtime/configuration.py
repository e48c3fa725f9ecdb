"""The configuration building block: items by app, group, label and key, with watches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from layotto_fast.runtime.component import Component


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
    """Empty group or label matches any; empty keys matches every key of the app."""

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


class ConfigurationStore(Component, Protocol):
    async def get(self, query: ConfigQuery) -> list[ConfigItem]: ...

    async def save(self, items: list[ConfigItem]) -> None: ...

    async def delete(self, query: ConfigQuery) -> None: ...

    def watch(self, query: ConfigQuery, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on every later change matching ``query``; returns the cancel."""
        ...
