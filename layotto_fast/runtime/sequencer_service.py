"""The sequencer service: validation and store lookup for GetNextId."""

from __future__ import annotations

from layotto_fast.errors import require
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.sequencer import Sequencer


class SequencerService:
    def __init__(self, components: Components) -> None:
        self._components = components

    async def next_id(self, store_name: str, key: str) -> int:
        sequencer: Sequencer = self._components.lookup("sequencer", store_name, "store_name")
        require(key, "key")
        return await sequencer.next_id(key)
