"""Sequencer conformance: ids strictly increasing per key, in call order, across sidecars, and
the key the sequencer service hands every store, where Layotto's sidecars count too."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from layotto_fast.components.etcd_client import EtcdConfig, EtcdConnection, op_get, op_put, range_kvs, same_create
from layotto_fast.errors import InvalidArgument, ResourceExhausted
from layotto_fast.runtime.sequencer import MAX_ID
from tests.backends.servers import EtcdServer
from tests.conformance.conftest import Harness, implementations
from tests.conformance.matrix import Implementation

pytestmark = implementations("sequencer")


def test_strictly_increasing_in_call_order(harness: Harness, implementation: Implementation) -> None:
    """Every store counts one by one from 1 (in memory a counter, in Redis ``INCR``, in etcd the
    key's version): no id is skipped, serially or when 200 calls are in flight at once, which
    take exactly the next 200 ids."""
    sequencer = harness.make(implementation)
    key = uuid.uuid4().hex
    serial = [harness.run(sequencer.next_id(key)) for _ in range(20)]
    assert serial == list(range(1, 21))

    async def many() -> list[int]:
        return list(await asyncio.gather(*(sequencer.next_id(key) for _ in range(200))))

    concurrent = harness.run(many())
    assert sorted(concurrent) == list(range(21, 221))
    assert harness.run(sequencer.next_id(key)) == 221


def test_two_sidecars_and_a_restart_keep_the_order(harness: Harness, implementation: Implementation) -> None:
    """Sidecars sharing the backend take turns on one count: the ids go on one by one whichever
    of them asks, and a sidecar started later goes on from the last one."""
    if implementation.backend is None:
        pytest.skip("in-memory: one process, nothing shared or kept")
    first, second = harness.make(implementation, "first"), harness.make(implementation, "second")
    key = uuid.uuid4().hex
    seen = [harness.run((first if i % 2 else second).next_id(key)) for i in range(40)]
    assert seen == list(range(1, 41))
    harness.run(first.close())
    again = harness.make(implementation, "again")
    assert harness.run(again.next_id(key)) == 41


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


class LayottoSidecar:
    """What Layotto's sequencer components do with the key its runtime hands them, over the
    same backend: in Redis ``INCR key`` (``INCRBY key 10000`` for a block of ``WEAK`` ids),
    in etcd one transaction putting an empty value at ``/layotto/<key>`` whatever the key
    holds, the id being the key's version after it."""

    def __init__(self, harness: Harness, backend: Any, connection: EtcdConnection | None) -> None:
        self._harness, self._backend, self._etcd = harness, backend, connection

    def next_id(self, stored: str) -> int:
        if self._etcd is None:
            return int(self._backend.cli("INCR", stored))
        return self._harness.run(self._etcd_next_id(f"/layotto/{stored}".encode()))

    async def _etcd_next_id(self, key: bytes) -> int:
        assert self._etcd is not None
        put_then_get = [op_put(key, b""), op_get(key)]
        response = await self._etcd.txn([same_create(key, 0)], put_then_get, put_then_get)
        return int(range_kvs(response, 1)[0].version)


def test_ids_go_on_from_layottos_sequence_and_layotto_goes_on_from_ours(
    harness: Harness, implementation: Implementation
) -> None:
    """Through the sequencer service a key is counted under ``sequencer|||<app id>||<key>`` (the
    default keyPrefix), the key Layotto's runtime hands its sequencer components, with
    Layotto's arithmetic: where a Layotto sidecar of app ``my-app`` left ``orders`` at 41, the
    next id is 42, and a Layotto sidecar's next one after that is 43."""
    services, store = harness.services(implementation, "my-app")
    sequencer = services.sequencer
    key = f"orders-{uuid.uuid4().hex}"
    stored = f"sequencer|||my-app||{key}"
    backend = harness.backend(implementation)
    if backend is None:  # in-memory: nothing to share; the store is given that key
        assert harness.run(sequencer.next_id("conformance", key)) == 1
        assert harness.run(store.next_id(stored)) == 2  # the same sequence
        assert harness.run(store.next_id(key)) == 1  # not the key as sent
    else:
        connection = None
        if isinstance(backend, EtcdServer):
            connection = EtcdConnection(EtcdConfig.from_manifest(harness.manifest(implementation), "/"))
            harness.run(connection.open())
        try:
            layotto = LayottoSidecar(harness, backend, connection)
            assert [layotto.next_id(stored) for _ in range(41)][-1] == 41
            assert harness.run(sequencer.next_id("conformance", key)) == 42
            assert layotto.next_id(stored) == 43  # the key we wrote is the one Layotto reads
            assert harness.run(sequencer.next_id("conformance", key)) == 44
            if connection is None:  # Redis: Layotto's WEAK ids, a block of 10000 (45..10044) at once
                assert int(backend.cli("INCRBY", stored, "10000")) == 10044
                assert harness.run(sequencer.next_id("conformance", key)) == 10045
                assert backend.cli("GET", stored) == "10045"
        finally:
            if connection is not None:
                harness.run(connection.close())
    with pytest.raises(InvalidArgument, match=r"^key 'a\|\|b' contains '\|\|'"):
        harness.run(sequencer.next_id("conformance", "a||b"))


def test_exhaustion_through_the_service_names_the_apps_key(harness: Harness, implementation: Implementation) -> None:
    services, _ = harness.services(implementation, "my-app", biggerThan=str(MAX_ID - 1))
    key = uuid.uuid4().hex
    assert harness.run(services.sequencer.next_id("conformance", key)) == MAX_ID
    with pytest.raises(ResourceExhausted) as caught:
        harness.run(services.sequencer.next_id("conformance", key))
    assert f"sequence '{key}' is exhausted" in caught.value.message and "|||" not in caught.value.message
