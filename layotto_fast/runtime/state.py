"""The state building block's contract: records, options, features and the store interface.

A caller's request arrives as ``StateItem`` records; the state service applies the
block's rules (key required, concurrency, ``ttlInSeconds``, features) and hands the
store ``SetOp``/``DeleteOp`` records that mean exactly one thing each.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from layotto_fast.errors import Conflict
from layotto_fast.runtime.component import Component


class Feature(enum.StrEnum):
    ETAG = "ETAG"
    TTL = "TTL"
    TRANSACTIONAL = "TRANSACTIONAL"


class Concurrency(enum.IntEnum):
    """Wire values of StateOptions.StateConcurrency (Layotto's and Dapr's)."""

    UNSPECIFIED = 0
    FIRST_WRITE = 1
    LAST_WRITE = 2


class Consistency(enum.IntEnum):
    """Wire values of StateOptions.StateConsistency."""

    UNSPECIFIED = 0
    EVENTUAL = 1
    STRONG = 2


# NamedTuples rather than frozen dataclasses: as immutable, and cheaper to build,
# which shows on the per-call path; the per-call paths build them in C (records.pyx).
class StateEntry(NamedTuple):
    value: bytes
    etag: str
    expires_at: float | None = None  # unix time


class StateItem(NamedTuple):
    """One item of a save or delete request, as the caller sent it."""

    key: str
    value: bytes = b""
    etag: str | None = None  # None: the request carried no etag
    concurrency: int = Concurrency.UNSPECIFIED
    consistency: int = Consistency.UNSPECIFIED
    metadata: Mapping[str, str] | None = None  # None: no entries


class TransactionOperation(NamedTuple):
    """One operation of a transaction, as the caller sent it."""

    kind: str  # "upsert" or "delete", in any case
    item: StateItem | None  # None: the caller sent the operation without its request


class KeyUnreadable(NamedTuple):
    """A key of a bulk read that the store could not read while it read the others (a key
    holding another type of value): reported in that key's item, as Layotto does."""

    reason: str


class BulkStateEntry(NamedTuple):
    """One key of a bulk read and what is stored under it (None: nothing), or why it could
    not be read (``error``, "" when it could)."""

    key: str
    entry: StateEntry | None
    error: str = ""


class SetOp(NamedTuple):
    """A write the store applies: ``etag`` (when not None) must match the stored one;
    ``first_write`` without an etag means the key must not exist."""

    key: str
    value: bytes
    etag: str | None = None
    first_write: bool = False
    # Seconds to live; 0: none (ttlInSeconds -1 or 0); None: none given, which a store with
    # a default of its own (state.redis's manifest ttlInSeconds) applies, and is none otherwise
    ttl_seconds: int | None = None
    strong: bool = False  # strong consistency asked: wait for replicas where the backend has them


class DeleteOp(NamedTuple):
    key: str
    etag: str | None = None
    first_write: bool = False
    strong: bool = False


class KeyConflict(Conflict):
    """The Conflict a store raises about one key: the message is ``before``, the key's repr,
    then ``after``, so that the state service can say it again about the key the app sent
    (``naming``) rather than the key as stored, behind its prefix."""

    def __init__(self, key: str, before: str, after: str) -> None:
        super().__init__(f"{before}{key!r}{after}")
        self.key = key
        self.before = before
        self.after = after

    def naming(self, key: str) -> KeyConflict:
        """The same conflict, about ``key``."""
        return KeyConflict(key, self.before, self.after)


class StateStore(Component, Protocol):
    features: frozenset[Feature]

    async def get(self, key: str, strong: bool, metadata: Mapping[str, str] | None) -> StateEntry | None: ...

    async def bulk_get(
        self, keys: list[str], metadata: Mapping[str, str] | None
    ) -> list[StateEntry | KeyUnreadable | None]:
        """Each key's entry, in order. A key that cannot be read while others can gives
        KeyUnreadable; a store that cannot be read raises."""
        ...

    async def set(self, ops: list[SetOp]) -> None:
        """Apply every write; when an etag is stale raise KeyConflict, having changed nothing."""
        ...

    async def delete(self, ops: list[DeleteOp]) -> None:
        """Delete every key; when an etag is stale raise KeyConflict, having changed nothing."""
        ...

    async def transact(self, ops: list[SetOp | DeleteOp], metadata: Mapping[str, str] | None) -> None:
        """Apply every operation or none; a stale etag raises KeyConflict."""
        ...
