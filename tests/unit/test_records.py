"""State records built in C are the same NamedTuples the Python constructor makes."""

from __future__ import annotations

import sys
import tracemalloc

import pytest

from layotto_fast.runtime.records import state_entry
from layotto_fast.runtime.state import StateEntry


def test_state_entry_is_a_state_entry_holding_its_fields() -> None:
    value, etag = b"value-" + bytes(10), "etag-" + "7" * 10  # not interned: refcounts are exact
    before = sys.getrefcount(value), sys.getrefcount(etag)
    entry = state_entry(value, etag, 12.5)
    assert type(entry) is StateEntry
    assert entry == StateEntry(value, etag, 12.5) and entry.value is value and entry.expires_at == 12.5
    assert (sys.getrefcount(value), sys.getrefcount(etag)) == (before[0] + 1, before[1] + 1)
    del entry
    assert (sys.getrefcount(value), sys.getrefcount(etag)) == before
    assert state_entry(b"", "1", None) == StateEntry(b"", "1")


def test_fields_of_the_wrong_type_are_refused() -> None:
    with pytest.raises(TypeError):
        state_entry("text", "1", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        state_entry(b"v", 1, None)  # type: ignore[arg-type]


def test_building_entries_leaks_nothing() -> None:
    for _ in range(1000):
        state_entry(b"v", "1", None)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(50_000):
            state_entry(b"v", str(index), None)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10_000, f"{grown} bytes still held after 50,000 entries"
