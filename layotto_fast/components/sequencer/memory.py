"""``sequencer.in-memory``: per-key counters in this process, starting after ``biggerThan``,
by the key the sequencer service gives (``sequencer|||<prefix>||<key>``)."""

from __future__ import annotations

from typing import Self

from layotto_fast.components.sequencer import SequencerConfig
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.sequencer import MAX_ID, SequenceExhausted


class InMemorySequencer(NoBackend):
    def __init__(self, bigger_than: int = 0) -> None:
        self._floor = bigger_than
        self._last: dict[str, int] = {}

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(SequencerConfig.from_manifest(manifest).bigger_than)

    async def next_id(self, key: str) -> int:
        value = self._last.get(key, self._floor) + 1
        if value > MAX_ID:
            raise SequenceExhausted(key)
        self._last[key] = value
        return value
