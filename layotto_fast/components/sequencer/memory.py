"""``sequencer.in-memory``: per-key counters in this process, starting after ``biggerThan``."""

from __future__ import annotations

from typing import Self

from layotto_fast.errors import ResourceExhausted, StartupError
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.sequencer import MAX_ID


def bigger_than(manifest: ComponentManifest) -> int:
    """``biggerThan``: ids start after it; at most MAX_ID - 1, so that one id is left."""
    value = metadata.integer(manifest, "biggerThan", 0, minimum=0)
    if value >= MAX_ID:
        raise StartupError(manifest.source, "spec.metadata.biggerThan", f"must be below {MAX_ID}, got {value}")
    return value


class InMemorySequencer(NoBackend):
    def __init__(self, bigger_than: int = 0) -> None:
        self._floor = bigger_than
        self._last: dict[str, int] = {}

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(bigger_than(manifest))

    async def next_id(self, key: str) -> int:
        value = self._last.get(key, self._floor) + 1
        if value > MAX_ID:
            raise ResourceExhausted(f"sequence {key!r} is exhausted: its last id {MAX_ID} has been handed out")
        self._last[key] = value
        return value
