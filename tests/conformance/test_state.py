"""State conformance: every state store behaves the same through the block's interface."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from layotto_fast.errors import Conflict
from layotto_fast.runtime.state import DeleteOp, Feature, SetOp, StateStore
from tests.conformance.matrix import ids, make


@pytest.fixture(params=ids("state"))
def store(request: pytest.FixtureRequest) -> StateStore:
    component: Any = asyncio.run(make(request.param, "state"))
    return component  # type: ignore[no-any-return]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def key() -> str:
    return f"conf-{uuid.uuid4().hex}"


def test_set_get_delete(store: StateStore) -> None:
    k = key()
    assert run(store.get(k)) is None
    run(store.set([SetOp(k, b"v")]))
    entry = run(store.get(k))
    assert entry.value == b"v" and entry.etag
    run(store.delete([DeleteOp(k)]))
    assert run(store.get(k)) is None


def test_every_write_changes_the_etag(store: StateStore) -> None:
    k = key()
    run(store.set([SetOp(k, b"1")]))
    first = run(store.get(k)).etag
    run(store.set([SetOp(k, b"1")]))
    assert run(store.get(k)).etag != first


def test_stale_etag_conflicts_and_changes_nothing(store: StateStore) -> None:
    if Feature.ETAG not in store.features:
        pytest.skip("no etags")
    k = key()
    run(store.set([SetOp(k, b"1")]))
    etag = run(store.get(k)).etag
    run(store.set([SetOp(k, b"2", etag=etag)]))
    with pytest.raises(Conflict):
        run(store.set([SetOp(k, b"3", etag=etag)]))
    with pytest.raises(Conflict):
        run(store.delete([DeleteOp(k, etag=etag)]))
    assert run(store.get(k)).value == b"2"


def test_etag_on_missing_key_conflicts(store: StateStore) -> None:
    if Feature.ETAG not in store.features:
        pytest.skip("no etags")
    with pytest.raises(Conflict):
        run(store.set([SetOp(key(), b"1", etag="1")]))


def test_first_write_without_etag(store: StateStore) -> None:
    k = key()
    run(store.set([SetOp(k, b"1", first_write=True)]))
    with pytest.raises(Conflict):
        run(store.set([SetOp(k, b"2", first_write=True)]))
    assert run(store.get(k)).value == b"1"
    run(store.set([SetOp(k, b"last-write-wins")]))
    assert run(store.get(k)).value == b"last-write-wins"


def test_ttl(store: StateStore) -> None:
    if Feature.TTL not in store.features:
        pytest.skip("no ttl")
    k = key()
    run(store.set([SetOp(k, b"short", ttl_seconds=1)]))
    assert run(store.get(k)).value == b"short"
    run(asyncio.sleep(1.1))
    assert run(store.get(k)) is None


def test_bulk_get_keeps_order_and_gaps(store: StateStore) -> None:
    a, b, missing = key(), key(), key()
    run(store.set([SetOp(a, b"A"), SetOp(b, b"B")]))
    entries = run(store.bulk_get([b, missing, a]))
    assert [e and e.value for e in entries] == [b"B", None, b"A"]


def test_transaction_all_or_nothing(store: StateStore) -> None:
    if Feature.TRANSACTIONAL not in store.features:
        pytest.skip("not transactional")
    a, b = key(), key()
    run(store.set([SetOp(a, b"a")]))
    run(store.transact([SetOp(b, b"b"), DeleteOp(a)]))
    assert run(store.get(a)) is None and run(store.get(b)).value == b"b"
    with pytest.raises(Conflict):
        run(store.transact([SetOp(a, b"new"), SetOp(b, b"x", etag="stale")]))
    assert run(store.get(a)) is None and run(store.get(b)).value == b"b"
