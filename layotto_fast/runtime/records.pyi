"""Type stub for the state block's records built in C (records.pyx)."""

from layotto_fast.runtime.state import StateEntry

def state_entry(value: bytes, etag: str, expires_at: float | None) -> StateEntry: ...
