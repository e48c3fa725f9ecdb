"""Sequencer conformance: ids strictly increasing per key, in call order, across sidecars."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from layotto_fast.errors import ResourceExhausted
from layotto_fast.runtime.sequencer import MAX_ID
from tests.conformance.conftest import Harness, implementations
from tests.conformance.matrix import Implementation

pytestmark = implementations("sequencer")


def test_strictly_increasing_in_call_order(harness: Harness, implementation: Implementation) -> None:
    sequencer = harness.make(implementation)
    key = uuid.uuid4().hex
    serial = [harness.run(sequencer.next_id(key)) for _ in range(20)]
    assert serial == sorted(set(serial)) and serial[0] >= 1

    async def many() -> list[int]:
        return list(await asyncio.gather(*(sequencer.next_id(key) for _ in range(200))))

    concurrent = harness.run(many())
    assert len(set(concurrent)) == 200 and min(concurrent) > serial[-1]
    assert harness.run(sequencer.next_id(key)) > max(concurrent)


def test_two_sidecars_and_a_restart_keep_the_order(harness: Harness, implementation: Implementation) -> None:
    if implementation.backend is None:
        pytest.skip("in-memory: one process, nothing shared or kept")
    first, second = harness.make(implementation, "first"), harness.make(implementation, "second")
    key = uuid.uuid4().hex
    seen = [harness.run((first if i % 2 else second).next_id(key)) for i in range(40)]
    assert seen == sorted(set(seen))
    harness.run(first.close())
    again = harness.make(implementation, "again")
    assert harness.run(again.next_id(key)) > seen[-1]


def test_bigger_than_and_exhaustion(harness: Harness, implementation: Implementation) -> None:
    start = harness.make(implementation, biggerThan="1000")
    key = uuid.uuid4().hex
    assert harness.run(start.next_id(key)) == 1001
    near_end = harness.make(implementation, "near-end", biggerThan=str(MAX_ID - 2))
    key = uuid.uuid4().hex
    assert [harness.run(near_end.next_id(key)) for _ in range(2)] == [MAX_ID - 1, MAX_ID]
    for _ in range(2):  # stays exhausted: nothing advanced, and every store says so alike
        with pytest.raises(ResourceExhausted, match=f"sequence '{key}' is exhausted: its last id {MAX_ID} has"):
            harness.run(near_end.next_id(key))
