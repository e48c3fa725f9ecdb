"""Implementations of the state building block, one module each, and the optimistic
concurrency check they all make the same way (and word the same way: a ``KeyConflict``
about the key as stored, which the state service says again about the app's key)."""

from __future__ import annotations

import enum
from typing import Final

from layotto_fast.runtime.state import KeyConflict


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


def stale_etag(key: str, etag: str | None, current: str | PendingEtag | None) -> KeyConflict:
    if current is WRITTEN_IN_THIS_REQUEST:
        stored = "a value written earlier in this request"
    else:
        stored = "no value" if current is None else f"etag {current!r}"
    return KeyConflict(key, "etag mismatch for key ", f": given {etag!r}, the store has {stored}")


def key_exists(key: str) -> KeyConflict:
    return KeyConflict(key, "first-write concurrency: key ", " exists and no etag was given")
