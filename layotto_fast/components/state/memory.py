"""``state.in-memory``: the embedded state store (one process, no persistence)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Mapping
from typing import Self

from layotto_fast.components.state import WRITTEN_IN_THIS_REQUEST, PendingEtag, check_write
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.records import state_entry
from layotto_fast.runtime.state import DeleteOp, Feature, SetOp, StateEntry

REAP_INTERVAL_SECONDS = 1.0
REAP_BATCH = 20_000  # expired entries freed per tick at most: bounded work on the loop
# Stale expiry records (of entries rewritten or deleted since) kept before the heap is
# rebuilt from the live entries: its size stays within twice theirs, plus this.
EXPIRY_SLACK = 1024


class InMemoryStateStore(NoBackend):
    features = frozenset({Feature.ETAG, Feature.TTL, Feature.TRANSACTIONAL})

    def __init__(self) -> None:
        self._items: dict[str, StateEntry] = {}
        self._versions = itertools.count(1)  # etags: one store-wide counter
        # (expires_at, key, etag) of every write with a TTL, soonest first; an entry
        # rewritten since is recognised by its etag and left alone.
        self._expiries: list[tuple[float, str, str]] = []
        self._peak = 0
        self._reaper: asyncio.Task[None] | None = None

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls()

    async def init(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_SECONDS)
            self.reap(time.time())

    def reap(self, now: float) -> int:
        """Free up to REAP_BATCH entries that expired by ``now``; the number freed."""
        expiries, items = self._expiries, self._items
        freed = 0
        while expiries and expiries[0][0] <= now and freed < REAP_BATCH:
            _, key, etag = heapq.heappop(expiries)
            entry = items.get(key)
            if entry is not None and entry.etag == etag:
                del items[key]
                freed += 1
        self._peak = max(self._peak, len(items))
        if self._peak > 1024 and len(items) < self._peak // 4:
            # A dict never shrinks by deletion alone: rebuild it so the memory goes back.
            self._items = dict(items)
            self._peak = len(self._items)
        return freed

    def __len__(self) -> int:
        return len(self._items)

    def _live(self, key: str) -> StateEntry | None:
        entry = self._items.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= time.time():
            del self._items[key]
            return None
        return entry

    async def get(self, key: str, strong: bool = False, metadata: Mapping[str, str] | None = None) -> StateEntry | None:
        entry = self._items.get(key)  # _live(), inlined on the most called path
        if entry is not None and entry.expires_at is not None and entry.expires_at <= time.time():
            del self._items[key]
            return None
        return entry

    async def bulk_get(self, keys: list[str], metadata: Mapping[str, str] | None = None) -> list[StateEntry | None]:
        return [self._live(key) for key in keys]

    async def set(self, ops: list[SetOp]) -> None:
        # Every etag is checked before anything is written: a stale one changes nothing.
        if len(ops) == 1:
            op = ops[0]
            if op.etag is not None or op.first_write:
                check_write(op.key, op.etag, op.first_write, self._etag(op.key))
            if not op.ttl_seconds:  # _put() inlined on the most called write
                self._items[op.key] = state_entry(op.value, str(next(self._versions)), None)
            else:
                self._put(op)
            return
        self._check_all(ops)
        for op in ops:
            self._put(op)

    async def delete(self, ops: list[DeleteOp]) -> None:
        self._check_all(ops)
        for op in ops:
            self._items.pop(op.key, None)

    async def transact(self, ops: list[SetOp | DeleteOp], metadata: Mapping[str, str] | None = None) -> None:
        # Everything runs on the one event loop: checking all before applying any
        # is enough to make the transaction all-or-nothing.
        self._check_all(ops)
        for op in ops:
            if isinstance(op, DeleteOp):
                self._items.pop(op.key, None)
            else:
                self._put(op)

    def _check_all(self, ops: list[SetOp] | list[DeleteOp] | list[SetOp | DeleteOp]) -> None:
        # Later operations on a key see what the earlier ones would leave: None for
        # a delete; for a write an etag no caller can hold yet.
        shadow: dict[str, str | PendingEtag | None] = {}
        for op in ops:
            if op.etag is None and not op.first_write:
                shadow[op.key] = None if isinstance(op, DeleteOp) else WRITTEN_IN_THIS_REQUEST
                continue
            current = shadow[op.key] if op.key in shadow else self._etag(op.key)
            check_write(op.key, op.etag, op.first_write, current)
            shadow[op.key] = None if isinstance(op, DeleteOp) else WRITTEN_IN_THIS_REQUEST

    def _etag(self, key: str) -> str | None:
        entry = self._live(key)
        return None if entry is None else entry.etag

    def _put(self, op: SetOp) -> None:
        ttl = op.ttl_seconds
        etag = str(next(self._versions))
        if not ttl:  # none given, or taken off (0): an entry of this store has no expiry then
            self._items[op.key] = state_entry(op.value, etag, None)
            return
        expires_at = time.time() + ttl
        self._items[op.key] = state_entry(op.value, etag, expires_at)
        expiries = self._expiries
        heapq.heappush(expiries, (expires_at, op.key, etag))
        if len(expiries) > 2 * len(self._items) + EXPIRY_SLACK:
            # A key rewritten with a TTL leaves its earlier record behind until that expires.
            self._expiries = [(e.expires_at, k, e.etag) for k, e in self._items.items() if e.expires_at is not None]
            heapq.heapify(self._expiries)
