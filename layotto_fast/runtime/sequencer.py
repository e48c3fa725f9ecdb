"""The sequencer building block: ids strictly increasing per key."""

from __future__ import annotations

from typing import Protocol

from layotto_fast.runtime.component import Component


class Sequencer(Component, Protocol):
    async def next_id(self, key: str) -> int: ...
