"""``state.in-memory``: the embedded state store (one process, no persistence)."""

from __future__ import annotations

import itertools
import time
from typing import Self

from layotto_fast.errors import Conflict
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.component import NoBackend
from layotto_fast.runtime.records import state_entry
from layotto_fast.runtime.state import DeleteOp, Feature, SetOp, StateEntry


class InMemoryStateStore(NoBackend):
    features = frozenset({Feature.ETAG, Feature.TTL, Feature.TRANSACTIONAL})

    def __init__(self) -> None:
        self._items: dict[str, StateEntry] = {}
        self._versions = itertools.count(1)  # etags: one store-wide counter

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls()

    def _live(self, key: str) -> StateEntry | None:
        entry = self._items.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= time.time():
            del self._items[key]
            return None
        return entry

    async def get(self, key: str) -> StateEntry | None:
        entry = self._items.get(key)  # _live(), inlined on the most called path
        if entry is not None and entry.expires_at is not None and entry.expires_at <= time.time():
            del self._items[key]
            return None
        return entry

    async def bulk_get(self, keys: list[str]) -> list[StateEntry | None]:
        return [self._live(key) for key in keys]

    async def set(self, ops: list[SetOp]) -> None:
        items, versions = self._items, self._versions
        for key, value, etag, first_write, ttl in ops:  # unpacked: cheaper than attribute reads
            if etag or first_write:  # otherwise a write has nothing to compare
                self._check(key, etag, first_write)
            # _put(), inlined on the most called write path
            expires_at = None if ttl is None else time.time() + ttl
            items[key] = state_entry(value, str(next(versions)), expires_at)

    async def delete(self, ops: list[DeleteOp]) -> None:
        for op in ops:
            self._check(op.key, op.etag, op.first_write)
            self._apply(op)

    async def transact(self, ops: list[SetOp | DeleteOp]) -> None:
        # Everything runs on the one event loop: checking all before applying any
        # is enough to make the transaction all-or-nothing.
        shadow: dict[str, str | None] = {}
        for op in ops:
            current = shadow[op.key] if op.key in shadow else self._etag(op.key)
            self._compare(op.key, current, op.etag, op.first_write)
            shadow[op.key] = None if isinstance(op, DeleteOp) else "pending"
        for op in ops:
            self._apply(op)

    def _etag(self, key: str) -> str | None:
        entry = self._live(key)
        return None if entry is None else entry.etag

    def _check(self, key: str, etag: str | None, first_write: bool) -> None:
        self._compare(key, self._etag(key), etag, first_write)

    @staticmethod
    def _compare(key: str, current: str | None, etag: str | None, first_write: bool) -> None:
        if etag:
            if current != etag:
                raise Conflict(f"etag mismatch for key {key!r}: given {etag!r}, stored {current!r}")
        elif first_write and current is not None:
            raise Conflict(f"first-write concurrency: key {key!r} exists and no etag was given")

    def _apply(self, op: SetOp | DeleteOp) -> None:
        if isinstance(op, DeleteOp):
            self._items.pop(op.key, None)
        else:
            self._put(op)

    def _put(self, op: SetOp) -> None:
        key, value, _, _, ttl = op
        expires_at = None if ttl is None else time.time() + ttl
        self._items[key] = state_entry(value, str(next(self._versions)), expires_at)
