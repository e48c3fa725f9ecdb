"""The sequencer building block: ids strictly increasing per key."""

from __future__ import annotations

from typing import Protocol

from layotto_fast.errors import ResourceExhausted
from layotto_fast.runtime.component import Component

# Ids are int64 on the wire: the last one a sequence can hand out.
MAX_ID = 2**63 - 1


class SequenceExhausted(ResourceExhausted):
    """A sequence has handed out MAX_ID; ``component`` ("name (type)") leads the message when
    given. A store names the key it was given; the sequencer service says it again about the
    key the app sent (``naming``)."""

    def __init__(self, key: str, component: str = "") -> None:
        where = f"{component}: " if component else ""
        super().__init__(f"{where}sequence {key!r} is exhausted: its last id {MAX_ID} has been handed out")
        self.key = key
        self.component = component

    def naming(self, key: str) -> SequenceExhausted:
        """The same error, about ``key``."""
        return SequenceExhausted(key, self.component)


class Sequencer(Component, Protocol):
    async def next_id(self, key: str) -> int:
        """The next id of ``key``; SequenceExhausted, changing nothing, after MAX_ID."""
        ...
