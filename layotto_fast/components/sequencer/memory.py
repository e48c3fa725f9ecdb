"""``sequencer.in-memory``: per-key counters in this process, starting at 1."""

from __future__ import annotations

from typing import Self

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.component import NoBackend


class InMemorySequencer(NoBackend):
    def __init__(self, start: int = 1) -> None:
        self._start = start
        self._last: dict[str, int] = {}

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(start=metadata.integer(manifest, "biggerThan", 0, minimum=0) + 1)

    async def next_id(self, key: str) -> int:
        value = self._last.get(key, self._start - 1) + 1
        self._last[key] = value
        return value
