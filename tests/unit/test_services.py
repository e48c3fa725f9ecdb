"""The runtime services called directly, with no transport: every rule lives here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layotto_fast.errors import (
    Conflict,
    InvalidArgument,
    ResourceExhausted,
    StartupError,
    Unavailable,
    Unimplemented,
)
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.configuration import ConfigItem
from layotto_fast.runtime.key_prefixes import key_prefix
from layotto_fast.runtime.lifecycle import Components, Health
from layotto_fast.runtime.lock import LockStatus
from layotto_fast.runtime.records import state_item
from layotto_fast.runtime.services import Services
from layotto_fast.runtime.state import Concurrency, KeyConflict, StateItem
from layotto_fast.runtime.state import TransactionOperation as Op

SOURCE = str(Path(__file__))


def manifest(name: str, type_: str, **metadata: str) -> ComponentManifest:
    return ComponentManifest(name, type_, "v1", metadata, SOURCE)


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)


@pytest.fixture
def world() -> Iterator[tuple[Loop, Components, Services]]:
    loop = Loop()
    components = Components(
        [
            manifest("store", "state.in-memory", keyPrefix="appid"),  # kept as 'my-app||<key>'
            manifest("locks", "lock.in-memory"),
            manifest("ids", "sequencer.in-memory", biggerThan="10"),
            manifest("config", "configuration.in-memory"),
            manifest("env", "secretstores.local.env", prefix="LAYOTTO_SERVICE_TEST_"),
            manifest("hello", "hello.helloworld", hello="hi"),
        ]
    )
    loop.run(components.init_all())
    yield loop, components, Services.over(components, "my-app")
    loop.run(components.close_all())
    loop.loop.close()


def item(key: str, value: bytes = b"v", etag: str | None = None, concurrency: int = 0, **metadata: str) -> StateItem:
    return state_item(key, value, etag, concurrency, 0, metadata or None)


def test_state_rules(world: tuple[Loop, Components, Services]) -> None:
    loop, _, services = world
    state = services.state
    loop.run(state.save("store", [item("k", b"1")]))
    etag = loop.run(state.get("store", "k")).etag
    # Layotto's state demo: etag "2" with last-write concurrency goes through.
    loop.run(state.save("store", [item("k", b"2", etag="2", concurrency=Concurrency.LAST_WRITE)]))
    assert loop.run(state.get("store", "k")).value == b"2"
    with pytest.raises(Conflict):  # first-write (or unspecified) with a stale etag
        loop.run(state.save("store", [item("k", b"3", etag=etag, concurrency=Concurrency.FIRST_WRITE)]))
    with pytest.raises(Conflict):
        loop.run(state.save("store", [item("k", b"3", etag=etag)]))
    loop.run(state.save("store", [item("k", b"4", etag="")]))  # an empty etag is no etag
    with pytest.raises(InvalidArgument, match=r"states\[1\]\.key is empty"):
        loop.run(state.save("store", [item("a"), item("")]))
    with pytest.raises(InvalidArgument, match=r"^key is empty"):
        loop.run(state.get("store", ""))
    with pytest.raises(InvalidArgument, match=r"keys\[1\]"):
        loop.run(state.bulk_get("store", ["a", ""]))
    with pytest.raises(InvalidArgument, match=r"store_name 'nope'.*known: store"):
        loop.run(state.get("nope", "k"))
    with pytest.raises(InvalidArgument, match="store_name is empty"):
        loop.run(state.get("", "k"))


def test_state_ttl_metadata_is_checked_and_bounded(world: tuple[Loop, Components, Services]) -> None:
    loop, _, services = world
    loop.run(services.state.save("store", [item("t", ttlInSeconds="100")]))
    assert loop.run(services.state.get("store", "t")).expires_at is not None
    loop.run(services.state.save("store", [item("t", ttlInSeconds="-1")]))
    assert loop.run(services.state.get("store", "t")).expires_at is None
    loop.run(services.state.save("store", [item("t", ttlInSeconds="+60")]))  # a sign, as Go's ParseInt takes
    assert loop.run(services.state.get("store", "t")).expires_at is not None
    # what Go's ParseInt refuses, and Python's int() took: spaces, underscores, other digits
    not_integers = ("abc", " 60", "60\n", "6_0", "\u0666\u0660", "-", "--1")
    for bad in not_integers:
        with pytest.raises(InvalidArgument, match=r"ttlInSeconds is .*must be an integer"):
            loop.run(services.state.save("store", [item("t", ttlInSeconds=bad)]))
    # 0, as -1, takes an expiry off (as Layotto's and Dapr's stores read it; it was refused)
    loop.run(services.state.save("store", [item("t", ttlInSeconds="100")]))
    loop.run(services.state.save("store", [item("t", ttlInSeconds="0")]))
    assert loop.run(services.state.get("store", "t")).expires_at is None
    for bad, why in (("abc", "must be an integer"), ("-2", "between 1"), ("1" + "0" * 400, "401 digits")):
        with pytest.raises(InvalidArgument, match=rf"states\[0\]\.metadata\.ttlInSeconds is .*{why}"):
            loop.run(services.state.save("store", [item("t", ttlInSeconds=bad)]))


def test_an_empty_ttl_is_no_ttl(world: tuple[Loop, Components, Services]) -> None:
    """``ttlInSeconds: ""`` was refused as not an integer; Dapr reads an empty value as not set."""
    loop, _, services = world
    state = services.state
    loop.run(state.save("store", [item("t", ttlInSeconds="100")]))
    loop.run(state.save("store", [item("t", ttlInSeconds="")]))
    assert loop.run(state.get("store", "t")).expires_at is None
    loop.run(state.transact("store", [Op("upsert", item("u", ttlInSeconds=""))], {"ttlInSeconds": ""}))
    assert loop.run(state.get("store", "u")).expires_at is None
    # not set on the item: the transaction's applies
    loop.run(state.transact("store", [Op("upsert", item("u", ttlInSeconds=""))], {"ttlInSeconds": "100"}))
    assert loop.run(state.get("store", "u")).expires_at is not None


def test_a_transaction_s_ttl_reaches_items_with_metadata_of_their_own(world: tuple[Loop, Components, Services]) -> None:
    """An item with metadata of its own ignored the transaction's ttlInSeconds, whatever that
    metadata held: only the item's own ttlInSeconds (not empty) is to stand before it."""
    loop, _, services = world
    state = services.state
    operations = [
        Op("upsert", item("plain")),
        Op("upsert", item("tagged", contentType="text/plain")),
        Op("upsert", item("never", ttlInSeconds="-1")),
        Op("upsert", item("own", ttlInSeconds="1000")),
    ]
    loop.run(state.transact("store", operations, {"ttlInSeconds": "100"}))
    now = time.time()
    left = {k: loop.run(state.get("store", k)).expires_at for k in ("plain", "tagged", "never", "own")}
    assert {k: None if at is None else round(at - now, -2) for k, at in left.items()} == {
        "plain": 100,
        "tagged": 100,
        "never": None,
        "own": 1000,
    }
    with pytest.raises(InvalidArgument, match=r"^metadata\.ttlInSeconds is 'x'"):
        loop.run(state.transact("store", [Op("upsert", item("k", contentType="text/plain"))], {"ttlInSeconds": "x"}))


def test_a_transaction_s_bad_ttl_names_the_map_it_came_from(world: tuple[Loop, Components, Services]) -> None:
    """An operation without metadata of its own takes the request's: a bad ttlInSeconds there
    was blamed on operations[0].request.metadata, a map the caller left empty."""
    loop, _, services = world
    with pytest.raises(InvalidArgument, match=r"^metadata\.ttlInSeconds is 'x'"):
        loop.run(services.state.transact("store", [Op("upsert", item("k"))], {"ttlInSeconds": "x"}))
    with pytest.raises(InvalidArgument, match=r"^operations\[0\]\.request\.metadata\.ttlInSeconds is 'y'"):
        loop.run(services.state.transact("store", [Op("upsert", item("k", ttlInSeconds="y"))], {"ttlInSeconds": "5"}))


def test_state_transaction_and_bulk(world: tuple[Loop, Components, Services]) -> None:
    loop, _, services = world
    state = services.state
    operations = [Op("upsert", item("a")), Op("UPSERT", item("b")), Op("delete", item("a"))]
    loop.run(state.transact("store", operations))
    found = loop.run(state.bulk_get("store", ["a", "b"]))
    assert [(f.key, f.entry and f.entry.value) for f in found] == [("a", None), ("b", b"v")]
    # Layotto and Dapr: an operation type they do not know is UNIMPLEMENTED.
    with pytest.raises(Unimplemented, match=r"operations\[1\]\.operationType is 'merge'"):
        loop.run(state.transact("store", [Op("upsert", item("c")), Op("merge", item("a"))]))
    assert loop.run(state.get("store", "c")) is None
    with pytest.raises(InvalidArgument, match=r"operations\[0\]\.request\.key is empty"):
        loop.run(state.transact("store", [Op("upsert", item(""))]))
    stale = state_item("b", b"", "999", 0, 0, None)
    with pytest.raises(Conflict):
        loop.run(state.delete("store", [item("b", etag=None), stale]))
    assert loop.run(state.get("store", "b")).value == b"v"


def test_features_a_store_lacks_are_refused_by_name(world: tuple[Loop, Components, Services]) -> None:
    loop, components, services = world
    store = components.ready("state")["store"]
    store.features = frozenset()  # this instance now declares no feature
    with pytest.raises(InvalidArgument, match="'store' does not support etags"):
        loop.run(services.state.save("store", [item("k", etag="1")]))
    with pytest.raises(InvalidArgument, match=r"^etag: state store 'store' does not support etags"):
        loop.run(services.state.delete_one("store", item("k", etag="1")))
    with pytest.raises(InvalidArgument, match=r"^key is empty"):
        loop.run(services.state.delete_one("store", item("")))
    # a delete's etag is checked whatever the concurrency, as Layotto's and Dapr's stores check it
    with pytest.raises(InvalidArgument, match=r"^etag: state store 'store' does not support etags"):
        loop.run(services.state.delete_one("store", item("k", etag="1", concurrency=Concurrency.LAST_WRITE)))
    loop.run(services.state.save("store", [item("k", etag="1", concurrency=Concurrency.LAST_WRITE)]))
    loop.run(services.state.save("store", [item("k", ttlInSeconds="-1")]))  # none, which every store keeps
    with pytest.raises(InvalidArgument, match="'store' does not support TTL"):
        loop.run(services.state.save("store", [item("k", ttlInSeconds="5")]))
    with pytest.raises(Unimplemented, match="'store' does not support transactions"):
        loop.run(services.state.transact("store", [Op("upsert", item("k"))]))


def test_a_component_that_is_not_up_is_unavailable_by_name(world: tuple[Loop, Components, Services]) -> None:
    loop, components, services = world
    [slot] = [s for s in components.slots if s.manifest.name == "store"]
    components._mark(slot, Health.DOWN, "redis at 127.0.0.1:1: connection refused")
    with pytest.raises(Unavailable, match=r"state component 'store' .* is DOWN: redis at 127.0.0.1:1"):
        loop.run(services.state.get("store", "k"))
    with pytest.raises(Unavailable):
        loop.run(services.state.save("store", [item("k")]))
    components._mark(slot, Health.UP, "")
    loop.run(services.state.save("store", [item("k")]))


def test_lock_sequencer_secrets_hello(world: tuple[Loop, Components, Services], monkeypatch: Any) -> None:
    loop, _, services = world
    assert loop.run(services.lock.try_lock("locks", "r", "me", 10))
    assert loop.run(services.lock.unlock("locks", "r", "you")) == LockStatus.LOCK_BELONG_TO_OTHERS
    for expire in (0, -1, 2**31):
        with pytest.raises(InvalidArgument, match=f"expire is {expire}"):
            loop.run(services.lock.try_lock("locks", "r", "me", expire))
    with pytest.raises(InvalidArgument, match="lock_owner is empty"):
        loop.run(services.lock.unlock("locks", "r", ""))
    with pytest.raises(InvalidArgument, match="resource_id is empty"):
        loop.run(services.lock.keep_alive("locks", "", "me", 5))
    assert [loop.run(services.sequencer.next_id("ids", "k")) for _ in range(3)] == [11, 12, 13]
    with pytest.raises(InvalidArgument, match="key is empty"):
        loop.run(services.sequencer.next_id("ids", ""))
    monkeypatch.setenv("LAYOTTO_SERVICE_TEST_A", "1")
    assert loop.run(services.secrets.get("env", "A")) == {"A": "1"}  # the store's prefix put before it
    with pytest.raises(InvalidArgument, match="store_name 'state'"):
        loop.run(services.secrets.get("state", "x"))
    assert services.hello.greet("hello", "you") == "hi, you"


def test_configuration_defaults_the_app_id_and_fans_out(world: tuple[Loop, Components, Services]) -> None:
    loop, _, services = world
    configuration = services.configuration
    subscription = configuration.subscription()
    subscription.add("config", "", ["k"])
    loop.run(configuration.save("config", [ConfigItem("", "k", "v1")], {"m": "1"}))
    change = loop.run(subscription.next())
    assert change is not None and change.app_id == "my-app" and [i.content for i in change.items] == ["v1"]
    [saved] = loop.run(configuration.get("config", "my-app", ["k"]))
    assert saved.metadata == {}  # request metadata is not saved into the items, as in Layotto
    with pytest.raises(InvalidArgument, match=r"items\[0\]\.key is empty"):
        loop.run(configuration.save("config", [ConfigItem("", "", "v")]))
    with pytest.raises(InvalidArgument, match="keys is empty"):
        loop.run(configuration.delete("config", "", []))
    with pytest.raises(InvalidArgument, match="keys is empty"):
        subscription.add("config", "", [])
    subscription.close()
    assert configuration.active_subscriptions == 0


def test_a_subscriber_that_stops_reading_is_dropped_by_bytes(world: tuple[Loop, Components, Services]) -> None:
    loop, _, services = world
    configuration = services.configuration
    configuration.max_bytes = 1_000_000
    slow = configuration.subscription()
    slow.add("config", "", ["big"])
    for _ in range(20):  # 20 x 100 KB: over the 1 MB bound after 10
        loop.run(configuration.save("config", [ConfigItem("", "big", "x" * 100_000)]))
    assert configuration.dropped_subscriptions == 1
    with pytest.raises(ResourceExhausted, match="too slow"):
        loop.run(slow.next())
    slow.close()
    assert configuration.active_subscriptions == 0


def test_expired_entries_are_freed_without_being_read() -> None:
    from layotto_fast.components.state.memory import REAP_BATCH, InMemoryStateStore
    from layotto_fast.runtime.state import SetOp

    store = InMemoryStateStore()
    count = REAP_BATCH + 5_000
    asyncio.run(store.set([SetOp(f"k{i}", b"v", ttl_seconds=1) for i in range(count)]))
    asyncio.run(store.set([SetOp("k0", b"rewritten")]))  # no TTL now: must survive
    assert len(store) == count
    later = time.time() + 2
    assert store.reap(later) == REAP_BATCH  # bounded work per tick
    assert store.reap(later) == count - REAP_BATCH - 1
    assert len(store) == 1 and asyncio.run(store.get("k0")).value == b"rewritten"


def test_a_key_rewritten_with_a_ttl_keeps_the_expiry_records_bounded() -> None:
    from layotto_fast.components.state.memory import EXPIRY_SLACK, InMemoryStateStore
    from layotto_fast.runtime.state import SetOp

    store = InMemoryStateStore()

    async def rewrite() -> None:
        for i in range(20_000):
            await store.set([SetOp("session", b"%d" % i, ttl_seconds=86_400)])

    asyncio.run(rewrite())
    assert len(store._expiries) <= 2 + EXPIRY_SLACK + 1
    assert asyncio.run(store.get("session")).value == b"19999"
    later = time.time() + 90_000
    assert store.reap(later) == 1 and len(store) == 0


def test_expired_locks_nobody_asks_about_again_are_swept() -> None:
    from layotto_fast.components.lock.memory import SWEEP_FLOOR, InMemoryLockStore

    store = InMemoryLockStore()

    async def lock_many(first: int) -> None:
        for i in range(first, first + SWEEP_FLOOR):
            assert await store.try_lock(f"order-{i}", "me", 1)

    asyncio.run(lock_many(0))
    time.sleep(1.1)  # the first ones expire, and nobody asks about them again
    asyncio.run(lock_many(SWEEP_FLOOR))
    assert len(store._held) == SWEEP_FLOOR


@pytest.mark.parametrize(
    ("strategy", "stored"),
    [
        (None, "k"),
        ("appid", "my-app||k"),
        ("NAME", "store||k"),
        ("none", "k"),
        ("team-a", "team-a||k"),
        ("Team-A", "team-a||k"),
    ],
)
def test_state_keys_go_behind_the_stores_key_prefix(strategy: str | None, stored: str) -> None:
    """Layotto's keyPrefix strategy for state (default none; Dapr's default is appid; a prefix
    of one's own lower-cased, as both do): every call of the service uses the stored key, and
    answers with the caller's."""
    loop = Loop()
    options = {} if strategy is None else {"keyPrefix": strategy}
    components = Components([manifest("store", "state.in-memory", **options)])
    loop.run(components.init_all())
    try:
        state, store = Services.over(components, "my-app").state, components.ready("state")["store"]
        loop.run(state.save("store", [item("k", b"1")]))
        assert loop.run(store.get(stored)).value == b"1" and len(store) == 1
        assert loop.run(state.get("store", "k")).value == b"1"
        first, missing = loop.run(state.bulk_get("store", ["k", "x"]))
        assert (first.key, first.entry.value, missing.key, missing.entry) == ("k", b"1", "x", None)
        loop.run(state.transact("store", [("upsert", item("t", b"2")), ("delete", item("k"))]))
        assert loop.run(store.get(stored[:-1] + "t")).value == b"2" and loop.run(store.get(stored)) is None
        loop.run(state.delete_one("store", item("t")))
        assert len(store) == 0
        # refused whatever the strategy, as Layotto refuses it (under none too)
        with pytest.raises(InvalidArgument, match=r"keys\[1\] 'a\|\|b' contains '\|\|'"):
            loop.run(state.bulk_get("store", ["k", "a||b"]))
        with pytest.raises(InvalidArgument, match=r"states\[0\]\.key 'a\|\|b' contains"):
            loop.run(state.save("store", [item("a||b")]))
        with pytest.raises(InvalidArgument, match=r"operations\[0\]\.request\.key 'a\|\|b' contains"):
            loop.run(state.transact("store", [("delete", item("a||b"))]))
        with pytest.raises(InvalidArgument, match=r"^key 'a\|\|b' contains"):
            loop.run(state.get("store", "a||b"))
    finally:
        loop.run(components.close_all())
        loop.loop.close()


@pytest.mark.parametrize("type_", ["state.in-memory", "lock.in-memory", "sequencer.in-memory"])
def test_a_key_prefix_with_the_separator_stops_start_up_naming_the_field(type_: str) -> None:
    components = Components([manifest("store", type_, keyPrefix="a||b")])
    with pytest.raises(StartupError, match=r"spec\.metadata\.keyPrefix: 'a\|\|b' contains") as caught:
        Services.over(components, "my-app")
    assert caught.value.source == SOURCE


@pytest.mark.parametrize("type_", ["state.in-memory", "lock.in-memory", "sequencer.in-memory"])
def test_a_key_prefix_from_a_secret_stops_start_up_naming_the_field(type_: str) -> None:
    """The services read the strategy before any secret store runs: a keyPrefix given as a
    secretKeyRef was ignored without a word (the app id's prefix used instead)."""
    from layotto_fast.manifest import SecretRef

    ref = SecretRef("prefixes", "keyPrefix", "spec.metadata[0].secretKeyRef")
    given = ComponentManifest("store", type_, "v1", {}, SOURCE, secret_refs={"keyprefix": ref}, auth_secret_store="v")
    with pytest.raises(StartupError, match="keyPrefix cannot come from a secret") as caught:
        key_prefix(given, "my-app")
    assert caught.value.field == "spec.metadata[0].secretKeyRef"


@pytest.mark.parametrize(
    ("strategy", "app_id", "stored"),
    [
        (None, "my-app", "lock|||my-app||r"),
        ("appid", "my-app", "lock|||my-app||r"),
        ("appid", "", "lock|||r"),
        ("NAME", "my-app", "lock|||locks||r"),
        ("none", "my-app", "lock|||r"),
        ("Team-A", "my-app", "lock|||team-a||r"),  # lower-cased, as Layotto and Dapr do
    ],
)
def test_lock_keys_are_layottos_behind_the_stores_key_prefix(strategy: str | None, app_id: str, stored: str) -> None:
    """Layotto's GetModifiedLockKey: every call of the lock service hands the store
    ``lock|||<prefix>||<resource_id>``, and a resource id with '||' is refused whatever the strategy."""
    loop = Loop()
    options = {} if strategy is None else {"keyPrefix": strategy}
    components = Components([manifest("locks", "lock.in-memory", **options)])
    loop.run(components.init_all())
    try:
        locks, store = Services.over(components, app_id).lock, components.ready("lock")["locks"]
        assert loop.run(locks.try_lock("locks", "r", "me", 10))
        assert loop.run(store.unlock(stored, "you")) == LockStatus.LOCK_BELONG_TO_OTHERS  # held under that key
        assert loop.run(store.unlock("r", "me")) == LockStatus.LOCK_UNEXIST  # not under the id as sent
        assert loop.run(locks.keep_alive("locks", "r", "me", 10)) == LockStatus.SUCCESS
        assert loop.run(locks.unlock("locks", "r", "me")) == LockStatus.SUCCESS
        assert loop.run(store.unlock(stored, "me")) == LockStatus.LOCK_UNEXIST
        calls = (
            lambda: locks.try_lock("locks", "a||b", "me", 10),
            lambda: locks.unlock("locks", "a||b", "me"),
            lambda: locks.keep_alive("locks", "a||b", "me", 10),
        )
        for call in calls:
            with pytest.raises(InvalidArgument, match=r"^resource_id 'a\|\|b' contains '\|\|'"):
                loop.run(call())
    finally:
        loop.run(components.close_all())
        loop.loop.close()


def test_state_conflicts_name_the_key_the_app_sent(world: tuple[Loop, Components, Services]) -> None:
    """The store keeps 'my-app||k' and words its conflicts about that key; the service says
    them again about 'k', on every write that can conflict."""
    loop, _, services = world
    state = services.state
    loop.run(state.save("store", [item("k")]))
    first_write = Concurrency.FIRST_WRITE
    writes = [
        ("etag mismatch for key 'k': given 'stale'", lambda: state.save("store", [item("k", etag="stale")])),
        ("etag mismatch for key 'k'", lambda: state.save("store", [item("x"), item("k", etag="stale")])),
        ("first-write concurrency: key 'k' exists", lambda: state.save("store", [item("k", concurrency=first_write)])),
        ("etag mismatch for key 'k'", lambda: state.delete("store", [item("k", etag="stale")])),
        ("etag mismatch for key 'k'", lambda: state.delete_one("store", item("k", etag="stale"))),
        ("etag mismatch for key 'k'", lambda: state.transact("store", [("delete", item("k", etag="stale"))])),
    ]
    for words, write in writes:
        with pytest.raises(KeyConflict) as caught:
            loop.run(write())
        assert caught.value.message.startswith(words), caught.value.message
        assert "my-app" not in caught.value.message and caught.value.key == "k", caught.value.message


@pytest.mark.parametrize(
    ("strategy", "app_id", "stored"),
    [
        (None, "my-app", "sequencer|||my-app||k"),
        ("appid", "my-app", "sequencer|||my-app||k"),
        ("appid", "", "sequencer|||k"),
        ("NAME", "my-app", "sequencer|||seq||k"),
        ("none", "my-app", "sequencer|||k"),
        ("Team-A", "my-app", "sequencer|||team-a||k"),  # lower-cased, as Layotto does
    ],
)
def test_sequencer_keys_are_layottos_behind_the_stores_key_prefix(
    strategy: str | None, app_id: str, stored: str
) -> None:
    """Layotto's GetModifiedSeqKey: the sequencer service hands the store
    ``sequencer|||<prefix>||<key>``, and a key with '||' is refused whatever the strategy."""
    loop = Loop()
    options = {} if strategy is None else {"keyPrefix": strategy}
    components = Components([manifest("seq", "sequencer.in-memory", **options)])
    loop.run(components.init_all())
    try:
        sequencer, store = Services.over(components, app_id).sequencer, components.ready("sequencer")["seq"]
        assert loop.run(sequencer.next_id("seq", "k")) == 1
        assert loop.run(store.next_id(stored)) == 2  # counted under that key
        assert loop.run(store.next_id("k")) == 1  # not under the key as sent
        assert loop.run(sequencer.next_id("seq", "k")) == 3
        with pytest.raises(InvalidArgument, match=r"^key 'a\|\|b' contains '\|\|'"):
            loop.run(sequencer.next_id("seq", "a||b"))
    finally:
        loop.run(components.close_all())
        loop.loop.close()
