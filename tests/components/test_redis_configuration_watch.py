"""``configuration.redis``'s watch when its pub/sub connection dies without a word: a real
redis-server behind a TCP relay in the test that can go silent (the session fixture of
tests/backends, via tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from layotto_fast.components.configuration.redis import RedisConfigurationStore
from layotto_fast.components.redis_client import RedisConfig
from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery
from tests.backends.servers import RedisCluster, RedisServer
from tests.components.support import until

PING_INTERVAL = 0.3
# How long a PING may go unanswered. A healthy Redis answers in a millisecond, but a loaded
# machine can hold a PONG (or the event loop reading it) for a good part of a second: far
# enough above that, the idle phase cannot mistake a late PONG for a dead connection. It is
# kept short all the same, for the silent phase.
READ_TIMEOUT = 2.0
# A dead connection is noticed within PING_INTERVAL + READ_TIMEOUT; then a reconnect
# (50 ms) and a resync: 2.5 s more leaves room for a slow machine, and is far below "never".
BOUND = PING_INTERVAL + READ_TIMEOUT + 2.5
# PINGs answered on the idle connection before it counts as kept: the watch pings again only
# once the previous PING was answered, and one that took no PONG as an answer would have
# stopped at the first and replaced the connection READ_TIMEOUT later.
ANSWERED_PINGS = 4


class _Link:
    """One relayed connection: whether it carries a subscription, whether it went silent, and
    the PINGs sent over it and the PONGs relayed back."""

    def __init__(self) -> None:
        self.subscribed = False
        self.silent = False
        self.pings = 0
        self.pongs = 0
        self.writers: list[asyncio.StreamWriter] = []


class SilencingRelay:
    """Forwards loopback connections to Redis. ``silence_subscriptions()`` makes every
    connection that has sent PSUBSCRIBE go quiet both ways while staying open: bytes from
    either side are read and dropped, no FIN or RST is sent, as when the peer host is gone
    or a NAT forgot the flow. Later connections are forwarded as usual."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self.links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def subscriptions(self) -> int:
        """How many connections have subscribed so far."""
        return sum(link.subscribed for link in self.links)

    def silence_subscriptions(self) -> None:
        for link in self.links:
            if link.subscribed:
                link.silent = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        link = _Link()
        link.writers = [writer, up_writer]
        self.links.append(link)
        for task in (self._pump(reader, up_writer, link, True), self._pump(up_reader, writer, link, False)):
            running = asyncio.ensure_future(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link, from_client: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if from_client and b"PSUBSCRIBE" in data.upper():
                    link.subscribed = True
                if link.subscribed and not link.silent:
                    if from_client:
                        link.pings += data.count(b"$4\r\nPING\r\n")
                    else:  # RESP3 answers +PONG while subscribed, RESP2 a "pong" array
                        link.pongs += data.count(b"+PONG\r\n") + data.count(b"$4\r\npong\r\n")
                if link.silent:
                    continue  # the peer is gone: nothing arrives, nothing is refused
                sink.write(data)
                await sink.drain()
        if not link.silent:
            sink.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for writer in link.writers:
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def test_a_watch_connection_that_goes_silent_is_replaced_and_later_changes_arrive(redis_server: RedisServer) -> None:
    app, key = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    seen: list[list[ConfigItem]] = []

    async def scenario() -> None:
        relay = SilencingRelay(redis_server.host, redis_server.port)
        port = await relay.start()
        config = RedisConfig(
            host="127.0.0.1",
            port=port,
            read_timeout=READ_TIMEOUT,
            key_prefix=f"silent-{app}:",
            component="config (configuration.redis)",
        )
        store = RedisConfigurationStore(config, watch_ping_interval=PING_INTERVAL)
        await store.init()
        try:
            store.watch(ConfigQuery(app, (key,), "g", "l"), seen.append)
            redis_key = store.redis_key(app, "g", "l", key)
            # redis-cli in a thread: blocking the loop would hold the watch's PONGs unread
            await asyncio.to_thread(redis_server.cli, "HSET", redis_key, "content", "v1")
            assert await until(lambda: len(seen) == 1, 5.0), seen
            assert relay.subscriptions == 1
            first = next(link for link in relay.links if link.subscribed)

            # Idle but healthy: PING after PING is answered on the first connection, and it is kept.
            idle = ANSWERED_PINGS * (PING_INTERVAL + READ_TIMEOUT)
            assert await until(lambda: first.pongs >= ANSWERED_PINGS, idle), (first.pings, first.pongs)
            assert relay.subscriptions == 1 and first.pings >= ANSWERED_PINGS

            relay.silence_subscriptions()
            await asyncio.sleep(0.05)
            # its notification is lost with the connection
            await asyncio.to_thread(redis_server.cli, "HSET", redis_key, "content", "v2")
            started = time.monotonic()
            assert await until(lambda: len(seen) == 2, BOUND), f"no change within {BOUND} s: {seen}"
            assert time.monotonic() - started < BOUND
            assert seen[1] == [ConfigItem(app, key, "v2", "g", "l")]
            assert relay.subscriptions == 2  # a new connection subscribed, and resynced

            # The new connection carries notifications as before.
            await asyncio.to_thread(redis_server.cli, "HSET", redis_key, "content", "v3")
            assert await until(lambda: len(seen) == 3, 5.0), seen
            assert seen[2] == [ConfigItem(app, key, "v3", "g", "l")]
        finally:
            await store.close()
            await relay.close()

    asyncio.run(scenario())


def test_deleted_keys_are_reported_once_and_then_forgotten(redis_server: RedisServer) -> None:
    """A watch kept an entry for every key it ever reported deleted: with ``*`` watches over
    keys that come and go, without end. A deleted key is forgotten once no event sent before
    the deletion was seen can still arrive, and still never reported deleted twice: here the
    events of thousands of keys written and deleted at once arrive in several batches, each
    key's deletion event often in a batch read after the key was found gone. A key written
    again after it was forgotten is reported as ever."""
    app = uuid.uuid4().hex[:12]
    count = 3000
    reports: dict[str, list[str]] = {}

    def listener(items: list[ConfigItem]) -> None:
        for item in items:
            reports.setdefault(item.key, []).append(item.content)

    async def scenario() -> None:
        config = RedisConfig(host=redis_server.host, port=redis_server.port, key_prefix=f"churn-{app}:",
                             component="config (configuration.redis)")  # fmt: skip
        store = RedisConfigurationStore(config)
        writer = config.connect()
        await store.init()
        try:
            store.watch(ConfigQuery(app), listener)  # every group, every label
            redis_key = {f"k{index}": store.redis_key(app, "g", "l", f"k{index}") for index in range(count)}
            pipe = writer.pipeline(transaction=False)
            for key in redis_key.values():
                pipe.hset(key, "content", "v1")
                pipe.delete(key)
            await pipe.execute()
            assert await until(lambda: all(reports.get(key, [])[-1:] == [""] for key in redis_key), 10.0)
            told = store._watcher._told
            assert await until(lambda: not told, 5.0), f"{len(told)} deleted keys still remembered"
            await asyncio.sleep(0.2)  # any event still on its way
            twice = {key: seen for key, seen in reports.items() if seen.count("") != 1 or seen[-1] != ""}
            assert not twice, list(twice.items())[:5]

            await writer.hset(redis_key["k7"], "content", "v2")  # forgotten, written again
            assert await until(lambda: reports["k7"][-1:] == ["v2"], 5.0), reports["k7"]
            await writer.delete(redis_key["k7"])
            assert await until(lambda: reports["k7"][-1:] == [""], 5.0), reports["k7"]
            assert await until(lambda: not told, 5.0)
            assert reports["k7"].count("") == 2
        finally:
            await store.close()
            await writer.aclose()

    asyncio.run(scenario())


def test_on_a_cluster_deleted_keys_are_forgotten_once_every_master_answered(redis_cluster: RedisCluster) -> None:
    """Each master reports its own keys on a pubsub of its own: a deleted key is forgotten once
    every one of them answered a PING sent after the deletion was reported, the quiet ones
    included (they send theirs when their silence ends, after ``watch_ping_interval``)."""
    app = uuid.uuid4().hex[:12]
    reports: dict[str, list[str]] = {}

    def listener(items: list[ConfigItem]) -> None:
        for item in items:
            reports.setdefault(item.key, []).append(item.content)

    async def scenario() -> None:
        config = RedisConfig(host=redis_cluster.host, port=redis_cluster.port, cluster=True,
                             key_prefix=f"churn-{app}:", component="config (configuration.redis)")  # fmt: skip
        store = RedisConfigurationStore(config, watch_ping_interval=PING_INTERVAL)
        writer = config.connect()
        await store.init()
        try:
            store.watch(ConfigQuery(app), listener)
            keys = [f"k{index}" for index in range(300)]  # over every master
            pipe = writer.pipeline(transaction=False)
            for key in keys:
                pipe.hset(store.redis_key(app, "g", "l", key), "content", "v1")
                pipe.delete(store.redis_key(app, "g", "l", key))
            await pipe.execute()
            assert await until(lambda: all(reports.get(key, [])[-1:] == [""] for key in keys), 10.0)
            told = store._watcher._told
            assert await until(lambda: not told, 5.0), f"{len(told)} deleted keys still remembered"
            assert all(reports[key].count("") == 1 for key in keys)
        finally:
            await store.close()
            await writer.aclose()

    asyncio.run(scenario())


def test_close_ends_a_watch_whose_cancel_a_ping_lost(redis_server: RedisServer) -> None:
    """Python 3.11's ``asyncio.wait_for``, which redis-py sends through, loses a cancel that
    comes in the turn its send finishes (fixed in 3.12). A reader cancelled then ran on, and
    ``close()`` waited for it forever (stop 43's CI run). Here every PING of the watch loses
    a cancel that comes while it is sent, as that ``wait_for`` does; the real bug needs a
    timing that cannot be had on demand."""
    app = uuid.uuid4().hex[:12]
    pinging = asyncio.Event()

    async def scenario() -> None:
        config = RedisConfig(host=redis_server.host, port=redis_server.port, key_prefix=f"lost-{app}:",
                             component="config (configuration.redis)")  # fmt: skip
        store = RedisConfigurationStore(config, watch_ping_interval=0.05)
        await store.init()
        assert await until(lambda: bool(store._watcher._subscriptions), 5.0)  # the reader runs
        pubsub = store._watcher._subscriptions[0].pubsub
        real_ping = pubsub.ping

        lost: list[bool] = []

        async def ping_losing_a_cancel(*args: object) -> object:
            answer = await real_ping(*args)
            pinging.set()
            if lost:
                return answer
            try:
                await asyncio.sleep(0.2)  # the send, still under way
            except asyncio.CancelledError:
                lost.append(True)  # and the cancel lost, as 3.11's wait_for loses it
            return answer

        pubsub.ping = ping_losing_a_cancel
        store.watch(ConfigQuery(app), lambda items: None)
        await asyncio.wait_for(pinging.wait(), 5.0)  # a PING after 0.05 s of silence
        pinging.clear()
        await asyncio.wait_for(pinging.wait(), 5.0)  # and the next one is being sent
        started = time.monotonic()
        await asyncio.wait_for(store.close(), 5.0)
        assert lost and time.monotonic() - started < 1.0

    asyncio.run(scenario())
