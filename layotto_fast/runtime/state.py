"""The state building block: key/value with etags, TTL and transactions."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from layotto_fast.errors import InvalidArgument
from layotto_fast.runtime.component import Component


class Feature(enum.StrEnum):
    ETAG = "ETAG"
    TTL = "TTL"
    TRANSACTIONAL = "TRANSACTIONAL"


# NamedTuples rather than frozen dataclasses: as immutable, and cheaper to build,
# which shows on the per-call path; the per-write paths build them in C (records.pyx).
class StateEntry(NamedTuple):
    value: bytes
    etag: str
    expires_at: float | None = None  # unix time


class SetOp(NamedTuple):
    key: str
    value: bytes
    etag: str | None = None
    first_write: bool = False
    ttl_seconds: int | None = None


class DeleteOp(NamedTuple):
    key: str
    etag: str | None = None
    first_write: bool = False


class StateStore(Component, Protocol):
    features: frozenset[Feature]

    async def get(self, key: str) -> StateEntry | None: ...

    async def bulk_get(self, keys: list[str]) -> list[StateEntry | None]: ...

    async def set(self, ops: list[SetOp]) -> None:
        """Apply every write, in order; a stale etag raises Conflict."""
        ...

    async def delete(self, ops: list[DeleteOp]) -> None: ...

    async def transact(self, ops: list[SetOp | DeleteOp]) -> None:
        """Apply every operation or none; a stale etag raises Conflict."""
        ...


TTL_KEY = "ttlInSeconds"


def ttl_from_metadata(metadata: Mapping[str, str], field: str) -> int | None:
    """Dapr's ``ttlInSeconds``: a positive number of seconds, or -1 for none."""
    raw = metadata.get(TTL_KEY)
    if raw is None:
        return None
    try:
        ttl = int(raw)
    except ValueError:
        raise InvalidArgument(f"{field}.{TTL_KEY} is {raw!r}: must be an integer") from None
    if ttl == -1:
        return None
    if ttl <= 0:
        raise InvalidArgument(f"{field}.{TTL_KEY} is {ttl}: must be positive, or -1 for no expiry")
    return ttl
