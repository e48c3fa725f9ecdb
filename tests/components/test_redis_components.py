"""lock.redis, sequencer.redis and configuration.redis against a real redis-server and a
real 3-master Redis Cluster (the session fixtures of tests/backends, via tests/conftest.py).

Every test runs on its own event loop and key prefix; a test that stops the shared
server starts it again before it ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from layotto_fast.components.configuration.redis import RedisConfigurationStore
from layotto_fast.components.lock.redis import RedisLockStore
from layotto_fast.components.redis_client import RedisConfig
from layotto_fast.errors import Conflict, FailedPrecondition, ResourceExhausted, StartupError, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery
from layotto_fast.runtime.lock import LockStatus
from layotto_fast.runtime.sequencer import MAX_ID
from layotto_fast.runtime.state import DeleteOp, KeyUnreadable, SetOp, StateEntry
from tests.backends.servers import RedisCluster, RedisServer, free_ports
from tests.components.support import LoopHarness, until
from tests.http_upstream import serving

Backend = RedisServer | RedisCluster


def unique() -> str:
    return uuid.uuid4().hex[:12]


def manifest(type_: str, metadata: dict[str, str], name: str = "test") -> ComponentManifest:
    return ComponentManifest(name=name, type=type_, version="v1", metadata=metadata, source="test.yaml")


class Harness(LoopHarness):
    """A fresh event loop for one test, its components under a key prefix of their own."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.backend = backend
        self.prefix = f"t{unique()}:"

    @property
    def cluster(self) -> bool:
        return isinstance(self.backend, RedisCluster)

    def make(self, type_: str, name: str = "test", **extra: str) -> Any:
        metadata = {"redisHost": self.backend.address, "keyPrefix": self.prefix, **extra}
        if self.cluster:
            metadata["redisType"] = "cluster"
        return self.started(registry.build(manifest(type_, metadata, name)))

    def cli(self, *args: str) -> str:
        return self.backend.cli(*args)


@pytest.fixture(params=["node", "cluster"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    backend = request.getfixturevalue("redis_server" if request.param == "node" else "redis_cluster")
    running = Harness(backend)
    yield running
    running.close()


# --- lock ----------------------------------------------------------------------------------------


def test_lock_is_exclusive_across_two_stores_and_many_contenders(harness: Harness) -> None:
    first, second = harness.make("lock.redis", "first"), harness.make("lock.redis", "second")
    resource = unique()
    holders: list[str] = []
    overlaps: list[tuple[str, str]] = []
    acquired: list[str] = []

    async def contender(store: RedisLockStore, owner: str) -> None:
        wins = 0
        while wins < 2:  # everyone keeps trying while the others hold it
            if await store.try_lock(resource, owner, 10):
                if holders:
                    overlaps.append((holders[0], owner))
                holders.append(owner)
                acquired.append(owner)
                await asyncio.sleep(0.001)
                holders.remove(owner)
                assert await store.unlock(resource, owner) == LockStatus.SUCCESS
                wins += 1
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        contenders = (contender(first if i % 2 else second, f"owner-{i}") for i in range(40))
        await asyncio.wait_for(asyncio.gather(*contenders), 15)

    harness.run(scenario())
    assert not overlaps
    assert len(acquired) == 80 and len(set(acquired)) == 40

    async def burst() -> list[bool]:  # more calls at once than redis-py's pool has connections
        return list(await asyncio.gather(*(first.try_lock(f"{resource}-{i % 150}", f"o{i}", 5) for i in range(300))))

    assert sorted(harness.run(burst())) == [False] * 150 + [True] * 150


def test_lock_owner_only_expiry_and_keep_alive(harness: Harness) -> None:
    locks, other = harness.make("lock.redis"), harness.make("lock.redis", "other")
    r = f"lock|||app||{unique()}"  # as the lock service gives it
    assert harness.run(locks.try_lock(r, "a", 1))
    assert harness.cli("GET", r) == "a"  # Layotto's layout: the key as given, keyPrefix not put before it
    assert not harness.run(other.try_lock(r, "b", 1))
    assert not harness.run(locks.try_lock(r, "a", 1))  # not re-entrant
    assert harness.run(other.unlock(r, "b")) == LockStatus.LOCK_BELONG_TO_OTHERS
    assert harness.run(other.keep_alive(r, "b", 30)) == LockStatus.LOCK_BELONG_TO_OTHERS
    assert int(harness.cli("PTTL", r)) <= 1000  # untouched by the others
    assert harness.run(other.keep_alive(r, "a", 30)) == LockStatus.SUCCESS  # any sidecar, same owner
    assert int(harness.cli("PTTL", r)) > 20_000
    assert harness.run(locks.unlock(r, "a")) == LockStatus.SUCCESS
    assert harness.run(locks.unlock(r, "a")) == LockStatus.LOCK_UNEXIST
    assert harness.run(locks.keep_alive(r, "a", 1)) == LockStatus.LOCK_UNEXIST

    expiring = unique()
    assert harness.run(locks.try_lock(expiring, "a", 1))
    harness.run(asyncio.sleep(1.05))
    assert harness.run(locks.unlock(expiring, "a")) == LockStatus.LOCK_UNEXIST  # expiry released it
    assert harness.run(other.try_lock(expiring, "b", 5))
    assert harness.run(locks.unlock(expiring, "a")) == LockStatus.LOCK_BELONG_TO_OTHERS


# --- sequencer -----------------------------------------------------------------------------------


def test_sequencer_increases_across_stores_concurrency_and_a_restart(harness: Harness) -> None:
    first, second = harness.make("sequencer.redis", "first"), harness.make("sequencer.redis", "second")
    key = unique()
    seen = [harness.run((first if i % 2 else second).next_id(key)) for i in range(30)]
    assert seen == list(range(1, 31))  # strictly increasing in call order, from 1

    async def burst() -> list[int]:  # more calls at once than redis-py's pool has connections
        return list(await asyncio.gather(*(store.next_id(key) for store in (first, second) * 150)))

    ids = harness.run(burst())
    assert sorted(ids) == list(range(31, 331))
    harness.run(first.close())
    again = harness.make("sequencer.redis", "again")
    assert harness.run(again.next_id(key)) == 331
    assert harness.run(second.next_id(key)) == 332
    assert harness.run(again.next_id(unique())) == 1  # keys are independent


def test_sequencer_bigger_than(harness: Harness) -> None:
    key = unique()
    assert harness.run(harness.make("sequencer.redis", "a", biggerThan="1000").next_id(key)) == 1001
    # Layotto's layout: the key as given (the sequencer service's), keyPrefix not put before it.
    assert harness.cli("GET", key) == "1001"
    # A lower floor changes nothing; a higher one (a later manifest) lifts the sequence to it.
    assert harness.run(harness.make("sequencer.redis", "b", biggerThan="5").next_id(key)) == 1002
    big = 2**60 + 7  # beyond a Lua double's exact integers
    assert harness.run(harness.make("sequencer.redis", "c", biggerThan=str(big)).next_id(key)) == big + 1
    assert harness.run(harness.make("sequencer.redis", "d").next_id(key)) == big + 2


def test_sequencer_exhaustion_changes_nothing(harness: Harness) -> None:
    near_end = harness.make("sequencer.redis", biggerThan=str(MAX_ID - 2))
    key = unique()
    assert [harness.run(near_end.next_id(key)) for _ in range(2)] == [MAX_ID - 1, MAX_ID]
    for _ in range(2):
        with pytest.raises(ResourceExhausted, match=key):
            harness.run(near_end.next_id(key))
    assert harness.cli("GET", key) == str(MAX_ID)
    # Set by hand to the last id: exhausted too, and left as it is.
    other = unique()
    harness.cli("SET", other, str(MAX_ID))
    with pytest.raises(ResourceExhausted, match=other):
        harness.run(harness.make("sequencer.redis", "plain").next_id(other))
    assert harness.cli("GET", other) == str(MAX_ID)


def test_a_foreign_value_under_a_key_is_a_failed_precondition(harness: Harness) -> None:
    locks, sequencer = harness.make("lock.redis"), harness.make("sequencer.redis")
    config: RedisConfigurationStore = harness.make("configuration.redis")
    resource, key, app = unique(), unique(), unique()
    harness.cli("HSET", resource, "field", "value")
    harness.cli("SET", key, "not a number")
    harness.cli("SET", config.redis_key(app, "g", "l", "k"), "a string")
    assert not harness.run(locks.try_lock(resource, "a", 5))
    with pytest.raises(FailedPrecondition, match="WRONGTYPE"):
        harness.run(locks.unlock(resource, "a"))
    with pytest.raises(FailedPrecondition, match=key):
        harness.run(sequencer.next_id(key))
    with pytest.raises(FailedPrecondition, match="WRONGTYPE"):
        harness.run(config.save([ConfigItem(app, "k", "v", "g", "l")]))
    assert harness.run(config.get(ConfigQuery(app, ("k",), "g", "l"))) == []  # not an item
    # A value shorter than the floor, or empty, was taken as below it and overwritten.
    floored = harness.make("sequencer.redis", name="floored", biggerThan="1000")
    for value in ("abc", "x1", ""):
        short = unique()
        harness.cli("SET", short, value)
        with pytest.raises(FailedPrecondition, match="not an integer"):
            harness.run(floored.next_id(short))
        assert harness.cli("GET", short) == value


def test_state_writes_without_a_check_version_expire_and_refuse_like_the_script(harness: Harness) -> None:
    # On one node these go out as MULTI/EXEC, with an etag as the Lua script: the same outcome.
    state = harness.make("state.redis")
    timed, plain, foreign = unique(), unique(), unique()
    harness.run(state.set([SetOp(timed, b"a", ttl_seconds=100), SetOp(plain, b"b")]))
    assert 0 < int(harness.cli("PTTL", timed)) <= 100_000
    assert harness.cli("PTTL", plain) == "-1"
    harness.run(state.set([SetOp(timed, b"a1", ttl_seconds=100)]))
    harness.run(state.set([SetOp(timed, b"a2", ttl_seconds=0)]))  # -1 or 0: the expiry goes
    assert harness.cli("PTTL", timed) == "-1"
    harness.run(state.set([SetOp(timed, b"a1", ttl_seconds=100)]))
    harness.run(state.set([SetOp(timed, b"a2")]))  # no ttl: the earlier expiry goes, as Dapr's conformance has it
    assert harness.cli("PTTL", timed) == "-1"
    entry = harness.run(state.get(timed))
    assert entry.value == b"a2"
    # Every write draws a new version (MULTI/EXEC or the script): an integer that Dapr's
    # own HINCRBY can raise.
    first = harness.run(state.get(plain)).etag
    assert entry.etag != first and int(entry.etag) > 0
    harness.run(state.set([SetOp(timed, b"a3", etag=entry.etag)]))
    checked = harness.run(state.get(timed)).etag
    assert checked != entry.etag and int(checked) > 0
    assert harness.cli("HINCRBY", timed, "version", "1") == str(int(checked) + 1)
    with pytest.raises(Conflict):
        harness.run(state.set([SetOp(timed, b"a4", etag=checked)]))
    harness.run(state.delete([DeleteOp(plain)]))
    assert harness.run(state.get(plain)) is None
    harness.cli("SET", foreign, "a string")
    for op in (SetOp(foreign, b"v"), SetOp(foreign, b"v", etag="1")):
        with pytest.raises(FailedPrecondition, match="WRONGTYPE"):
            harness.run(state.set([op]))
    assert harness.cli("GET", foreign) == "a string"
    # A plain string (older Dapr versions wrote state so) is read as its value, with no etag,
    # as Dapr's and Layotto's stores read it; it was refused. Another type still refuses.
    plain_string = harness.run(state.get(foreign))
    assert plain_string is not None and (plain_string.value, plain_string.etag) == (b"a string", "")
    listed = unique()
    harness.cli("RPUSH", listed, "an item")
    with pytest.raises(FailedPrecondition, match="refused the read: WRONGTYPE"):  # not INTERNAL
        harness.run(state.get(listed))
    # In a bulk read the other keys are still read, and the foreign one says why it was not
    # (Layotto answers each key of GetBulkState on its own).
    harness.run(state.set([SetOp(plain, b"b2")]))
    read, string, refused, missing = harness.run(state.bulk_get([plain, foreign, listed, unique()]))
    assert isinstance(read, StateEntry) and read.value == b"b2"
    assert isinstance(string, StateEntry) and (string.value, string.etag) == (b"a string", "")
    assert isinstance(refused, KeyUnreadable) and "refused the read: WRONGTYPE" in refused.reason
    assert missing is None


def test_the_manifests_ttl_is_every_write_s_that_gives_none(harness: Harness) -> None:
    """Dapr's store-wide ``ttlInSeconds``: it was ignored, and no key ever expired. A write's
    own ttl (-1: none) still comes first, on every path (one write, MULTI/EXEC, the script)."""
    state = harness.make("state.redis", ttlInSeconds="100")
    tag = unique()
    one, own, persisted, checked, other = (f"{{{tag}}}{name}" for name in ("one", "own", "none", "checked", "other"))
    harness.run(state.set([SetOp(one, b"v")]))
    harness.run(state.set([SetOp(own, b"v", ttl_seconds=5), SetOp(persisted, b"v", ttl_seconds=0)]))
    harness.run(state.transact([SetOp(checked, b"v", first_write=True), SetOp(other, b"v")]))
    ttls = {key: int(harness.cli("PTTL", key)) for key in (one, own, persisted, checked, other)}
    assert 0 < ttls[one] <= 100_000 and 0 < ttls[own] <= 5_000 and ttls[persisted] == -1, ttls
    assert 5_000 < ttls[checked] <= 100_000 and 5_000 < ttls[other] <= 100_000, ttls


def test_a_transaction_over_a_key_of_another_type_writes_nothing(harness: Harness) -> None:
    """``SET b plain`` then a transaction [upsert a, upsert b] was refused with WRONGTYPE
    after ``a`` was written: MULTI/EXEC has no rollback, and the script failed mid-write."""
    state = harness.make("state.redis")
    tag = unique()  # one hash slot, so that a cluster takes the transactions
    a, b, c = f"{{{tag}}}a", f"{{{tag}}}b", f"{{{tag}}}c"
    harness.cli("SET", b, "plain")
    harness.run(state.set([SetOp(c, b"c0")]))
    etag = harness.run(state.get(c)).etag
    transactions = [
        [SetOp(a, b"a"), SetOp(b, b"b")],  # nothing to check: was MULTI/EXEC on one node
        [SetOp(a, b"a", first_write=True), SetOp(b, b"b")],  # first-write: the script
        [SetOp(c, b"c1", etag=etag), DeleteOp(a), SetOp(b, b"b", ttl_seconds=5)],  # an etag: the script
    ]
    for ops in transactions:
        with pytest.raises(FailedPrecondition) as refused:
            harness.run(state.transact(ops))
        assert harness.cli("EXISTS", a) == "0", ops
        assert (harness.cli("GET", b), harness.cli("TTL", b)) == ("plain", "-1"), ops
        assert harness.run(state.get(c)).etag == etag, ops
        assert f"WRONGTYPE key {b!r} holds a string" in refused.value.message
    # The check follows the operations in order: deleted first, the key can be written.
    harness.run(state.transact([DeleteOp(b), SetOp(b, b"b"), SetOp(a, b"a")]))
    assert [harness.run(state.get(k)).value for k in (a, b)] == [b"a", b"b"]


def two_slots() -> tuple[str, str]:
    """Keys in two hash slots: a cluster checks them all before it writes either slot."""
    while True:
        a, b = f"{{{unique()}}}a", f"{{{unique()}}}b"
        if key_slot(a.encode()) != key_slot(b.encode()):
            return a, b


def test_a_key_of_another_type_among_two_slots_is_refused_as_on_one_node(harness: Harness) -> None:
    """On a cluster the etags of a request over several slots are read first, and a key of
    another type came out of that read as redis-py's own ResponseError (INTERNAL), where a
    single node's script says FAILED_PRECONDITION "WRONGTYPE ..."."""
    state = harness.make("state.redis")
    written, foreign = two_slots()
    harness.cli("SET", foreign, "a string")
    harness.run(state.set([SetOp(written, b"old")]))
    etag = harness.run(state.get(written)).etag
    requests: list[Callable[[], Coroutine[Any, Any, None]]] = [
        lambda: state.set([SetOp(written, b"new"), SetOp(foreign, b"v", etag="1")]),
        lambda: state.set([SetOp(written, b"new"), SetOp(foreign, b"v", first_write=True)]),
        lambda: state.delete([DeleteOp(written, etag=etag), DeleteOp(foreign, etag="1")]),
    ]
    for request in requests:
        with pytest.raises(FailedPrecondition) as refused:
            harness.run(request())
        assert f"WRONGTYPE key {foreign!r} holds a string, not a state entry" in refused.value.message
        assert harness.run(state.get(written)).value == b"old"
    assert harness.cli("GET", foreign) == "a string"


def test_a_request_over_two_slots_is_checked_against_what_its_earlier_operations_leave(harness: Harness) -> None:
    """A cluster's check of a request over several slots read each etag from the store only:
    two operations on a key with the same etag, or first-write twice, passed it, the first
    slot was written, and the next slot's script refused the request. Checked now as the
    script and the in-memory store do: a later operation is checked against what the earlier
    ones of the request leave."""
    state = harness.make("state.redis")
    other, key = two_slots()

    def values() -> list[bytes | None]:
        return [None if (entry := harness.run(state.get(k))) is None else entry.value for k in (other, key)]

    harness.run(state.set([SetOp(other, b"o0"), SetOp(key, b"k0")]))
    other_etag, key_etag = (harness.run(state.get(k)).etag for k in (other, key))
    writes = [
        [SetOp(other, b"o1", etag=other_etag), SetOp(key, b"k1", etag=key_etag), SetOp(key, b"k2", etag=key_etag)],
        [SetOp(other, b"o1", etag=other_etag), SetOp(key, b"k1"), SetOp(key, b"k2", etag=key_etag)],
        [SetOp(other, b"o1", etag=other_etag), SetOp(key, b"k1"), SetOp(key, b"k2", first_write=True)],
    ]
    for ops in writes:
        with pytest.raises(Conflict, match=repr(key)):
            harness.run(state.set(ops))
        assert values() == [b"o0", b"k0"], ops
    deletes = [
        [DeleteOp(other, etag=other_etag), DeleteOp(key, etag=key_etag), DeleteOp(key, etag=key_etag)],
        [DeleteOp(other, etag=other_etag), DeleteOp(key), DeleteOp(key, etag=key_etag)],
    ]
    for removal in deletes:
        with pytest.raises(Conflict, match=repr(key)):
            harness.run(state.delete(removal))
        assert values() == [b"o0", b"k0"], removal
    harness.cli("DEL", key)
    with pytest.raises(Conflict, match=repr(key)):  # first-write twice, the key absent
        harness.run(
            state.set([SetOp(other, b"o1"), SetOp(key, b"k1", first_write=True), SetOp(key, b"k2", first_write=True)])
        )
    assert values() == [b"o0", None]
    # What the earlier operations leave also lets a later one through.
    harness.run(state.set([SetOp(key, b"k0")]))
    harness.run(state.delete([DeleteOp(other, etag=other_etag), DeleteOp(key), DeleteOp(key, first_write=True)]))
    assert values() == [None, None]


def test_a_read_only_or_full_redis_is_unavailable_with_its_reason(tmp_path: Path) -> None:
    """A replica's READONLY or an OOM came back as FAILED_PRECONDITION "EXECABORT ...": EXEC
    only says the transaction was discarded, the queued command's reply says why."""
    with RedisServer(tmp_path) as server:
        harness = LoopHarness(server)
        try:
            state: Any = harness.started(registry.build(manifest("state.redis", {"redisHost": server.address})))
            harness.run(state.set([SetOp("k", b"before")]))
            etag = harness.run(state.get("k")).etag
            writes: list[Callable[[], Coroutine[Any, Any, None]]] = [
                lambda: state.set([SetOp("k", b"plain")]),  # MULTI/EXEC
                lambda: state.set([SetOp("k", b"timed", ttl_seconds=5), SetOp("other", b"x")]),
                lambda: state.set([SetOp("k", b"checked", etag=etag)]),  # the script
                lambda: state.transact([SetOp("k", b"t"), DeleteOp("other")]),
            ]
            deletes: list[Callable[[], Coroutine[Any, Any, None]]] = [lambda: state.delete([DeleteOp("k")])]
            for reason, refuse, allow, refused in (
                ("READONLY", ("REPLICAOF", "127.0.0.1", "1"), ("REPLICAOF", "NO", "ONE"), writes + deletes),
                ("OOM", ("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "SET", "maxmemory", "0"), writes),
            ):
                server.cli(*refuse)
                for write in refused:
                    with pytest.raises(Unavailable, match=f"redis at {server.address}: {reason} "):
                        harness.run(write())
                assert harness.run(state.get("k")).value == b"before"  # the connection still in step
                server.cli(*allow)
            harness.run(state.set([SetOp("k", b"after")]))
            assert harness.run(state.get("k")).value == b"after"
        finally:
            harness.close()


@contextmanager
def replica_asleep(server: RedisServer, seconds: float) -> Iterator[float]:
    """``server`` asked to sleep ``seconds`` (DEBUG SLEEP, sent without waiting for its answer):
    the time just before the request went, which the sleep ends no sooner than ``seconds`` after.
    Its OK is read when the block ends."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        asked = time.monotonic()
        sock.sendall(b"DEBUG SLEEP %g\r\n" % seconds)
        yield asked
        assert sock.recv(64).startswith(b"+OK")


def test_a_strong_write_waits_for_the_replicas(tmp_path: Path) -> None:
    """CONSISTENCY_STRONG was ignored: Dapr sends ``WAIT <replicas> 1000`` after a strong write
    when the server has replicas. Here the replica is asleep: a strong write returns once it
    has woken and acknowledged, while the other calls go on meanwhile."""
    with (
        RedisServer(tmp_path / "primary", extra_args=["--repl-diskless-sync-delay", "0"]) as primary,
        RedisServer(tmp_path / "replica", extra_args=["--enable-debug-command", "yes"]) as replica,
    ):
        replica.cli("REPLICAOF", primary.host, str(primary.port))
        deadline = time.monotonic() + 10
        while "master_link_status:up" not in replica.cli("INFO", "replication"):
            assert time.monotonic() < deadline, replica.cli("INFO", "replication")
            time.sleep(0.05)
        harness = LoopHarness(primary)
        try:
            state: Any = harness.started(registry.build(manifest("state.redis", {"redisHost": primary.address})))
            writes: list[Callable[[], Coroutine[Any, Any, None]]] = [
                lambda: state.set([SetOp("k", b"strong", strong=True)]),
                lambda: state.transact([SetOp("t", b"strong", strong=True), DeleteOp("k", strong=True)]),
            ]

            async def while_the_replica_sleeps(write: Callable[[], Coroutine[Any, Any, None]]) -> tuple[float, float]:
                """When the plain write ended, and when the strong one did."""
                waiting = asyncio.ensure_future(write())
                await state.set([SetOp("other", b"plain")])  # not held behind the WAIT
                other = time.monotonic()
                await waiting
                return other, time.monotonic()

            primary.cli("SCRIPT", "FLUSH")  # Redis forgot the script: loaded again, then the write and its WAIT
            for write in writes:
                # Timed from the sleep's request: the replica wakes no sooner than 0.6 s after it,
                # however late a busy machine runs the rest.
                with replica_asleep(replica, 0.6) as asleep_from:
                    time.sleep(0.1)  # the replica takes the sleep up before the write's WAIT comes
                    other, strong = harness.run(while_the_replica_sleeps(write))
                other, strong = other - asleep_from, strong - asleep_from
                assert other < 0.5, f"the plain write waited for the replica to wake: {(other, strong)}"
                assert 0.5 <= strong < 2.0, f"the strong write did not wait for the replica: {(other, strong)}"
            assert replica.cli("HGET", "t", "data") == "strong" and replica.cli("EXISTS", "k") == "0"
            with pytest.raises(Conflict, match="etag mismatch for key 't'"):  # refused before the WAIT
                harness.run(state.set([SetOp("t", b"stale", etag="1", strong=True)]))
            with pytest.raises(Conflict, match="first-write"):
                harness.run(state.transact([SetOp("t", b"again", first_write=True, strong=True)]))
            assert replica.cli("HGET", "t", "data") == "strong"
            with replica_asleep(replica, 0.6) as asleep_from:  # a write that asks nothing does not wait
                time.sleep(0.1)
                harness.run(state.set([SetOp("k", b"eventual")]))
                assert time.monotonic() - asleep_from < 0.5, "it waited for the replica to wake"
            # A full primary refuses the strong write too, through redis-py's client: its
            # OutOfMemoryError (the code taken out of the message) is UNAVAILABLE as well.
            primary.cli("CONFIG", "SET", "maxmemory", "1")
            try:
                with pytest.raises(Unavailable, match="maxmemory"):
                    harness.run(state.set([SetOp("k", b"strong", strong=True)]))
            finally:
                primary.cli("CONFIG", "SET", "maxmemory", "0")
            # Replicas come and go: a ping reads how many are connected now, and a strong
            # write with none left does not wait for one.
            replica.cli("REPLICAOF", "NO", "ONE")
            deadline = time.monotonic() + 10
            while "connected_slaves:0" not in primary.cli("INFO", "replication"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            harness.run(state.ping())
            started = time.monotonic()
            harness.run(state.set([SetOp("k", b"strong", strong=True)]))
            assert time.monotonic() - started < 0.5, "no WAIT for a replica that left"
        finally:
            harness.close()


def test_commands_past_the_pool_wait_for_a_connection(redis_server: RedisServer) -> None:
    """redis-py's pool failed a command at once ("Too many connections") when every connection
    was taken: a burst of strong writes (each holding one through its WAIT) or blocking reads
    failed UNAVAILABLE, and a health ping beside them marked the store DOWN."""

    async def burst() -> list[Any]:
        config = RedisConfig(host=redis_server.host, port=redis_server.port, pool_size=2)
        client = config.connect()
        try:
            key = f"empty-{unique()}"
            return await asyncio.gather(*(client.blpop([key], timeout=0.1) for _ in range(6)))
        finally:
            await client.aclose()

    started = time.monotonic()
    assert asyncio.run(burst()) == [None] * 6
    assert time.monotonic() - started >= 0.25, "two at a time: three rounds of 0.1 s"

    async def first_step_outside_a_task() -> Any:
        """The native transport runs a handler's first step in no Task: the wait must not need
        one (redis-py's BlockingConnectionPool waits under asyncio.timeout, which raised
        RuntimeError there)."""
        client = RedisConfig(host=redis_server.host, port=redis_server.port, pool_size=1).connect()
        loop = asyncio.get_running_loop()
        stepped: asyncio.Future[Any] = loop.create_future()
        try:
            holding = asyncio.ensure_future(client.blpop([f"empty-{unique()}"], timeout=0.2))
            await asyncio.sleep(0.05)  # the pool's one connection is taken
            ping = client.ping()

            def step() -> None:
                assert asyncio.current_task() is None
                try:
                    stepped.set_result(ping.send(None))
                except BaseException as exc:
                    stepped.set_exception(exc)

            loop.call_soon(step)
            awaited = await stepped
            ping.close()
            await holding
            return awaited
        finally:
            await client.aclose()

    assert isinstance(asyncio.run(first_step_outside_a_task()), asyncio.Future), "waiting for a connection"


@pytest.mark.parametrize(
    ("given", "read", "dial"),
    [({}, 3.0, 5.0), ({"readTimeout": "0", "dialTimeout": "0"}, 3.0, 5.0), ({"readTimeout": "-1"}, 0.0, 5.0),
     ({"readTimeout": "-1s"}, 0.0, 5.0), ({"readTimeout": "250", "dialTimeout": "2s"}, 0.25, 2.0)],
)  # fmt: skip
def test_a_zero_timeout_is_the_default_and_minus_one_no_read_timeout(
    given: dict[str, str], read: float, dial: float
) -> None:
    """As Dapr reads them: 0 turned both timeouts off (a silent Redis then held calls for ever),
    and Dapr's -1 ("no read timeout") stopped start-up."""
    config = RedisConfig.from_manifest(manifest("lock.redis", {"redisHost": "h:1", **given}))
    assert (config.read_timeout, config.dial_timeout) == (read, dial)


@pytest.mark.parametrize(
    ("given", "wait"),
    [({}, 4.0), ({"readTimeout": "500ms"}, 1.5), ({"readTimeout": "-1"}, 30.0), ({"poolTimeout": "10s"}, 10.0)],
)
def test_a_command_waits_for_a_pooled_connection_as_long_as_go_redis_lets_dapr(
    given: dict[str, str], wait: float
) -> None:
    """Dapr's poolTimeout, else go-redis's default (readTimeout + 1 s, 30 s without one)."""
    assert RedisConfig.from_manifest(manifest("lock.redis", {"redisHost": "h:1", **given})).pool_wait == wait


def test_layottos_db_setting_chooses_the_database() -> None:
    """Layotto's Redis components name the database db (Dapr's redisDB, which wins when both
    are there): it was ignored, and a copied Layotto manifest used database 0, apart from
    Layotto's sidecars on the database it named."""
    assert RedisConfig.from_manifest(manifest("lock.redis", {"redisHost": "h:1", "db": "2"})).db == 2
    assert RedisConfig.from_manifest(manifest("lock.redis", {"redisHost": "h:1", "db": "2", "redisDB": "3"})).db == 3
    assert RedisConfig.from_manifest(manifest("lock.redis", {"redisHost": "h:1", "db": "2", "redisDB": ""})).db == 2
    with pytest.raises(StartupError) as raised:
        RedisConfig.from_manifest(manifest("lock.redis", {"redisHost": "h:1", "db": "2", "redisType": "cluster"}))
    assert raised.value.field == "spec.metadata.db"


def test_dapr_s_redis_port_and_max_retries_names_are_read() -> None:
    """Dapr's redisPort (for a redisHost without one) and redisMaxRetries (before maxRetries)
    were ignored: such a manifest reached port 6379, perhaps another Redis."""

    def read(**metadata: str) -> RedisConfig:
        return RedisConfig.from_manifest(manifest("pubsub.redis", metadata))

    assert read(redisHost="redis-master", redisPort="6380").address == "redis-master:6380"
    assert read(redisHost="redis-master:6381", redisPort="6380").address == "redis-master:6381"
    assert read(redisHost="redis-master").address == "redis-master:6379"
    assert read(redisHost="h", redisMaxRetries="7", maxRetries="2").max_retries == 7
    assert read(redisHost="h", maxRetries="2").max_retries == 2
    assert read(redisHost="h", redisMaxRetries="-1").max_retries == 0, "Dapr's -1: no retries"


@pytest.mark.parametrize(
    ("name", "value"),
    [("failover", "true"), ("sentinelMasterName", "mymaster"), ("clientCert", "PEM"), ("insecureSkipTLSVerify", "true"),
     ("useEntraID", "true"), ("useAzureAD", "true"), ("useOIDC", "1")],
)  # fmt: skip
def test_dapr_s_redis_settings_not_supported_stop_start_up(name: str, value: str) -> None:
    """Accepted and ignored before: a Sentinel address was talked to as the master (readiness
    UP, every write refused), a skipped certificate check was checked."""
    with pytest.raises(StartupError, match="not supported") as raised:
        RedisConfig.from_manifest(manifest("state.redis", {"redisHost": "h:1", name: value}))
    assert raised.value.field == f"spec.metadata.{name}"
    for off in ("false", "0", "off", "no", ""):  # Dapr's docs write them so: nothing asked for
        RedisConfig.from_manifest(manifest("state.redis", {"redisHost": "h:1", "failover": off}))


@pytest.mark.parametrize(
    ("type_", "metadata", "field"),
    [
        ("sequencer.redis", {"biggerThan": "-1"}, "spec.metadata.biggerThan"),
        ("sequencer.redis", {"biggerThan": "ten"}, "spec.metadata.biggerThan"),
        ("sequencer.redis", {"biggerThan": str(MAX_ID)}, "spec.metadata.biggerThan"),
        ("lock.redis", {"redisType": "sentinel"}, "spec.metadata.redisType"),
        ("configuration.redis", {"redisHost": ""}, "spec.metadata.redisHost"),
        ("configuration.redis", {"redisDB": "x"}, "spec.metadata.redisDB"),
        # Dapr's list of cluster seeds: was read as host "a:6379,b", a DNS failure at init
        ("state.redis", {"redisHost": "a:6379,b:6379", "redisType": "cluster"}, "spec.metadata.redisHost"),
        ("pubsub.redis", {"redisHost": "a:6379,b:6379"}, "spec.metadata.redisHost"),
        ("state.redis", {"ttlInSeconds": "soon"}, "spec.metadata.ttlInSeconds"),
        ("state.redis", {"ttlInSeconds": "-2"}, "spec.metadata.ttlInSeconds"),
    ],
)
def test_bad_metadata_names_the_field(type_: str, metadata: dict[str, str], field: str) -> None:
    with pytest.raises(StartupError) as raised:
        registry.build(manifest(type_, {"redisHost": "127.0.0.1:6379", **metadata}))
    assert raised.value.field == field and raised.value.source == "test.yaml"


def test_init_fails_when_redis_does_not_answer() -> None:
    [port] = free_ports(1)
    for type_ in ("lock.redis", "sequencer.redis", "configuration.redis"):
        component = registry.build(manifest(type_, {"redisHost": f"127.0.0.1:{port}", "dialTimeout": "1s"}))
        started = time.monotonic()
        with pytest.raises(Unavailable, match=f"127.0.0.1:{port}"):
            asyncio.run(component.init())
        assert time.monotonic() - started < 3


# --- configuration -------------------------------------------------------------------------------


def test_configuration_get_save_delete_with_filters(harness: Harness) -> None:
    store = harness.make("configuration.redis")
    app, other_app = f"app|{unique()}", unique()  # a separator inside a name stays inside it
    items = [
        ConfigItem(app, "db", "blue-db", "g1", "blue", tags={"owner": "ops"}, metadata={"m": "1"}),
        ConfigItem(app, "db", "red-db", "g1", "red"),
        ConfigItem(app, "db", "g2-db", "g2", ""),
        ConfigItem(app, "cache", "c", "g1", "blue"),
        ConfigItem(app, "50%7C", "odd", "a|b", "%25"),
        ConfigItem(other_app, "db", "other"),
    ]
    harness.run(store.save(items))

    def get(keys: tuple[str, ...] = (), group: str = "", label: str = "", app_id: str = app) -> list[str]:
        return [item.content for item in harness.run(store.get(ConfigQuery(app_id, keys, group, label)))]

    assert get() == ["odd", "c", "blue-db", "red-db", "g2-db"]  # sorted by key, group, label
    assert get(("db",)) == ["blue-db", "red-db", "g2-db"]  # empty group and label match any
    assert get(("db",), group="g1") == ["blue-db", "red-db"]
    assert get(("db",), label="red") == ["red-db"]
    assert get(("db", "cache"), "g1", "blue") == ["c", "blue-db"]  # exact keys, no scan
    assert get(("db", "missing"), "g1", "blue") == ["blue-db"]
    assert get(("50%7C",), "a|b", "%25") == ["odd"]
    assert get(app_id=other_app) == ["other"]
    assert get(app_id=unique()) == []
    [blue] = harness.run(store.get(ConfigQuery(app, ("db",), "g1", "blue")))
    assert blue == items[0]

    # The documented layout: a hash per item, readable and writable with redis-cli.
    redis_key = store.redis_key(app, "g1", "blue", "db")
    assert redis_key == f"{harness.prefix}app%7C{app.split('|')[1]}|g1|blue|db"
    assert harness.cli("HGET", redis_key, "content") == "blue-db"
    assert harness.cli("HGET", redis_key, "tags") == '{"owner":"ops"}'
    harness.cli("HSET", store.redis_key(app, "g3", "", "db"), "content", "by-hand")
    assert get(("db",), group="g3") == ["by-hand"]
    harness.cli("SET", store.redis_key(app, "g4", "", "db"), "not a hash")  # not an item: skipped
    assert get(("db",), group="g4") == []

    harness.run(store.delete(ConfigQuery(app, ("db",), label="blue")))
    assert get(("db",)) == ["red-db", "g2-db", "by-hand"]
    harness.run(store.delete(ConfigQuery(app, ("db", "cache"), group="g1")))
    assert get() == ["odd", "g2-db", "by-hand"]
    harness.run(store.delete(ConfigQuery(app, ("nothing-here",))))
    assert get(app_id=other_app) == ["other"]

    async def burst() -> list[list[ConfigItem]]:  # more calls at once than redis-py's pool has connections
        return list(await asyncio.gather(*(store.get(ConfigQuery(other_app, ("db",))) for _ in range(150))))

    assert all([item.content for item in items] == ["other"] for items in harness.run(burst()))


def test_configuration_watch_sees_changes_from_another_store_and_redis_cli(harness: Harness) -> None:
    watcher, writer = harness.make("configuration.redis", "watcher"), harness.make("configuration.redis", "writer")
    app, key = unique(), unique()
    seen: list[list[ConfigItem]] = []
    blue_only: list[list[ConfigItem]] = []
    cancel_all = watcher.watch(ConfigQuery(app, (key,)), seen.append)
    watcher.watch(ConfigQuery(app, (key,), label="blue"), blue_only.append)

    def contents() -> list[list[str]]:
        return [[item.content for item in batch] for batch in seen]

    async def wait_for(count: int) -> None:
        started = time.monotonic()
        assert await until(lambda: len(seen) >= count, 1.0), f"only {contents()} within 1 s"
        assert time.monotonic() - started < 1.0

    harness.run(writer.save([ConfigItem(app, key, "v1", "g", "blue", tags={"t": "1"})]))
    harness.run(wait_for(1))
    assert seen[0] == [ConfigItem(app, key, "v1", "g", "blue", tags={"t": "1"})]

    harness.cli("HSET", watcher.redis_key(app, "g", "blue", key), "content", "v2")  # a direct change
    harness.run(wait_for(2))
    assert seen[1] == [ConfigItem(app, key, "v2", "g", "blue", tags={"t": "1"})]

    harness.cli("HSET", watcher.redis_key(app, "g", "red", key), "content", "r1")
    harness.run(wait_for(3))
    assert contents()[2] == ["r1"]

    harness.run(watcher.save([ConfigItem(app, key, "v3", "g", "blue")]))  # through the watching store
    harness.run(wait_for(4))
    assert contents()[3] == ["v3"]

    harness.cli("DEL", watcher.redis_key(app, "g", "blue", key))
    harness.run(wait_for(5))
    assert seen[4] == [ConfigItem(app, key, "", "g", "blue")]  # deleted: empty content

    harness.run(writer.delete(ConfigQuery(app, (key,), label="red")))
    harness.run(wait_for(6))
    assert contents()[5] == [""] and seen[5][0].label == "red"

    # Changes of other keys, apps, or that change nothing, are not reported.
    harness.run(writer.save([ConfigItem(app, unique(), "x"), ConfigItem(unique(), key, "y")]))
    harness.cli("HSET", watcher.redis_key(app, "g", "green", key), "content", "g1")
    harness.cli("HSET", watcher.redis_key(app, "g", "green", key), "content", "g1")
    harness.run(wait_for(7))
    harness.run(asyncio.sleep(0.2))
    assert contents() == [["v1"], ["v2"], ["r1"], ["v3"], [""], [""], ["g1"]]
    assert [[item.content for item in batch] for batch in blue_only] == [["v1"], ["v2"], ["v3"], [""]]

    cancel_all()
    harness.cli("HSET", watcher.redis_key(app, "g", "green", key), "content", "g2")
    harness.run(asyncio.sleep(0.2))
    assert len(seen) == 7 and watcher.watch_count == 1


def test_configuration_in_another_db_under_a_prefix_with_glob_characters(redis_server: RedisServer) -> None:
    tag = unique()
    prefix = f"cfg*[{tag}]?:"
    metadata = {"redisHost": redis_server.address, "redisDB": "3", "keyPrefix": prefix}
    store = RedisConfigurationStore.from_manifest(manifest("configuration.redis", metadata))
    app = unique()
    seen: list[list[ConfigItem]] = []

    async def scenario() -> list[ConfigItem]:
        await store.init()
        try:
            store.watch(ConfigQuery(app, ("k",)), seen.append)
            # Keys the pattern must not take for the store's: in db 0, and under a look-alike prefix.
            redis_server.cli("HSET", store.redis_key(app, "", "", "k"), "content", "db0")
            look_alike = f"cfgZ{tag[0]}Q:{app}|||k"  # matched by the prefix taken as a glob
            redis_server.cli("-n", "3", "HSET", look_alike, "content", "look-alike")
            redis_server.cli("-n", "3", "HSET", store.redis_key(app, "", "", "k"), "content", "db3")
            assert await until(lambda: len(seen) == 1, 1.0)
            await asyncio.sleep(0.1)
            return await store.get(ConfigQuery(app))
        finally:
            await store.close()

    assert [item.content for item in asyncio.run(scenario())] == ["db3"]
    assert [[item.content for item in batch] for batch in seen] == [["db3"]]


def test_configuration_tolerates_a_server_that_refuses_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer(tmp_path, extra_args=["--rename-command", "CONFIG", ""]) as server:
        store = RedisConfigurationStore.from_manifest(manifest("configuration.redis", {"redisHost": server.address}))

        async def scenario() -> list[ConfigItem]:
            await store.init()
            try:
                await store.save([ConfigItem("app", "k", "v")])
                return await store.get(ConfigQuery("app", ("k",)))
            finally:
                await store.close()

        with caplog.at_level(logging.WARNING, "layotto_fast.components.configuration.redis"):
            assert [item.content for item in asyncio.run(scenario())] == ["v"]
        assert "refused CONFIG" in caplog.text and "notify-keyspace-events" in caplog.text


# --- Redis goes away and comes back --------------------------------------------------------------


def test_redis_down_then_back_with_the_same_components(harness: Harness) -> None:
    locks = harness.make("lock.redis")
    sequencer = harness.make("sequencer.redis")
    config: RedisConfigurationStore = harness.make("configuration.redis")
    app, key = unique(), unique()
    seen: list[list[ConfigItem]] = []
    config.watch(ConfigQuery(app, (key,)), seen.append)
    harness.run(config.save([ConfigItem(app, key, "before")]))
    assert harness.run(until(lambda: len(seen) == 1, 1.0))

    harness.backend.stop()
    operations: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        lambda: locks.try_lock(unique(), "a", 5),
        lambda: locks.unlock(unique(), "a"),
        lambda: locks.keep_alive(unique(), "a", 5),
        lambda: sequencer.next_id(key),
        lambda: config.get(ConfigQuery(app, (key,))),
        lambda: config.save([ConfigItem(app, key, "during")]),
        lambda: config.delete(ConfigQuery(app, (key,))),
        locks.ping,
        sequencer.ping,
        config.ping,
    ]
    for operation in operations:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="redis at"):
            harness.run(operation())
        assert time.monotonic() - started < 3

    harness.backend.start()  # empty: nothing is persisted
    assert harness.run(locks.try_lock(key, "a", 5))
    assert harness.run(locks.unlock(key, "a")) == LockStatus.SUCCESS
    assert harness.run(sequencer.next_id(key)) == 1
    assert harness.run(config.get(ConfigQuery(app, (key,)))) == []
    harness.run(sequencer.ping())
    # The watch subscribes again and reports what changed meanwhile: the item is gone.
    assert harness.run(until(lambda: len(seen) == 2, 5.0)), seen
    assert seen[1] == [ConfigItem(app, key, "")]
    harness.cli("HSET", config.redis_key(app, "", "", key), "content", "after")
    assert harness.run(until(lambda: len(seen) == 3, 1.0)), seen
    assert seen[2] == [ConfigItem(app, key, "after")]


class _NotRedis(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(400)


@pytest.mark.parametrize("type_", ["state.redis", "lock.redis", "sequencer.redis", "configuration.redis",
                                   "pubsub.redis"])  # fmt: skip
def test_a_redis_host_that_is_not_redis_fails_init_naming_the_component_and_the_address(type_: str) -> None:
    """An HTTP server at ``redisHost`` (a wrong port) answers a protocol error: the reason
    names the component and the address, as a refused connection's does."""
    with serving(_NotRedis) as address:
        component = registry.implementation(type_).from_manifest(manifest(type_, {"redisHost": address}))  # type: ignore[union-attr]
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(Unavailable) as failed:
                loop.run_until_complete(asyncio.wait_for(component.init(), 10))
            loop.run_until_complete(component.close())
        finally:
            loop.close()
    assert f"test ({type_}): redis at {address}: the server there does not speak Redis" in failed.value.message
