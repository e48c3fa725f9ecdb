"""lock.etcd, sequencer.etcd and configuration.etcd against a real etcd (the session
fixture of tests/backends).

Each test runs on its own event loop (``asyncio.run``) and key prefix; two component
instances on one etcd stand for two sidecars. The test that stops the shared server
starts it again before it ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent import futures
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from layotto_fast.components.etcd_client import EtcdConfig, op_get, op_put, range_kvs, same_create
from layotto_fast.components.lock.etcd import EtcdLockStore
from layotto_fast.components.sequencer.etcd import EtcdSequencer
from layotto_fast.errors import InvalidArgument, ResourceExhausted, StartupError, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery
from layotto_fast.runtime.lifecycle import PING_TIMEOUT_SECONDS
from layotto_fast.runtime.lock import LockStatus
from layotto_fast.runtime.sequencer import MAX_ID
from tests.backends.servers import EtcdServer, free_ports

WATCH_DEADLINE = 1.0  # a change must reach a watcher within this many seconds


def unique() -> str:
    return uuid.uuid4().hex[:12]


def manifest(type_: str, metadata: dict[str, str], name: str = "test") -> ComponentManifest:
    return ComponentManifest(name=name, type=type_, version="v1", metadata=metadata, source="test.yaml")


@asynccontextmanager
async def components(etcd: EtcdServer, type_: str, count: int = 1, **extra: str) -> AsyncIterator[list[Any]]:
    """``count`` initialised instances of ``type_`` (separate connections: separate sidecars)."""
    metadata = {"endpoints": etcd.endpoint, **extra}
    built = [registry.build(manifest(type_, metadata, f"c{index}")) for index in range(count)]
    try:
        for component in built:
            await component.init()
        yield built
    finally:
        for component in built:
            await component.close()


async def eventually(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` holds; fails the test when it does not within ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


# --- config ---------------------------------------------------------------------------------------


def test_config_from_manifest() -> None:
    config = EtcdConfig.from_manifest(
        manifest("lock.etcd", {"endpoints": " http://a:1 ; b , [::1]:3", "dialTimeout": "2s"}), "layotto-lock/"
    )
    assert config.endpoints == (("a", 1), ("b", 2379), ("::1", 3))
    assert config.key_prefix == "layotto-lock/" and config.dial_timeout == 2.0 and config.operation_timeout == 3.0
    assert config.component == "test (lock.etcd)" and config.address(2) == "[::1]:3"
    layotto = manifest("lock.etcd", {"endpoints": "a:1", "keyPrefixPath": "/l/", "username": "u", "password": "p"})
    assert EtcdConfig.from_manifest(layotto, "x").key_prefix == "/l/"
    assert (
        EtcdSequencer.from_manifest(manifest("sequencer.etcd", {"endpoints": "a", "biggerThan": "7"})).bigger_than == 7
    )
    bad = [
        ("endpoints", {}),
        ("endpoints", {"endpoints": " , "}),
        ("endpoints", {"endpoints": "a:99999"}),
        ("endpoints", {"endpoints": "https://a:1"}),
        ("tlsCa", {"endpoints": "a", "tlsCa": "/etc/etcd/ca.pem"}),  # Layotto's: ignored before
        ("password", {"endpoints": "a", "username": "u"}),
        ("dialTimeout", {"endpoints": "a", "dialTimeout": "soon"}),
        ("operationTimeout", {"endpoints": "a", "operationTimeout": "0s"}),
        ("biggerThan", {"endpoints": "a", "biggerThan": str(MAX_ID)}),
        ("biggerThan", {"endpoints": "a", "biggerThan": "-1"}),
    ]
    for field, metadata in bad:
        with pytest.raises(StartupError) as caught:
            EtcdSequencer.from_manifest(manifest("sequencer.etcd", metadata))
        assert caught.value.field == f"spec.metadata.{field}" and caught.value.source == "test.yaml"


def test_lock_keys_go_under_key_prefix_path_only() -> None:
    """lock.etcd puts Layotto's keyPrefixPath before a key (default /layotto/, a '/' at either
    end); keyPrefix is the lock service's strategy, never text before the key."""
    cases = [
        ({}, "/layotto/"),
        ({"keyPrefix": "team-a/"}, "/layotto/"),
        ({"keyPrefixPath": "locks"}, "/locks/"),
        ({"keyPrefixPath": "/a/b"}, "/a/b/"),
        ({"keyPrefixPath": "a/b/"}, "/a/b/"),
        ({"keyPrefixPath": "/"}, "/"),
        ({"keyPrefixPath": ""}, "/layotto/"),
    ]
    for extra, path in cases:
        store = EtcdLockStore.from_manifest(manifest("lock.etcd", {"endpoints": "a:1", **extra}))
        assert store.config.key_prefix == path, extra
        assert store._key("lock|||app||r") == f"{path}lock|||app||r".encode()


def test_lease_deadlines_are_pruned_less_often_as_more_stay_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pruned at a fixed size, 5000 live leases walked all 5000 on every grant past 4096."""
    from layotto_fast.components.lock import etcd as lock_etcd

    store = EtcdLockStore.from_manifest(manifest("lock.etcd", {"endpoints": "a:1"}))
    walks = 0
    real = lock_etcd.time.monotonic

    def counting() -> float:  # the prune reads the clock once per pass
        nonlocal walks
        walks += 1
        return real()

    far = real() + 3600
    monkeypatch.setattr(lock_etcd.time, "monotonic", counting)
    for lease in range(20_000):
        store._granted(lease, far)
    assert len(store._deadlines) == 20_000
    assert walks <= 4, f"{walks} passes over the live leases"


@pytest.mark.parametrize(("value", "seconds"), [("5", 5.0), ("30", 30.0), ("500ms", 0.5), ("1.5s", 1.5), ("1m", 60.0)])
def test_etcd_durations_read_plain_digits_as_seconds(value: str, seconds: float) -> None:
    # Layotto's etcd manifests give dialTimeout as whole seconds ("5"); Go-style
    # durations, which Dapr's etcd components take, read as written.
    config = EtcdConfig.from_manifest(
        manifest("lock.etcd", {"endpoints": "a", "dialTimeout": value, "operationTimeout": value}), "x"
    )
    assert (config.dial_timeout, config.operation_timeout) == (seconds, seconds)


def test_init_fails_fast_without_etcd_and_tries_endpoints_in_order(etcd_server: EtcdServer) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"

    async def scenario() -> None:
        lonely = EtcdLockStore.from_manifest(manifest("lock.etcd", {"endpoints": dead, "dialTimeout": "1s"}))
        started = time.monotonic()
        with pytest.raises(Unavailable, match=rf"test \(lock\.etcd\).*{dead}"):
            await lonely.init()
        assert time.monotonic() - started < 1.5
        with pytest.raises(Unavailable):
            await lonely.try_lock("r", "o", 1)
        await lonely.close()

        async with components(etcd_server, "lock.etcd", endpoints=f"{dead},{etcd_server.endpoint}") as [store]:
            assert store._conn.endpoint == etcd_server.endpoint
            assert await store.try_lock(unique(), "o", 5)

    asyncio.run(scenario())


class ShortTokenEtcd(EtcdServer):
    """An etcd whose authentication tokens expire after one idle second (dropped within two)."""

    def _argv(self) -> list[str]:
        return [*super()._argv(), "--auth-token-ttl", "1"]


def test_authentication_and_an_expired_token_is_renewed(tmp_path: Path) -> None:
    with ShortTokenEtcd(tmp_path) as etcd:
        etcd.ctl("user", "add", "root:s3cret")
        etcd.ctl("auth", "enable")

        async def scenario() -> None:
            async with components(etcd, "sequencer.etcd", username="root", password="s3cret") as [sequencer]:
                assert await sequencer.next_id("k") == 1
                first_client = sequencer._conn.client()
                await asyncio.sleep(2.5)  # etcd drops idle tokens once a second: this one is gone
                assert await sequencer.next_id("k") == 2
                assert sequencer._conn.client() is not first_client  # authenticated again
                await sequencer.ping()
            wrong = registry.build(
                manifest("lock.etcd", {"endpoints": etcd.endpoint, "username": "root", "password": "wrong"})
            )
            with pytest.raises(Unavailable, match="authentication failed"):
                await wrong.init()
            await wrong.close()

        asyncio.run(scenario())


def test_ping_moves_to_the_next_endpoint_that_answers(etcd_server: EtcdServer, tmp_path: Path) -> None:
    with EtcdServer(tmp_path) as first:

        async def scenario() -> None:
            endpoints = f"{first.endpoint},{etcd_server.endpoint}"
            async with components(etcd_server, "lock.etcd", endpoints=endpoints, keyPrefixPath=f"t-{unique()}/") as [
                store
            ]:
                assert store._conn.endpoint == first.endpoint
                first.stop()
                await store.ping()  # the first failed, the second answered
                assert store._conn.endpoint == etcd_server.endpoint
                assert await store.try_lock(unique(), "o", 5)

        asyncio.run(scenario())


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until every thread of ``pid`` is stopped: a thread of a busy machine may still answer a
    request for a moment after ``kill`` sent SIGSTOP, until the group stop reaches it."""
    deadline = time.monotonic() + timeout
    while True:
        states: list[str] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that has just ended
                states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
        if all(state in ("T", "t") for state in states):
            return
        assert time.monotonic() < deadline, f"process {pid} not stopped within {timeout} s: {states}"
        time.sleep(0.01)


def test_a_configuration_watch_follows_the_connection_to_the_next_endpoint(
    etcd_server: EtcdServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failover closes the old client; gRPC ends the watch stream read on its channel with
    CancelledError, which the watch task did not catch (``except Exception``): the task ended
    without a word, the dead watch stayed established, and no change was told again."""
    with EtcdServer(tmp_path) as first:
        pid = first.pid
        assert pid is not None

        async def scenario() -> None:
            prefix, app, key = f"t-{unique()}/", unique(), unique()
            endpoints = f"{first.endpoint},{etcd_server.endpoint}"
            async with components(etcd_server, "configuration.etcd", endpoints=endpoints, keyPrefix=prefix) as [store]:
                assert store._conn.endpoint == first.endpoint
                seen: list[ConfigItem] = []
                store.watch(ConfigQuery(app, (key,)), seen.extend)
                assert await store.wait_watching(app, 2.0)
                os.kill(pid, signal.SIGSTOP)  # the first says nothing: its watch stream just stays quiet
                try:
                    wait_stopped(pid)
                    await store.ping()  # the first failed, the second answered: the old client is closed
                    assert store._conn.endpoint == etcd_server.endpoint
                    etcd_server.ctl("put", f"{prefix}{app}/g/l/{key}", "after the failover")
                    await eventually(lambda: [i.content for i in seen] == ["after the failover"], 2 * WATCH_DEADLINE)
                    assert await store.wait_watching(app, 1.0)
                finally:
                    os.kill(pid, signal.SIGCONT)

        with caplog.at_level(logging.WARNING, "layotto_fast.components.configuration.etcd"):
            asyncio.run(scenario())
        assert "the etcd client it read from was closed and replaced" in caplog.text


def test_a_call_waiting_on_a_replaced_client_is_unavailable(etcd_server: EtcdServer, tmp_path: Path) -> None:
    """A failover closes the old client under a call still waiting on it (its member stopped
    answering): gRPC ends that call with CancelledError, which reached the caller as if it
    had been cancelled itself. It is UNAVAILABLE, saying why, so the app may try again."""
    with EtcdServer(tmp_path) as first:
        pid = first.pid
        assert pid is not None

        async def scenario() -> None:
            endpoints = f"{first.endpoint},{etcd_server.endpoint}"
            async with components(etcd_server, "configuration.etcd", endpoints=endpoints,
                                  operationTimeout="20s") as [store]:  # fmt: skip
                os.kill(pid, signal.SIGSTOP)
                try:
                    wait_stopped(pid)
                    waiting = asyncio.ensure_future(store.get(ConfigQuery(unique(), (unique(),))))
                    await asyncio.sleep(0.2)
                    assert not waiting.done()
                    await store.ping()  # the first failed, the second answered: the old client is closed
                    with pytest.raises(Unavailable, match="replaced while the call waited"):
                        await asyncio.wait_for(waiting, 5)
                finally:
                    os.kill(pid, signal.SIGCONT)

        asyncio.run(scenario())


class LeaderlessMember:
    """A gRPC server where etcd's KV service takes every call and never answers: an etcd
    member cut off from its leader accepts connections and holds linearizable reads."""

    def __init__(self) -> None:
        self._release = threading.Event()

        def hold(request: bytes, context: grpc.ServicerContext) -> bytes:
            self._release.wait(30)
            context.abort(grpc.StatusCode.UNAVAILABLE, "no leader")

        handler = grpc.unary_unary_rpc_method_handler(hold)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("etcdserverpb.KV", {"Range": handler})]
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"127.0.0.1:{port}"

    def close(self) -> None:
        self._release.set()
        self._server.stop(0)


def test_members_that_never_answer_do_not_use_up_the_init_or_the_health_check(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    """Before, endpoints were asked one at a time, each for its whole timeout: two members
    without a leader before a live etcd took two dial timeouts at init (past the runtime's
    init timeout with dialTimeout 5s and up) and two ping timeouts at failover (past the
    health check's 2 s bound, so the component stayed DOWN with a live etcd listed)."""
    stuck = [LeaderlessMember(), LeaderlessMember()]
    try:
        with EtcdServer(tmp_path) as first:

            async def scenario() -> None:
                endpoints = ",".join([s.endpoint for s in stuck] + [etcd_server.endpoint])
                store = EtcdLockStore.from_manifest(
                    manifest("lock.etcd", {"endpoints": endpoints, "dialTimeout": "2s"})
                )
                started = time.monotonic()
                await store.init()
                assert time.monotonic() - started < 3.0  # one dial timeout, not two
                assert store._conn.endpoint == etcd_server.endpoint
                await store.close()

                endpoints = ",".join([first.endpoint] + [s.endpoint for s in stuck] + [etcd_server.endpoint])
                async with components(etcd_server, "lock.etcd", endpoints=endpoints) as [store]:
                    assert store._conn.endpoint == first.endpoint  # the order given is kept
                    first.stop()
                    # as the health check runs it: within lifecycle.PING_TIMEOUT_SECONDS
                    await asyncio.wait_for(store.ping(), PING_TIMEOUT_SECONDS)
                    assert store._conn.endpoint == etcd_server.endpoint
                    assert await store.try_lock(unique(), "o", 5)

            asyncio.run(scenario())
    finally:
        for member in stuck:
            member.close()


# --- lock -----------------------------------------------------------------------------------------


def test_lock_one_holder_among_many_contenders_on_two_sidecars(etcd_server: EtcdServer) -> None:
    path = f"t-{unique()}"

    async def scenario() -> None:
        async with components(etcd_server, "lock.etcd", 2, keyPrefixPath=path) as stores:
            resource = unique()
            won = await asyncio.gather(*(stores[i % 2].try_lock(resource, f"o{i}", 10) for i in range(40)))
            assert sum(won) == 1
            # As Layotto's etcd lock: keyPrefixPath with a '/' at either end, then the key as given.
            assert etcd_server.ctl("get", "--print-value-only", f"/{path}/{resource}") == f"o{won.index(True)}"

            holders: list[str] = []
            acquired = 0

            async def contend(index: int) -> None:
                nonlocal acquired
                owner, store = f"c{index}", stores[index % 2]
                for _ in range(15):
                    if await store.try_lock("hot", owner, 5):
                        holders.append(owner)
                        assert len(holders) == 1, f"two holders at once: {holders}"
                        acquired += 1
                        await asyncio.sleep(0.002)
                        holders.remove(owner)
                        assert await store.unlock("hot", owner) == LockStatus.SUCCESS
                    else:
                        await asyncio.sleep(0.001)

            await asyncio.gather(*(contend(i) for i in range(12)))
            assert acquired > 0 and not holders

    asyncio.run(scenario())


def test_lock_only_the_owner_unlocks_or_keeps_alive(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        async with components(etcd_server, "lock.etcd", 2, keyPrefixPath=f"t-{unique()}/") as [mine, theirs]:
            r = unique()
            assert await mine.keep_alive(r, "a", 5) == LockStatus.LOCK_UNEXIST
            assert await mine.unlock(r, "a") == LockStatus.LOCK_UNEXIST
            assert await mine.try_lock(r, "a", 5)
            assert not await theirs.try_lock(r, "b", 5)
            assert not await mine.try_lock(r, "a", 5)  # not re-entrant
            assert await theirs.unlock(r, "b") == LockStatus.LOCK_BELONG_TO_OTHERS
            assert await theirs.keep_alive(r, "b", 5) == LockStatus.LOCK_BELONG_TO_OTHERS
            assert await theirs.unlock(r, "a") == LockStatus.SUCCESS  # the owner, through another sidecar
            assert await mine.unlock(r, "a") == LockStatus.LOCK_UNEXIST
            assert await theirs.try_lock(r, "b", 5)

    asyncio.run(scenario())


def test_lock_expiry_releases(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        async with components(etcd_server, "lock.etcd", 2, keyPrefixPath=f"t-{unique()}/") as [mine, theirs]:
            # The conformance scenario: on the sidecar that granted it, a lock expires on time.
            r = unique()
            assert await mine.try_lock(r, "a", 1)
            assert not await mine.try_lock(r, "b", 1)
            assert await mine.keep_alive(r, "a", 1) == LockStatus.SUCCESS
            await asyncio.sleep(1.1)
            assert await mine.unlock(r, "a") == LockStatus.LOCK_UNEXIST
            assert await mine.try_lock(r, "b", 5)
            assert await mine.unlock(r, "b") == LockStatus.SUCCESS

            # Another sidecar sees it go when etcd's lease expires.
            r = unique()
            assert await mine.try_lock(r, "a", 1)
            assert not await theirs.try_lock(r, "b", 5)
            started = time.monotonic()
            while not await theirs.try_lock(r, "b", 5):
                assert time.monotonic() - started < 3.0, "the lease did not expire"
                await asyncio.sleep(0.05)
            assert await mine.keep_alive(r, "a", 5) == LockStatus.LOCK_BELONG_TO_OTHERS

    asyncio.run(scenario())


def test_lock_keep_alive_extends(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        async with components(etcd_server, "lock.etcd", 2, keyPrefixPath=f"t-{unique()}/") as [mine, theirs]:
            r = unique()
            assert await mine.try_lock(r, "a", 1)
            await asyncio.sleep(0.6)
            assert await theirs.keep_alive(r, "a", 2) == LockStatus.SUCCESS  # through either sidecar
            await asyncio.sleep(0.9)  # past the first expiry
            assert not await mine.try_lock(r, "b", 5)
            assert not await theirs.try_lock(r, "b", 5)
            assert await mine.keep_alive(r, "a", 1) == LockStatus.SUCCESS
            assert await mine.unlock(r, "a") == LockStatus.SUCCESS

    asyncio.run(scenario())


# --- sequencer ------------------------------------------------------------------------------------


def test_sequencer_keys_go_under_key_prefix_path_only() -> None:
    """sequencer.etcd puts Layotto's keyPrefixPath before a key (default /layotto/, a '/' at
    either end); keyPrefix is the sequencer service's strategy, never text before the key."""
    cases = [
        ({}, "/layotto/"),
        ({"keyPrefix": "team-a/"}, "/layotto/"),
        ({"keyPrefixPath": "ids"}, "/ids/"),
        ({"keyPrefixPath": "/a/b"}, "/a/b/"),
    ]
    for extra, path in cases:
        sequencer = EtcdSequencer.from_manifest(manifest("sequencer.etcd", {"endpoints": "a:1", **extra}))
        assert sequencer.config.key_prefix == path, extra
        assert sequencer._key("sequencer|||app||k") == f"{path}sequencer|||app||k".encode()


def stored(etcd: EtcdServer, key: str) -> tuple[int, bytes]:
    """The version and the value of ``key`` in etcd."""
    [kv] = json.loads(etcd.ctl("get", key, "-w", "json"))["kvs"]
    return int(kv["version"]), base64.b64decode(kv.get("value", ""))


async def layotto_next_id(sequencer: EtcdSequencer, key: str) -> int:
    """Layotto's etcd sequencer (over ``sequencer``'s connection): put an empty value at
    ``/layotto/<key>`` whatever it holds; the id is the key's version after it."""
    etcd_key = f"/layotto/{key}".encode()
    put_then_get = [op_put(etcd_key, b""), op_get(etcd_key)]
    response = await sequencer._conn.txn([same_create(etcd_key, 0)], put_then_get, put_then_get)
    return int(range_kvs(response, 1)[0].version)


def test_sequencer_counts_in_versions_as_layotto_does(etcd_server: EtcdServer) -> None:
    """A key Layotto's sidecars counted to 41 (41 puts of an empty value) goes on at 42, written
    as Layotto writes it (an empty value, version 42), so Layotto goes on at 43. An id above
    the version (biggerThan) is kept in the value, which every sidecar of ours reads."""
    key = f"sequencer|||my-app||orders-{unique()}"
    path = f"/layotto/{key}"

    async def scenario() -> None:
        async with components(etcd_server, "sequencer.etcd", 2) as [ours, layotto]:
            assert [await layotto_next_id(layotto, key) for _ in range(41)][-1] == 41
            assert await ours.next_id(key) == 42
            assert stored(etcd_server, path) == (42, b"")
            assert await layotto_next_id(layotto, key) == 43
            assert await ours.next_id(key) == 44  # it read Layotto's put: its compare-and-swap failed
            assert stored(etcd_server, path) == (44, b"")
        async with components(etcd_server, "sequencer.etcd", biggerThan="1000") as [bigger]:
            assert await bigger.next_id(key) == 1001
            assert stored(etcd_server, path) == (45, b"1001")
        async with components(etcd_server, "sequencer.etcd") as [plain]:
            assert await plain.next_id(key) == 1002  # the value is an id handed out
            assert stored(etcd_server, path) == (46, b"1002")
            etcd_server.ctl("put", path, "5")  # by hand, below the version: the version wins
            assert await plain.next_id(key) == 48
            assert stored(etcd_server, path) == (48, b"")  # back to Layotto's layout

    asyncio.run(scenario())


def test_sequencer_increases_across_sidecars_and_restarts(etcd_server: EtcdServer) -> None:
    prefix = f"t-{unique()}/"

    async def scenario() -> None:
        key = unique()
        async with components(etcd_server, "sequencer.etcd", 2, keyPrefixPath=prefix) as [a, b]:
            ids = [await (a if i % 3 else b).next_id(key) for i in range(20)]
            assert ids == list(range(1, 21))
            together = await asyncio.gather(*(c.next_id(key) for c in (a, b) * 50))
            assert sorted(together) == list(range(21, 121))
        assert stored(etcd_server, f"/{prefix}{key}") == (120, b"")  # ids are versions, as in Layotto
        async with components(etcd_server, "sequencer.etcd", keyPrefixPath=prefix) as [again]:
            assert await again.next_id(key) == 121
        async with components(etcd_server, "sequencer.etcd", keyPrefixPath=prefix, biggerThan="1000") as [bigger]:
            assert await bigger.next_id(unique()) == 1001
            assert await bigger.next_id(key) == 1001  # every id is bigger than biggerThan
        assert etcd_server.ctl("get", "--print-value-only", f"/{prefix}{key}") == "1001"

    asyncio.run(scenario())


def test_sequencer_exhaustion_changes_nothing(etcd_server: EtcdServer) -> None:
    prefix = f"t-{unique()}/"
    key = unique()
    etcd_server.ctl("put", f"/{prefix}{key}", str(MAX_ID - 1))

    async def scenario() -> None:
        async with components(etcd_server, "sequencer.etcd", keyPrefixPath=prefix) as [sequencer]:
            assert await sequencer.next_id(key) == MAX_ID
            for _ in range(2):
                with pytest.raises(ResourceExhausted, match=key):
                    await sequencer.next_id(key)
        async with components(etcd_server, "sequencer.etcd", keyPrefixPath=prefix, biggerThan=str(MAX_ID - 1)) as [top]:
            other = unique()
            assert await top.next_id(other) == MAX_ID
            with pytest.raises(ResourceExhausted):
                await top.next_id(other)

    asyncio.run(scenario())
    assert etcd_server.ctl("get", "--print-value-only", f"/{prefix}{key}") == str(MAX_ID)


# --- configuration --------------------------------------------------------------------------------


def test_configuration_reads_and_writes_layottos_keys_by_default(etcd_server: EtcdServer) -> None:
    """No keyPrefix: the keys Layotto's etcd store writes, /{app}/{group}/{label}/{key}. The
    default was layotto-config/, where a sidecar pointed at Layotto's etcd found nothing."""
    app = unique()

    async def scenario() -> list[ConfigItem]:
        etcd_server.ctl("put", f"/{app}/default/default/written-by-layotto", "v1")
        async with components(etcd_server, "configuration.etcd") as [store]:
            await store.save([ConfigItem(app, "saved-here", "v2", "default", "default")])
            found = await store.get(ConfigQuery(app, group="default", label="default"))
            await store.delete(ConfigQuery(app, ("written-by-layotto", "saved-here"), "default", "default"))
            return found

    found = asyncio.run(scenario())
    assert sorted((i.key, i.content) for i in found) == [("saved-here", "v2"), ("written-by-layotto", "v1")]
    assert etcd_server.ctl("get", "--prefix", "--keys-only", f"/{app}/") == ""


def test_configuration_get_save_delete_with_filters(etcd_server: EtcdServer) -> None:
    prefix = f"t-{unique()}/"

    async def scenario() -> None:
        async with components(etcd_server, "configuration.etcd", keyPrefix=prefix) as [store]:
            app = unique()
            items = [
                ConfigItem(app, "k", "blue-k", "g", "blue", {"owner": "me"}, {"m": "1"}),
                ConfigItem(app, "k", "red-k", "g", "red"),
                ConfigItem(app, "j", "plain"),  # empty group and label
                ConfigItem(app, "deep/key", "slashes", "h", "blue"),
            ]
            await store.save(items)
            assert await store.get(ConfigQuery(app, ("k",), label="blue")) == [items[0]]
            assert sorted(i.content for i in await store.get(ConfigQuery(app, ("k",)))) == ["blue-k", "red-k"]
            assert sorted(i.key for i in await store.get(ConfigQuery(app, label="blue"))) == ["deep/key", "k"]
            assert await store.get(ConfigQuery(app, ("j",))) == [items[2]]
            assert await store.get(ConfigQuery(app, group="h")) == [items[3]]
            assert len(await store.get(ConfigQuery(app))) == 4
            assert await store.get(ConfigQuery(unique())) == []
            assert etcd_server.ctl("get", "--print-value-only", f"{prefix}{app}/g/blue/k") == "blue-k"
            assert etcd_server.ctl("get", "--print-value-only", f"{prefix}{app}///j") == "plain"

            await store.save([ConfigItem(app, "k", "blue-2", "g", "blue")])  # tags dropped with the new version
            assert await store.get(ConfigQuery(app, ("k",), "g", "blue")) == [
                ConfigItem(app, "k", "blue-2", "g", "blue")
            ]
            await store.delete(ConfigQuery(app, ("k",), label="red"))
            assert [i.label for i in await store.get(ConfigQuery(app, ("k",)))] == ["blue"]
            await store.delete(ConfigQuery(app, ("k", "j", "deep/key")))
            assert await store.get(ConfigQuery(app)) == []
            assert etcd_server.ctl("get", "--prefix", "--keys-only", prefix) == ""

            for bad in (ConfigItem("a/b", "k"), ConfigItem(app, "k", group="x/y"), ConfigItem(".attrs", "k")):
                with pytest.raises(InvalidArgument):
                    await store.save([bad])

    asyncio.run(scenario())


def test_configuration_saves_large_items_in_transactions_etcd_takes(etcd_server: EtcdServer) -> None:
    """One save wrote up to 64 items in one transaction whatever their size: three items of
    700 KB were a 2.1 MB request, over etcd's limit, refused as an outage (UNAVAILABLE). An item
    too large alone is INVALID_ARGUMENT: no retry can pass."""
    prefix = f"t-{unique()}/"

    async def scenario() -> None:
        async with components(etcd_server, "configuration.etcd", keyPrefix=prefix) as [store]:
            app = unique()
            items = [ConfigItem(app, f"big{i}", str(i) * 700_000) for i in range(3)]
            await store.save(items)
            assert sorted(len(i.content) for i in await store.get(ConfigQuery(app))) == [700_000] * 3
            with pytest.raises(InvalidArgument, match="etcd refused"):
                await store.save([ConfigItem(app, "huge", "x" * 3_000_000)])

    asyncio.run(scenario())


def test_configuration_watch_sees_every_writer_within_a_second(etcd_server: EtcdServer) -> None:
    prefix = f"t-{unique()}/"

    async def scenario() -> None:
        async with components(etcd_server, "configuration.etcd", 2, keyPrefix=prefix) as [mine, theirs]:
            app, key = unique(), unique()
            seen: list[ConfigItem] = []
            cancel = mine.watch(ConfigQuery(app, (key,), label="blue"), seen.extend)
            assert await mine.wait_watching(app, 2.0)

            # Saved through this store: told before save returns, and only once.
            await mine.save(
                [ConfigItem(app, key, "one", "g", "blue", {"t": "1"}), ConfigItem(app, key, "x", "g", "red")]
            )
            assert seen == [ConfigItem(app, key, "one", "g", "blue", {"t": "1"})]
            await asyncio.sleep(0.2)
            assert len(seen) == 1

            # Saved through another sidecar, with its tags.
            await theirs.save([ConfigItem(app, key, "two", "g", "blue", {"t": "2"})])
            await eventually(lambda: len(seen) == 2, WATCH_DEADLINE)
            assert seen[1] == ConfigItem(app, key, "two", "g", "blue", {"t": "2"})

            # Written and deleted with etcdctl.
            etcd_server.ctl("put", f"{prefix}{app}/g/blue/{key}", "three")
            await eventually(lambda: len(seen) == 3, WATCH_DEADLINE)
            assert (seen[2].content, seen[2].group, seen[2].label) == ("three", "g", "blue")
            etcd_server.ctl("put", f"{prefix}{app}/g/red/{key}", "not watched")
            etcd_server.ctl("del", f"{prefix}{app}/g/blue/{key}")
            await eventually(lambda: len(seen) == 4, WATCH_DEADLINE)
            assert seen[3] == ConfigItem(app, key, "", "g", "blue")

            # Deleted through the other sidecar.
            await theirs.save([ConfigItem(app, key, "five", "g", "blue")])
            await eventually(lambda: len(seen) == 5, WATCH_DEADLINE)
            await theirs.delete(ConfigQuery(app, (key,), "g", "blue"))
            await eventually(lambda: len(seen) == 6, WATCH_DEADLINE)
            assert seen[5].content == ""

            cancel()
            cancel()
            assert not await mine.wait_watching(app, 0.1)
            await theirs.save([ConfigItem(app, key, "after", "g", "blue")])
            await mine.save([ConfigItem(app, key, "after", "g", "blue")])
            await asyncio.sleep(0.2)
            assert len(seen) == 6

    asyncio.run(scenario())


# --- etcd going away and coming back (last: it stops the shared server) ---------------------------


def test_etcd_down_is_unavailable_quickly_then_everything_works_again(etcd_server: EtcdServer) -> None:
    prefix = f"t-{unique()}/"

    async def run() -> None:
        async with (
            components(etcd_server, "lock.etcd", keyPrefixPath=f"{prefix}lock/") as [locks],
            components(etcd_server, "sequencer.etcd", keyPrefixPath=f"{prefix}sequence/") as [sequencer],
            components(etcd_server, "configuration.etcd", 2, keyPrefix=prefix) as [store, writer],
        ):
            app, key = unique(), unique()
            seen: list[ConfigItem] = []
            store.watch(ConfigQuery(app, (key,)), seen.extend)
            assert await store.wait_watching(app, 2.0)
            assert await sequencer.next_id(key) == 1

            etcd_server.stop()
            try:
                operations: list[Callable[[], Any]] = [
                    lambda: locks.try_lock(key, "o", 5),
                    lambda: locks.unlock(key, "o"),
                    lambda: locks.keep_alive(key, "o", 5),
                    lambda: sequencer.next_id(key),
                    lambda: writer.get(ConfigQuery(app)),
                    lambda: writer.save([ConfigItem(app, key, "x")]),
                    lambda: writer.delete(ConfigQuery(app, (key,))),
                    locks.ping,
                    sequencer.ping,
                    store.ping,
                ]
                for operation in operations:
                    started = time.monotonic()
                    with pytest.raises(Unavailable, match=rf"c\d \(\w+\.etcd\): etcd at {etcd_server.endpoint}: "):
                        await operation()
                    assert time.monotonic() - started < 1.5
            finally:
                etcd_server.start()

            # The same components, not re-created: they answer again once gRPC has reconnected.
            started = time.monotonic()
            while True:
                try:
                    await locks.ping()
                    await sequencer.ping()
                    await writer.ping()
                    break
                except Unavailable:
                    assert time.monotonic() - started < 5.0, "not back within 5 s"
                    await asyncio.sleep(0.05)
            assert await locks.try_lock(key, "o", 5)
            assert await locks.unlock(key, "o") == LockStatus.SUCCESS
            assert await sequencer.next_id(key) == 2  # nothing was taken while etcd was down
            assert await store.wait_watching(app, 3.0)  # the watch came back by itself
            await writer.save([ConfigItem(app, key, "back")])
            await eventually(lambda: [i.content for i in seen] == ["back"], WATCH_DEADLINE)

    asyncio.run(run())


def test_sequencer_keeps_a_bounded_number_of_keys_and_an_evicted_one_still_increases(etcd_server: EtcdServer) -> None:
    """The last state of every key ever asked for was kept for good: per-entity keys grew the
    sidecar without end. Only the last used are kept now; a key asked for again after it was
    dropped is read back from etcd, and its ids go on growing, also when another sidecar
    advanced it meanwhile."""
    prefix = f"t-{unique()}/"
    metadata = {"endpoints": etcd_server.endpoint, "keyPrefixPath": prefix}
    config = EtcdSequencer.from_manifest(manifest("sequencer.etcd", metadata)).config
    kept = 50

    async def scenario() -> None:
        sequencer = EtcdSequencer(config, seen_keys=kept)
        await sequencer.init()
        try:
            async with components(etcd_server, "sequencer.etcd", keyPrefixPath=prefix) as [other]:
                first = unique()
                assert [await sequencer.next_id(first) for _ in range(3)] == [1, 2, 3]
                many = [unique() for _ in range(4 * kept)]
                assert await asyncio.gather(*(sequencer.next_id(key) for key in many)) == [1] * len(many)
                assert len(sequencer._seen) <= kept
                assert first not in sequencer._seen
                assert await sequencer.next_id(first) == 4  # read back: strictly above the last
                assert await other.next_id(first) == 5
                for key in many[:kept]:  # first dropped again
                    await sequencer.next_id(key)
                assert first not in sequencer._seen
                assert await sequencer.next_id(first) == 6  # not 5: the other sidecar's write is read
                assert len(sequencer._seen) <= kept
        finally:
            await sequencer.close()

    asyncio.run(scenario())


def leases(etcd: EtcdServer) -> set[str]:
    """The ids of the leases etcd holds."""
    return {str(lease["id"]) for lease in json.loads(etcd.ctl("lease", "list", "-w", "json")).get("leases") or []}


async def _cancelled_during_its_grant(store: Any, etcd: EtcdServer) -> set[str]:
    """Starts a TryLock of a 2**31 s lease, cancels it once etcd holds its lease, before the
    grant's answer is read; the ids of the leases it made."""
    assert await store.try_lock(unique(), "warm", 1)  # connected: the grant goes out at once
    before = leases(etcd)
    attempt = asyncio.create_task(store.try_lock(unique(), "gone", 2**31 - 1))
    granted: set[str] = set()
    for _ in range(50):
        await asyncio.sleep(0)  # one loop pass: the grant call starts
        # The loop stands still while etcdctl runs: gRPC's own thread sends the request and
        # etcd grants, but the answer is not read before the cancel below.
        granted = leases(etcd) - before
        if granted:
            break
    assert granted, "etcd never saw the grant"
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    return granted


def test_no_lease_is_left_by_an_unlock_a_lost_try_lock_or_a_keep_alive(etcd_server: EtcdServer) -> None:
    """Each lease granted for a lock goes with it: revoked at the unlock, at a try-lock that
    found the lock taken, and the old one at a keep-alive (which moves the lock to a new
    lease). A lease left behind would live, keyless, for the lock's whole expiry."""

    async def scenario() -> None:
        async with components(etcd_server, "lock.etcd", keyPrefixPath=f"t-{unique()}/") as [store]:
            assert await store.try_lock(unique(), "warm", 1)  # connected
            before = leases(etcd_server)  # other tests' too: only new ones count

            def made() -> set[str]:
                return leases(etcd_server) - before

            r = unique()
            assert await store.try_lock(r, "a", 600)
            first = made()
            assert len(first) == 1
            assert not await store.try_lock(r, "b", 600)
            assert await store.keep_alive(r, "a", 600) == LockStatus.SUCCESS
            await eventually(lambda: len(made()) == 1 and made() != first, 5.0)
            assert await store.unlock(r, "a") == LockStatus.SUCCESS
            await eventually(lambda: not made(), 5.0)

    asyncio.run(scenario())


def test_a_try_lock_cancelled_during_its_lease_grant_leaves_no_lease(etcd_server: EtcdServer) -> None:
    """A TryLock cancelled (its caller gone) while etcd granted its lease left that lease, with
    no key on it, alive for expire_seconds: up to 2**31 s. It is revoked once the grant answers."""

    async def scenario() -> None:
        async with components(etcd_server, "lock.etcd", keyPrefixPath=f"t-{unique()}/") as [store]:
            granted = await _cancelled_during_its_grant(store, etcd_server)
            await eventually(lambda: not granted & leases(etcd_server), 5.0)

    asyncio.run(scenario())


def test_a_store_closed_while_a_cancelled_try_lock_awaits_its_grant_still_revokes_the_lease(
    etcd_server: EtcdServer,
) -> None:
    """A stop right after a caller left: close() used to cancel the grant still running, and
    its lease, keyless, lived for expire_seconds. close() lets it finish and revokes it."""

    async def scenario() -> None:
        async with components(etcd_server, "lock.etcd", keyPrefixPath=f"t-{unique()}/") as [store]:
            granted = await _cancelled_during_its_grant(store, etcd_server)
        # closed at once, the grant's answer maybe not read yet
        await eventually(lambda: not granted & leases(etcd_server), 5.0)

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["answer lost", "caller gone"])
def test_a_keep_alive_whose_outcome_is_unknown_keeps_the_lock(etcd_server: EtcdServer, how: str) -> None:
    """The move onto the new lease happened but its answer was lost (or the caller left):
    the new lease was revoked as if the move had failed, deleting the lock its owner still
    held, and another owner took it. Now the lease the key is on is kept, the other revoked."""

    async def scenario() -> None:
        async with components(etcd_server, "lock.etcd", 2, keyPrefixPath=f"t-{unique()}/") as [mine, theirs]:
            r = unique()
            assert await mine.try_lock(unique(), "warm", 1)  # connected
            others = leases(etcd_server)
            assert await mine.try_lock(r, "a", 30)
            old = leases(etcd_server) - others
            real, calls = mine._conn.txn, 0

            async def moved_then_failed(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                response = await real(*args, **kwargs)
                if calls == 2:  # the compare-and-put onto the new lease: applied in etcd
                    if how == "caller gone":
                        await asyncio.sleep(10)
                    raise Unavailable("the answer was lost")
                return response

            mine._conn.txn = moved_then_failed
            with pytest.raises(Unavailable if how == "answer lost" else TimeoutError):
                await asyncio.wait_for(mine.keep_alive(r, "a", 30), 1.0)
            mine._conn.txn = real
            await eventually(lambda: not old & leases(etcd_server), 5.0)  # the old lease went
            assert not await theirs.try_lock(r, "b", 5), "the lock is still a's"
            assert await mine.unlock(r, "a") == LockStatus.SUCCESS

    asyncio.run(scenario())
