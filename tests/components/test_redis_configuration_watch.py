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
from tests.backends.servers import RedisServer
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
