"""``sequencer.etcd``: ids strictly increasing per key, shared by every sidecar on one etcd.

The last id of a key is the decimal value of ``{keyPrefix}{key}`` (default prefix
``layotto-sequencer/``). The next one is taken with a compare-and-swap: one
transaction "the key was last written at the revision we read (0: it does not
exist) -> put last + 1"; when another sidecar wrote first, the transaction returns
the new value and we try again from it. So ids never repeat and always grow, across
sidecars and restarts, in the order they are handed out.

Metadata besides the connection's (``components/etcd_client.py``): ``biggerThan``
(an integer, default 0, at most 2**63 - 2): every id is bigger than it, the first
one of a key is ``biggerThan + 1``. After MAX_ID the sequence is exhausted:
ResourceExhausted, and nothing is written.

Within one sidecar the calls for one key wait for each other, so they do not race
one another's compare-and-swap; the last value read is kept, so an uncontended id
costs one round trip.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Self

from layotto_fast.components.etcd_client import EtcdConfig, EtcdConnection, op_get, op_put, range_kvs, same_mod
from layotto_fast.components.sequencer import SequencerConfig, exhausted
from layotto_fast.errors import Internal, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.sequencer import MAX_ID

DEFAULT_PREFIX = "layotto-sequencer/"


class EtcdSequencer:
    def __init__(self, config: EtcdConfig, bigger_than: int = 0) -> None:
        self.config = config
        self.bigger_than = bigger_than
        self._conn = EtcdConnection(config)
        self._last: dict[str, tuple[int | None, int]] = {}  # key -> (last id read, its mod_revision)
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> (lock, calls using it)

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        bigger_than = SequencerConfig.from_manifest(manifest).bigger_than
        return cls(EtcdConfig.from_manifest(manifest, DEFAULT_PREFIX), bigger_than)

    async def init(self) -> None:
        self._last.clear()
        await self._conn.open()

    async def ping(self) -> None:
        await self._conn.ping()

    async def close(self) -> None:
        await self._conn.close()

    async def next_id(self, key: str) -> int:
        lock, users = self._turns.get(key) or (asyncio.Lock(), 0)
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._next(key)
        finally:
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def _next(self, key: str) -> int:
        etcd_key = f"{self.config.key_prefix}{key}".encode()
        last, revision = self._last.get(key, (None, 0))
        fresh = key not in self._last  # a guess (the key does not exist yet) is not fresh either
        deadline = time.monotonic() + self.config.operation_timeout
        while True:
            base = self.bigger_than if last is None else max(last, self.bigger_than)
            if base >= MAX_ID:
                if fresh:
                    raise exhausted(key, self.config.component)
                response = await self._conn.txn([], [op_get(etcd_key)])
            else:
                response = await self._conn.txn(
                    [same_mod(etcd_key, revision)], [op_put(etcd_key, str(base + 1).encode())], [op_get(etcd_key)]
                )
                if response.succeeded:
                    self._last[key] = (base + 1, response.header.revision)
                    return base + 1
            last, revision = self._parse(key, range_kvs(response, 0))
            self._last[key] = (last, revision)
            fresh = True
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"{self.config.component}: sequence {key!r} kept changing under other sidecars' writes"
                )

    def _parse(self, key: str, kvs: list[Any]) -> tuple[int | None, int]:
        if not kvs:
            return None, 0
        kv = kvs[0]
        try:
            value = int(kv.value)
        except ValueError:
            raise Internal(
                f"{self.config.component}: sequence {key!r} holds {bytes(kv.value)[:40]!r}, not an id"
            ) from None
        return value, int(kv.mod_revision)
