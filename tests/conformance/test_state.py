"""State conformance: every state store behaves the same through the block's interface."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from layotto_fast.errors import Conflict, InvalidArgument
from layotto_fast.runtime.records import state_item
from layotto_fast.runtime.state import Concurrency, DeleteOp, Feature, KeyConflict, SetOp, StateItem
from tests.conformance.conftest import Harness, implementations
from tests.conformance.matrix import Implementation

pytestmark = implementations("state")


def key() -> str:
    return f"conf-{uuid.uuid4().hex}"


def test_set_get_delete(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    k = key()
    assert harness.run(store.get(k)) is None
    harness.run(store.set([SetOp(k, b"v")]))
    entry = harness.run(store.get(k))
    assert entry.value == b"v" and entry.etag
    harness.run(store.delete([DeleteOp(k)]))
    assert harness.run(store.get(k)) is None
    harness.run(store.delete([DeleteOp(k)]))  # deleting what is gone is not an error


def test_binary_values_and_empty_values_round_trip(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    k, empty = key(), key()
    value = bytes(range(256)) * 4
    harness.run(store.set([SetOp(k, value), SetOp(empty, b"")]))
    assert harness.run(store.get(k)).value == value
    entry = harness.run(store.get(empty))
    assert entry is not None and entry.value == b""


def test_every_write_changes_the_etag(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    k = key()
    harness.run(store.set([SetOp(k, b"1")]))
    first = harness.run(store.get(k)).etag
    harness.run(store.set([SetOp(k, b"1")]))
    assert harness.run(store.get(k)).etag != first


def test_stale_etag_conflicts_and_changes_nothing(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    k = key()
    harness.run(store.set([SetOp(k, b"1")]))
    etag = harness.run(store.get(k)).etag
    harness.run(store.set([SetOp(k, b"2", etag=etag)]))
    with pytest.raises(Conflict):
        harness.run(store.set([SetOp(k, b"3", etag=etag)]))
    with pytest.raises(Conflict):
        harness.run(store.delete([DeleteOp(k, etag=etag)]))
    assert harness.run(store.get(k)).value == b"2"


def test_a_stale_etag_on_a_later_item_changes_no_item(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    a, b = key(), key()
    harness.run(store.set([SetOp(a, b"a1"), SetOp(b, b"b1")]))
    with pytest.raises(Conflict, match=b):
        harness.run(store.set([SetOp(a, b"a2"), SetOp(b, b"b2", etag="stale")]))
    with pytest.raises(Conflict, match=b):
        harness.run(store.delete([DeleteOp(a), DeleteOp(b, etag="stale")]))
    assert [harness.run(store.get(k)).value for k in (a, b)] == [b"a1", b"b1"]


def test_etag_on_missing_key_conflicts(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    k = key()
    with pytest.raises(Conflict, match=f"^etag mismatch for key '{k}': given '1', the store has no value$"):
        harness.run(store.set([SetOp(k, b"1", etag="1")]))


def test_first_write_without_etag(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    k = key()
    harness.run(store.set([SetOp(k, b"1", first_write=True)]))
    with pytest.raises(Conflict, match=f"^first-write concurrency: key '{k}' exists and no etag was given$"):
        harness.run(store.set([SetOp(k, b"2", first_write=True)]))
    assert harness.run(store.get(k)).value == b"1"
    harness.run(store.set([SetOp(k, b"last-write-wins")]))
    assert harness.run(store.get(k)).value == b"last-write-wins"


def test_ttl(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    k, kept = key(), key()
    harness.run(store.set([SetOp(k, b"short", ttl_seconds=1), SetOp(kept, b"kept", ttl_seconds=1)]))
    harness.run(store.set([SetOp(kept, b"kept")]))  # a write without a TTL keeps the value
    assert harness.run(store.get(k)).value == b"short"
    harness.run(asyncio.sleep(1.3))
    assert harness.run(store.get(k)) is None
    assert harness.run(store.get(kept)).value == b"kept"


def test_bulk_get_keeps_order_and_gaps(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    keys = [key() for _ in range(20)]
    harness.run(store.set([SetOp(k, k.encode()) for k in keys[::2]]))
    entries = harness.run(store.bulk_get(keys))
    assert [e and e.value for e in entries] == [k.encode() if i % 2 == 0 else None for i, k in enumerate(keys)]


def test_concurrent_calls_each_get_their_own_answer(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    keys = [key() for _ in range(200)]

    async def scenario() -> list[Any]:
        await asyncio.gather(*(store.set([SetOp(k, k.encode())]) for k in keys))
        stale = [store.set([SetOp(k, b"x", etag="stale")]) for k in keys[:10]]
        reads = [store.get(k) for k in keys]
        return list(await asyncio.gather(*stale, *reads, return_exceptions=True))

    results = harness.run(scenario())
    assert all(isinstance(r, Conflict) for r in results[:10])
    assert [r.value for r in results[10:]] == [k.encode() for k in keys]


def test_transaction_all_or_nothing(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    if Feature.TRANSACTIONAL not in implementation.features:
        pytest.skip("not transactional")
    tag = uuid.uuid4().hex  # one hash slot, so that a cluster takes the transaction
    a, b = f"{{{tag}}}a", f"{{{tag}}}b"
    harness.run(store.set([SetOp(a, b"a")]))
    harness.run(store.transact([SetOp(b, b"b"), DeleteOp(a)]))
    assert harness.run(store.get(a)) is None and harness.run(store.get(b)).value == b"b"
    with pytest.raises(Conflict):
        harness.run(store.transact([SetOp(a, b"new"), SetOp(b, b"x", etag="stale")]))
    assert harness.run(store.get(a)) is None and harness.run(store.get(b)).value == b"b"
    etag = harness.run(store.get(b)).etag
    harness.run(store.transact([SetOp(b, b"b2", etag=etag), SetOp(b, b"b3", etag=None)]))
    assert harness.run(store.get(b)).value == b"b3"


def test_later_operations_of_a_transaction_see_what_the_earlier_ones_leave(
    harness: Harness, implementation: Implementation
) -> None:
    store = harness.make(implementation)
    if Feature.TRANSACTIONAL not in implementation.features:
        pytest.skip("not transactional")
    tag = uuid.uuid4().hex
    k, gone = f"{{{tag}}}k", f"{{{tag}}}gone"
    harness.run(store.set([SetOp(k, b"1"), SetOp(gone, b"1")]))
    stored = harness.run(store.get(k)).etag
    # No etag matches a value an earlier operation writes: not the stored one, not an
    # empty one, not one a caller might guess for the new version.
    for etag in (stored, "", "2", "WRITTEN"):
        with pytest.raises(Conflict, match="written earlier in this request"):
            harness.run(store.transact([SetOp(k, b"2"), SetOp(k, b"3", etag=etag)]))
    with pytest.raises(Conflict, match="exists"):
        harness.run(store.transact([SetOp(k, b"2"), SetOp(k, b"3", first_write=True)]))
    assert harness.run(store.get(k)).value == b"1"
    # After a delete there is nothing: a first write goes, an etag does not match.
    harness.run(store.transact([DeleteOp(gone), SetOp(gone, b"again", first_write=True)]))
    assert harness.run(store.get(gone)).value == b"again"
    with pytest.raises(Conflict, match="no value"):
        harness.run(store.transact([DeleteOp(k), SetOp(k, b"x", etag=stored)]))
    assert harness.run(store.get(k)).value == b"1"


def test_an_empty_etag_is_an_etag(harness: Harness, implementation: Implementation) -> None:
    """The runtime turns a request's empty etag into none; a store given one compares it."""
    store = harness.make(implementation)
    k = key()
    harness.run(store.set([SetOp(k, b"1")]))
    with pytest.raises(Conflict):
        harness.run(store.set([SetOp(k, b"2", etag="")]))
    assert harness.run(store.get(k)).value == b"1"


def test_an_etag_from_before_a_delete_does_not_match_the_key_written_again(
    harness: Harness, implementation: Implementation
) -> None:
    """A key deleted and written again, as it was (a first write): an etag read before
    the delete is stale, however the store numbers its versions."""
    store = harness.make(implementation)
    k = key()
    harness.run(store.set([SetOp(k, b"1", first_write=True)]))
    before = harness.run(store.get(k)).etag
    harness.run(store.delete([DeleteOp(k)]))
    harness.run(store.set([SetOp(k, b"again", first_write=True)]))
    with pytest.raises(Conflict):
        harness.run(store.set([SetOp(k, b"lost update", etag=before)]))
    assert harness.run(store.get(k)).value == b"again"


def test_cluster_spreads_keys_and_refuses_cross_slot_transactions(
    harness: Harness, implementation: Implementation
) -> None:
    if implementation.id != "state.redis-cluster":
        pytest.skip("Redis Cluster only")
    store = harness.make(implementation)
    keys = [key() for _ in range(30)]
    harness.run(store.set([SetOp(k, b"v") for k in keys]))  # bulk across slots works
    assert all(e.value == b"v" for e in harness.run(store.bulk_get(keys)))
    with pytest.raises(InvalidArgument, match="hash slot"):
        harness.run(store.transact([SetOp(keys[0], b"x"), SetOp(keys[1], b"x")]))
    assert harness.run(store.get(keys[0])).value == b"v"
    with pytest.raises(Conflict):  # checked across slots before anything is written
        harness.run(store.set([SetOp(keys[0], b"new"), SetOp(keys[1], b"new", etag="stale")]))
    assert harness.run(store.get(keys[0])).value == b"v"


def test_a_conflict_through_the_state_service_names_the_key_the_app_sent(
    harness: Harness, implementation: Implementation
) -> None:
    """The store keeps ``<app id>||<key>`` and raises its conflicts about that key; what the
    app is told names its own key, whichever write conflicted."""
    services, store = harness.services(implementation, "conformance-app", keyPrefix="appid")
    state = services.state
    tag = uuid.uuid4().hex
    k, other = f"{{{tag}}}k", f"{{{tag}}}other"  # one hash slot: a cluster takes the transaction

    def item(key: str, etag: str | None = None, concurrency: int = Concurrency.UNSPECIFIED) -> StateItem:
        return state_item(key, b"v", etag, concurrency, 0, None)

    harness.run(_awaited(state.save("conformance", [item(k)])))
    assert harness.run(store.get(f"conformance-app||{k}", False, None)).value == b"v"
    writes: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("etag mismatch", lambda: state.save("conformance", [item(k, "stale")])),
        ("etag mismatch", lambda: state.save("conformance", [item(other), item(k, "stale")])),
        ("first-write", lambda: state.save("conformance", [item(k, concurrency=Concurrency.FIRST_WRITE)])),
        ("etag mismatch", lambda: state.delete("conformance", [item(other), item(k, "stale")])),
        ("etag mismatch", lambda: state.delete_one("conformance", item(k, "stale"))),
    ]
    if Feature.TRANSACTIONAL in implementation.features:
        writes.append(
            (
                "etag mismatch",
                lambda: state.transact("conformance", [("upsert", item(other)), ("delete", item(k, "stale"))]),
            )
        )
    for kind, write in writes:
        with pytest.raises(KeyConflict) as caught:
            harness.run(_awaited(write()))
        assert caught.value.key == k, caught.value.message
        assert caught.value.message.startswith(kind) and f"key {k!r}" in caught.value.message, caught.value.message
        assert "conformance-app" not in caught.value.message, caught.value.message
    assert harness.run(store.get(f"conformance-app||{other}", False, None)) is None  # nothing was changed


async def _awaited(write: Awaitable[None]) -> None:
    await write
