"""``lock.in-memory``: locks held in this process, with real expiry, by the key the lock
service gives (``lock|||<prefix>||<resource_id>``: ``runtime/key_prefixes.py``)."""

from __future__ import annotations

import time
from typing import Self

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.lock import LockStatus

SWEEP_FLOOR = 1024  # locks held before expired ones nobody asked about again are swept


class InMemoryLockStore(NoBackend):
    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}  # resource -> (owner, deadline)
        # An expired lock goes when its resource is asked about again; one never asked
        # about again goes in a sweep, once the locks double: amortised O(1) per lock.
        self._sweep_at = SWEEP_FLOOR

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls()

    def _holder(self, resource_id: str) -> str | None:
        held = self._held.get(resource_id)
        if held is None:
            return None
        if held[1] <= time.monotonic():
            del self._held[resource_id]
            return None
        return held[0]

    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        if self._holder(resource_id) is not None:
            return False
        self._held[resource_id] = (owner, time.monotonic() + expire_seconds)
        if len(self._held) >= self._sweep_at:
            now = time.monotonic()
            self._held = {r: held for r, held in self._held.items() if held[1] > now}
            self._sweep_at = max(SWEEP_FLOOR, 2 * len(self._held))
        return True

    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        holder = self._holder(resource_id)
        if holder is None:
            return LockStatus.LOCK_UNEXIST
        if holder != owner:
            return LockStatus.LOCK_BELONG_TO_OTHERS
        del self._held[resource_id]
        return LockStatus.SUCCESS

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        holder = self._holder(resource_id)
        if holder is None:
            return LockStatus.LOCK_UNEXIST
        if holder != owner:
            return LockStatus.LOCK_BELONG_TO_OTHERS
        self._held[resource_id] = (owner, time.monotonic() + expire_seconds)
        return LockStatus.SUCCESS
