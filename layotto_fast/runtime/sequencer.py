"""The sequencer building block: ids strictly increasing per key."""

from __future__ import annotations

from typing import Protocol

from layotto_fast.runtime.component import Component

# Ids are int64 on the wire: the last one a sequence can hand out.
MAX_ID = 2**63 - 1


class Sequencer(Component, Protocol):
    async def next_id(self, key: str) -> int:
        """The next id of ``key``; ResourceExhausted, changing nothing, after MAX_ID."""
        ...
