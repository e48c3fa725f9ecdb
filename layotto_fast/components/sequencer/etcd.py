"""``sequencer.etcd``: ids strictly increasing per key, shared by every sidecar on one etcd.

A sequence is the key ``{keyPrefixPath}{key}``, as Layotto's etcd sequencer keeps it:
``key`` is the one the sequencer service gives (``sequencer|||<prefix>||<key>``, its prefix
chosen by the manifest's ``keyPrefix``: ``runtime/key_prefixes.py``), and
``keyPrefixPath`` is the component's own (default ``/layotto/``; a ``/`` is put at either
end where it is missing, as for ``lock.etcd``).

Layotto counts in etcd's own bookkeeping: each id is a put of an empty value, and the id
is the key's ``version`` after it (how many times it was written since it was created).
We read a key the same way, with one addition: a value, when there is one, is an id
already handed out. The last id of a key is the bigger of its version and its value, and
the next one is that plus one (or ``biggerThan`` plus one, when that is bigger), written
with a compare-and-swap: one transaction "the key was last written at the revision we
read (0: it does not exist) -> put". When the new id is the version the put gives the
key, the value put is empty, exactly what Layotto puts; otherwise (``biggerThan`` above
the version, or an id put there by hand) it is the id in decimal. When another sidecar
(ours or Layotto's) wrote first, the transaction returns the key as it now is and we try
again from it. So ids never repeat and always grow, across sidecars and restarts, in the
order they are handed out; a key Layotto's sidecars counted to 41 goes on at 42, and one
we counted with empty values goes on in Layotto at the next version.

What Layotto cannot follow: a key whose value is ahead of its version. Layotto ignores
values, so after ``biggerThan`` lifted a sequence (or an id was put by hand) its next id
would be the key's version again, below ours (README: sequencer).

Metadata besides the connection's (``components/etcd_client.py``): ``biggerThan``
(an integer, default 0, at most 2**63 - 2): every id is bigger than it, the first
one of a key is ``biggerThan + 1``. After MAX_ID the sequence is exhausted:
SequenceExhausted, and nothing is written. ``keyPrefix`` is the sequencer service's
strategy, never text before the key: only ``keyPrefixPath`` is one.

Within one sidecar the calls for one key wait for each other, so they do not race
one another's compare-and-swap; the key as last read is kept, so an uncontended id
costs one round trip. It is kept for the SEEN_KEYS keys used last: a key asked for
after that costs two (the guess that it does not exist fails, and returns the key).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from typing import Any, Self

from layotto_fast.components.etcd_client import EtcdConfig, EtcdConnection, op_get, op_put, range_kvs, same_mod
from layotto_fast.components.lock.etcd import DEFAULT_PATH, path_prefix
from layotto_fast.components.sequencer import SequencerConfig
from layotto_fast.errors import Internal, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.sequencer import MAX_ID, SequenceExhausted

# A key as read: (its last id, its version, its mod_revision); all 0 when it does not exist.
Seen = tuple[int, int, int]
MISSING: Seen = (0, 0, 0)
# Keys whose last state is kept. Only a cache: ids stay right without it (every id is a
# compare-and-swap against the revision read), but one entry per key ever asked for would grow
# without end where keys are per entity (an order, a user). At about 300 bytes each, 3 MB.
SEEN_KEYS = 10_000


class EtcdSequencer:
    def __init__(self, config: EtcdConfig, bigger_than: int = 0, seen_keys: int = SEEN_KEYS) -> None:
        self.config = config
        self.bigger_than = bigger_than
        self._conn = EtcdConnection(config)
        # key -> the key in etcd as last read or written, the least recently used first
        self._seen: OrderedDict[str, Seen] = OrderedDict()
        self._seen_keys = seen_keys
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> (lock, calls using it)

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        bigger_than = SequencerConfig.from_manifest(manifest).bigger_than
        config = EtcdConfig.from_manifest(manifest, DEFAULT_PATH)
        return cls(dataclasses.replace(config, key_prefix=path_prefix(manifest)), bigger_than)

    def _key(self, key: str) -> bytes:
        return f"{self.config.key_prefix}{key}".encode()

    async def init(self) -> None:
        self._seen.clear()
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
        etcd_key = self._key(key)
        seen = self._seen.get(key)
        fresh = False  # a guess (the key does not exist yet) is not fresh either
        if seen is None:
            seen = MISSING
        deadline = time.monotonic() + self.config.operation_timeout
        while True:
            last, version, revision = seen
            base = max(last, self.bigger_than)
            if base >= MAX_ID:
                if fresh:
                    raise SequenceExhausted(key, self.config.component)
                response = await self._conn.txn([], [op_get(etcd_key)])
            else:
                next_id = base + 1
                # Layotto's empty value when the id is the version this put gives the key.
                value = b"" if next_id == version + 1 else str(next_id).encode()
                response = await self._conn.txn(
                    [same_mod(etcd_key, revision)], [op_put(etcd_key, value)], [op_get(etcd_key)]
                )
                if response.succeeded:
                    self._remember(key, (next_id, version + 1, response.header.revision))
                    return next_id
            seen = self._parse(key, range_kvs(response, 0))
            self._remember(key, seen)
            fresh = True
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"{self.config.component}: sequence {key!r} kept changing under other sidecars' writes"
                )

    def _remember(self, key: str, seen: Seen) -> None:
        self._seen[key] = seen
        self._seen.move_to_end(key)
        if len(self._seen) > self._seen_keys:
            self._seen.popitem(last=False)

    def _parse(self, key: str, kvs: list[Any]) -> Seen:
        if not kvs:
            return MISSING
        kv = kvs[0]
        version = int(kv.version)
        last = version
        if kv.value:
            try:
                last = max(version, int(kv.value))
            except ValueError:
                raise Internal(
                    f"{self.config.component}: sequence {key!r} holds {bytes(kv.value)[:40]!r}, not an id"
                ) from None
        return last, version, int(kv.mod_revision)
