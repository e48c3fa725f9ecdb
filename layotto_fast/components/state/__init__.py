"""Implementations of the state building block, one module each, and the optimistic
concurrency check they all make the same way (and word the same way)."""

from __future__ import annotations

from layotto_fast.errors import Conflict

# The "current etag" of a key an earlier operation of the same request writes: a value
# that no etag a caller holds can match, since the new etag does not exist yet.
WRITTEN_IN_THIS_REQUEST = ""


def check_write(key: str, etag: str | None, first_write: bool, current: str | None) -> None:
    """Raise Conflict unless a write (or delete) of ``key`` may go ahead over ``current``,
    the stored etag (None: no value; WRITTEN_IN_THIS_REQUEST)."""
    if etag is not None:
        if current != etag:
            raise stale_etag(key, etag, current)
    elif first_write and current is not None:
        raise key_exists(key)


def stale_etag(key: str, etag: str | None, current: str | None) -> Conflict:
    if current == WRITTEN_IN_THIS_REQUEST:
        stored = "a value written earlier in this request"
    else:
        stored = "no value" if current is None else f"etag {current!r}"
    return Conflict(f"etag mismatch for key {key!r}: given {etag!r}, the store has {stored}")


def key_exists(key: str) -> Conflict:
    return Conflict(f"first-write concurrency: key {key!r} exists and no etag was given")
