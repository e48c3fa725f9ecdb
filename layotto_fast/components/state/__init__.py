"""Implementations of the state building block, one module each, and the optimistic
concurrency check they all make the same way (and word the same way)."""

from __future__ import annotations

import enum
from typing import Final

from layotto_fast.errors import Conflict


class PendingEtag(enum.Enum):
    """The "current etag" of a key an earlier operation of the same request writes: its new
    etag does not exist yet, so no etag a caller holds can match it. An enum member, not a
    string, because a caller's etag may be any string (an empty one too)."""

    WRITTEN_IN_THIS_REQUEST = enum.auto()


WRITTEN_IN_THIS_REQUEST: Final = PendingEtag.WRITTEN_IN_THIS_REQUEST


def check_write(key: str, etag: str | None, first_write: bool, current: str | PendingEtag | None) -> None:
    """Raise Conflict unless a write (or delete) of ``key`` may go ahead over ``current``,
    the stored etag (None: no value; WRITTEN_IN_THIS_REQUEST)."""
    if etag is not None:
        if current != etag:
            raise stale_etag(key, etag, current)
    elif first_write and current is not None:
        raise key_exists(key)


def stale_etag(key: str, etag: str | None, current: str | PendingEtag | None) -> Conflict:
    if current is WRITTEN_IN_THIS_REQUEST:
        stored = "a value written earlier in this request"
    else:
        stored = "no value" if current is None else f"etag {current!r}"
    return Conflict(f"etag mismatch for key {key!r}: given {etag!r}, the store has {stored}")


def key_exists(key: str) -> Conflict:
    return Conflict(f"first-write concurrency: key {key!r} exists and no etag was given")
