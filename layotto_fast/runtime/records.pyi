"""Type stub for the state block's records built in C (records.pyx)."""

from collections.abc import Mapping

from layotto_fast.runtime.state import StateEntry, StateItem

def state_item(
    key: str, value: bytes, etag: str | None, concurrency: int, consistency: int, metadata: Mapping[str, str] | None
) -> StateItem: ...
def state_entry(value: bytes, etag: str, expires_at: float | None) -> StateEntry: ...
