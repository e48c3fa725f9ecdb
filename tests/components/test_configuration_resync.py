"""What a configuration watch reports after its connection was lost and it caught up again:
``configuration.redis`` (its pubsub's connection killed) and ``configuration.etcd`` (its
watch cut off past a compaction), against a real redis-server, Redis Cluster and etcd (the
session fixtures of tests/backends, via tests/conftest.py; one etcd of its own).

Caught up, a watch reports what changed, appeared or disappeared meanwhile, and nothing that
did not change: an item that existed when the watch began and was deleted during the gap is
reported gone, and the items that stayed as they were are not reported again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from layotto_fast.components.configuration.etcd import EtcdConfigurationStore
from layotto_fast.components.configuration.redis import RedisConfigurationStore
from layotto_fast.components.redis_client import RedisConfig
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery
from tests.backends.servers import EtcdServer, RedisCluster, RedisServer
from tests.components.support import until

Backend = RedisServer | RedisCluster
# A lost connection is seen at once (the server closes it), then a reconnect (50 ms) and a
# resync: a few seconds leave room for a loaded machine, and are far below "never".
BOUND = 5.0
# Silence after which a watch's pubsub reader takes its turn (and sends a pending marker PING).
WATCH_PING_INTERVAL = 0.3


def unique() -> str:
    return uuid.uuid4().hex[:12]


def reports(seen: list[list[ConfigItem]]) -> list[tuple[str, str]]:
    """(key, content) of every item reported, in order; a deletion has empty content."""
    return [(item.key, item.content) for batch in seen for item in batch]


# --- configuration.redis ---------------------------------------------------------------------------


@pytest.fixture(params=["node", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    server: Backend = request.getfixturevalue("redis_server" if request.param == "node" else "redis_cluster")
    return server


def redis_store(backend: Backend, app: str) -> RedisConfigurationStore:
    cluster = isinstance(backend, RedisCluster)
    config = RedisConfig(host=backend.host, port=backend.port, cluster=cluster, key_prefix=f"resync-{app}:",
                         component="config (configuration.redis)")  # fmt: skip
    return RedisConfigurationStore(config, watch_ping_interval=WATCH_PING_INTERVAL)


async def kill_subscriptions_then(backend: Backend, *command: str) -> None:
    """On every node, in one pipeline: CLIENT KILL TYPE pubsub, then ``command`` (when given):
    the watch's connection is gone before the command runs, and its event with it. On a
    cluster the nodes that do not own the command's key answer MOVED (ignored)."""
    servers = backend.servers if isinstance(backend, RedisCluster) else [backend]

    async def on(server: RedisServer) -> None:
        node = aioredis.Redis(host=server.host, port=server.port)
        try:
            pipe = node.pipeline(transaction=False)
            pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            if command:
                pipe.execute_command(*command)
            await pipe.execute(raise_on_error=False)
        finally:
            await node.aclose()

    await asyncio.gather(*(on(server) for server in servers))


def baselines_confirmed(store: RedisConfigurationStore, redis_keys: list[str]) -> bool:
    """Whether the watch holds a confirmed baseline of each key (a PING sent after its read
    answered on every pubsub): from then on a resync compares with it."""
    watcher = store._watcher
    return all(key in watcher._told for key in redis_keys) and not watcher._pending


def test_redis_an_item_deleted_while_the_watch_was_disconnected_is_reported_gone(backend: Backend) -> None:
    """``a`` and ``b`` exist when the watch begins; ``a`` is deleted right after the watch's
    connection is killed, so its event is lost. The resync reports ``a`` gone (it was never
    reported, and listeners kept it), and nothing of ``b``, which did not change."""
    app = unique()
    exact: list[list[ConfigItem]] = []
    every: list[list[ConfigItem]] = []

    async def scenario() -> None:
        store = redis_store(backend, app)
        await store.init()
        try:
            await store.save([ConfigItem(app, "a", "A1", "g", "l"), ConfigItem(app, "b", "B1", "g", "l")])
            await asyncio.sleep(0.2)  # their events come and go: nobody watches yet
            store.watch(ConfigQuery(app, ("a", "b", "c"), "g", "l"), exact.append)  # c: absent
            store.watch(ConfigQuery(app), every.append)  # every key of the app
            keys = [store.redis_key(app, "g", "l", key) for key in ("a", "b", "c")]
            assert await until(lambda: baselines_confirmed(store, keys), BOUND)

            await kill_subscriptions_then(backend, "DEL", store.redis_key(app, "g", "l", "a"))
            assert await until(lambda: ("a", "") in reports(exact) and ("a", "") in reports(every), BOUND), (
                exact,
                every,
            )
            assert exact[0] == [ConfigItem(app, "a", "", "g", "l")]

            # Later changes are reported as before, and only those: nothing else was.
            await store.save([ConfigItem(app, "c", "C1", "g", "l")])
            assert await until(lambda: ("c", "C1") in reports(every), BOUND), every
            await asyncio.sleep(0.2)
            assert reports(exact) == [("a", ""), ("c", "C1")]
            assert reports(every) == [("a", ""), ("c", "C1")]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_redis_a_reconnect_reports_nothing_that_did_not_change(backend: Backend) -> None:
    """Items that stayed as they were across a lost connection are not reported after the
    resync (they were compared with nothing, and told as changed on every reconnect); one
    changed meanwhile is reported once, and an item that appeared meanwhile too."""
    app = unique()
    seen: list[list[ConfigItem]] = []

    async def scenario() -> None:
        store = redis_store(backend, app)
        await store.init()
        try:
            await store.save([ConfigItem(app, "a", "A1", "g", "l"), ConfigItem(app, "b", "B1", "g", "l")])
            await asyncio.sleep(0.2)
            store.watch(ConfigQuery(app, ("a", "b", "c"), "g", "l"), seen.append)
            keys = [store.redis_key(app, "g", "l", key) for key in ("a", "b", "c")]
            assert await until(lambda: baselines_confirmed(store, keys), BOUND)

            for round_, (key, content) in enumerate((("a", "A2"), ("c", "C1")), 1):
                await kill_subscriptions_then(backend)
                # Reported after the resync however it comes (lost with the connection and found
                # by the resync, or an event on the new one): then the resync is done.
                await store.save([ConfigItem(app, key, content, "g", "l")])
                assert await until(lambda: (key, content) in reports(seen), BOUND), seen  # noqa: B023
                await asyncio.sleep(0.2)
                assert len(reports(seen)) == round_, seen
            assert reports(seen) == [("a", "A2"), ("c", "C1")]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_redis_writes_racing_a_new_watch_are_reported_once(redis_server: RedisServer) -> None:
    """Each watch begins while another client writes its key: updated, created or deleted,
    right after ``watch()``, while the watch reads its baseline. Each write is reported once,
    with what it wrote, whichever of the write and the read came first; a reconnect after
    that reports nothing more."""
    app = unique()
    count = 30
    seen: dict[str, list[str]] = {}

    def listener(items: list[ConfigItem]) -> None:
        for item in items:
            seen.setdefault(item.key, []).append(item.content)

    async def scenario() -> None:
        store = redis_store(redis_server, app)
        writer = aioredis.Redis(host=redis_server.host, port=redis_server.port)
        await store.init()
        try:
            existing = [ConfigItem(app, f"u{index}", "old", "g", "l") for index in range(count)]
            existing += [ConfigItem(app, f"d{index}", "old", "g", "l") for index in range(count)]
            await store.save(existing)
            await asyncio.sleep(0.2)
            expected: dict[str, list[str]] = {}
            for index in range(count):
                # u: updated, n: new, d: deleted; the write goes out before the watch's read can
                # start, and races it at the server.
                for key in (f"u{index}", f"n{index}", f"d{index}"):
                    store.watch(ConfigQuery(app, (key,), "g", "l"), listener)
                    redis_key = store.redis_key(app, "g", "l", key)
                    if key.startswith("d"):
                        await writer.delete(redis_key)
                        expected[key] = [""]
                    else:
                        await writer.hset(redis_key, "content", "new")
                        expected[key] = ["new"]
            assert await until(lambda: seen == expected, BOUND), {k: v for k, v in seen.items() if v != expected[k]}
            assert await until(lambda: not store._watcher._pending, BOUND)
            await asyncio.sleep(0.2)
            assert seen == expected

            await kill_subscriptions_then(redis_server)
            await writer.hset(store.redis_key(app, "g", "l", "u0"), "content", "newer")
            assert await until(lambda: seen["u0"][-1:] == ["newer"], BOUND), seen["u0"]
            await asyncio.sleep(0.2)
            assert seen == {**expected, "u0": ["new", "newer"]}
        finally:
            await store.close()
            await writer.aclose()

    asyncio.run(scenario())


# --- configuration.etcd ----------------------------------------------------------------------------


class Relay:
    """Forwards loopback connections to a server. ``cut()`` resets every connection and refuses
    new ones (accepted, then reset) until ``resume()``: the client loses the server meanwhile,
    while others can still write to it directly."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.refusing = False

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def resume(self) -> None:
        self.refusing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
        self._writers.discard(sink)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def etcd_store(port: int, prefix: str) -> EtcdConfigurationStore:
    metadata = {"endpoints": f"127.0.0.1:{port}", "keyPrefix": prefix}
    return EtcdConfigurationStore.from_manifest(
        ComponentManifest(name="config", type="configuration.etcd", version="v1", metadata=metadata, source="t.yaml")
    )


async def ctl(server: EtcdServer, *args: str) -> str:
    """etcdctl in a thread: the relay and the watch go on on the loop meanwhile."""
    return await asyncio.to_thread(server.ctl, *args)


async def move_revision_and_compact(server: EtcdServer, prefix: str) -> int:
    """Writes to keys outside every app, then a compaction at the last one's revision."""
    for index in range(5):
        await ctl(server, "put", f"{prefix}-elsewhere/{index}", "x")
    written = json.loads(await ctl(server, "put", f"{prefix}-elsewhere/last", "x", "-w", "json"))
    revision = int(written["header"]["revision"])
    await ctl(server, "compact", str(revision))
    return revision


@contextlib.asynccontextmanager
async def watched_behind_relay(
    server: EtcdServer, prefix: str, app: str, keys: str, seen: list[list[ConfigItem]]
) -> AsyncIterator[tuple[EtcdConfigurationStore, Relay]]:
    """A store reaching ``server`` through a relay the test can cut, holding ``keys`` of
    ``app`` (each key's content its upper case and 1) and watching the app into ``seen``."""
    relay = Relay(server.host, server.port)
    store = etcd_store(await relay.start(), prefix)
    await store.init()
    try:
        await store.save([ConfigItem(app, key, f"{key.upper()}1", "g", "l") for key in keys])
        store.watch(ConfigQuery(app), seen.append)
        assert await store.wait_watching(app, BOUND)
        yield store, relay
    finally:
        await store.close()
        await relay.close()


def test_etcd_a_watch_resumed_past_a_compaction_reports_only_what_changed(
    etcd_server: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The app's keys are quiet while others move etcd's revision; the watch is cut off, and
    meanwhile ``c`` is deleted, ``b`` rewritten, ``e`` created, and etcd compacted past the
    watch's revision. Watching again falls into the resync: it reports ``b``, ``c`` gone and
    ``e``, and neither ``a`` nor ``d``, which did not change (it told every current item as
    changed, and lost ``c``'s deletion)."""
    prefix = f"resync-{unique()}/"
    app = unique()
    seen: list[list[ConfigItem]] = []

    async def scenario() -> None:
        async with watched_behind_relay(etcd_server, prefix, app, "abcd", seen) as (_, relay):
            relay.cut()
            await ctl(etcd_server, "del", f"{prefix}{app}/g/l/c")
            await ctl(etcd_server, "put", f"{prefix}{app}/g/l/b", "B2")
            await ctl(etcd_server, "put", f"{prefix}{app}/g/l/e", "E1")
            await move_revision_and_compact(etcd_server, prefix)
            relay.resume()

            assert await until(lambda: len(reports(seen)) >= 3, BOUND + 2.0), seen
            await ctl(etcd_server, "put", f"{prefix}{app}/g/l/a", "A2")  # the watch goes on
            assert await until(lambda: ("a", "A2") in reports(seen), BOUND), seen
            await asyncio.sleep(0.2)
            assert sorted(reports(seen)[:3]) == [("b", "B2"), ("c", ""), ("e", "E1")], seen
            assert reports(seen)[3:] == [("a", "A2")], seen
            assert ConfigItem(app, "c", "", "g", "l") in seen[0]

    with caplog.at_level(logging.WARNING, "layotto_fast.components.configuration.etcd"):
        asyncio.run(scenario())
    assert "lost history to a compaction" in caplog.text  # it did go through the resync


def test_etcd_saves_and_deletes_through_the_store_are_not_told_again_by_a_resync(
    etcd_server: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """This store's own save and delete, told before they returned, are known to the watch:
    a resync right after them reports neither again, and nothing that did not change."""
    prefix = f"resync-{unique()}/"
    app = unique()
    seen: list[list[ConfigItem]] = []

    async def scenario() -> None:
        async with watched_behind_relay(etcd_server, prefix, app, "abc", seen) as (store, relay):
            await store.save([ConfigItem(app, "a", "A2", "g", "l")])
            await store.delete(ConfigQuery(app, ("b",), "g", "l"))
            assert reports(seen) == [("a", "A2"), ("b", "")]  # told before they returned

            relay.cut()  # at once: their events may not have come back through the watch yet
            await move_revision_and_compact(etcd_server, prefix)
            relay.resume()
            assert await until(lambda: "lost history" in caplog.text, BOUND + 2.0)
            await ctl(etcd_server, "put", f"{prefix}{app}/g/l/c", "C2")
            assert await until(lambda: ("c", "C2") in reports(seen), BOUND), seen
            await asyncio.sleep(0.2)
            assert reports(seen) == [("a", "A2"), ("b", ""), ("c", "C2")]

    with caplog.at_level(logging.WARNING, "layotto_fast.components.configuration.etcd"):
        asyncio.run(scenario())


class _ProgressEtcd(EtcdServer):
    """An etcd that sends watch progress notifications every 200 ms (etcd's default: 10 min)."""

    def _argv(self) -> list[str]:
        return [*super()._argv(), "--experimental-watch-progress-notify-interval", "200ms"]


def test_etcd_a_quiet_watch_follows_the_revision_and_resumes_without_a_resync(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With progress notifications, a watch whose keys are quiet moves on with etcd's revision
    while others write: a compaction of the revisions it skipped does not make it resync when
    it watches again, and a change after that arrives as usual."""
    prefix = f"resync-{unique()}/"
    app = unique()
    seen: list[list[ConfigItem]] = []

    async def scenario(server: EtcdServer) -> None:
        async with watched_behind_relay(server, prefix, app, "a", seen) as (store, relay):
            watch: Any = store._apps[app]
            revision = await move_revision_and_compact(server, prefix)
            assert await until(lambda: watch.revision >= revision, BOUND), (watch.revision, revision)

            relay.cut()
            relay.resume()
            await ctl(server, "put", f"{prefix}{app}/g/l/a", "A2")
            assert await until(lambda: ("a", "A2") in reports(seen), BOUND + 2.0), seen
            await asyncio.sleep(0.2)
            assert reports(seen) == [("a", "A2")]

    with (
        _ProgressEtcd(tmp_path / "etcd") as server,
        caplog.at_level(logging.INFO, "layotto_fast.components.configuration.etcd"),
    ):
        asyncio.run(scenario(server))
    assert "watch of app" in caplog.text and "failed" in caplog.text  # it was cut off
    assert "lost history" not in caplog.text
