"""The auto-pipeline's own connection to a single Redis: greeting, batching, a silent server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from layotto_fast.errors import Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.state import SetOp
from tests.backends.servers import RedisServer
from tests.components.support import until
from tests.procfs import sockets_to

LOOPS = pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])


def store(address: str, **metadata: str) -> object:
    manifest = ComponentManifest("r", "state.redis", "v1", {"redisHost": address, **metadata}, __file__)
    return registry.build(manifest)


def test_password_and_database_are_sent_before_the_first_batch(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", password="s3cret") as server:
        server.start()

        async def scenario() -> None:
            state: object = store(server.address, redisPassword="s3cret", redisDB="3")
            await state.init()  # type: ignore[attr-defined]
            await asyncio.gather(*(state.set([SetOp(f"k{i}", b"v")]) for i in range(50)))  # type: ignore[attr-defined]
            assert (await state.get("k7")).value == b"v"  # type: ignore[attr-defined]
            await state.close()  # type: ignore[attr-defined]

        asyncio.run(scenario())
        assert server.cli("-n", "3", "HGET", "k7", "data") == "v"
        assert server.cli("-n", "0", "EXISTS", "k7") == "0"


def test_a_server_that_stops_answering_fails_the_call_after_read_timeout(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        server.start()
        pid = server.pid
        assert pid is not None

        async def scenario() -> float:
            state: object = store(server.address, readTimeout="500ms")
            await state.init()  # type: ignore[attr-defined]
            await state.set([SetOp("k", b"v")])  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()
            try:
                with pytest.raises(Unavailable, match=r"no reply within 0\.5 s"):
                    await state.get("k")  # type: ignore[attr-defined]
            finally:
                os.kill(pid, signal.SIGCONT)
            took = time.monotonic() - started
            assert (await state.get("k")).value == b"v"  # type: ignore[attr-defined]  # reconnects
            await state.close()  # type: ignore[attr-defined]
            return took

        assert asyncio.run(scenario()) < 2.0


def test_calls_sent_one_after_another_to_a_silent_server_each_fail_within_twice_the_read_timeout(
    tmp_path: Path,
) -> None:
    """One watch per connection, not a timer per batch: a stream of new calls (each a sign of
    life from our side, none from Redis) must not keep the connection waiting for ever."""
    with RedisServer(tmp_path / "redis") as server:
        server.start()
        pid = server.pid
        assert pid is not None

        async def scenario() -> list[float]:
            state: object = store(server.address, readTimeout="400ms")
            await state.init()  # type: ignore[attr-defined]
            await state.get("k")  # type: ignore[attr-defined]  # connected, and the watch has ended

            async def timed_get() -> float:
                started = time.monotonic()
                with pytest.raises(Unavailable, match=r"no reply within 0\.4 s"):
                    await state.get("k")  # type: ignore[attr-defined]
                return time.monotonic() - started

            os.kill(pid, signal.SIGSTOP)
            try:
                calls = []
                for _ in range(6):  # one call every 100 ms while Redis says nothing
                    calls.append(asyncio.ensure_future(timed_get()))
                    await asyncio.sleep(0.1)
                waited = await asyncio.gather(*calls)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert (await state.get("k")) is None  # type: ignore[attr-defined]  # a new connection
            await state.close()  # type: ignore[attr-defined]
            return waited

        waited = asyncio.run(scenario())
        assert all(took < 0.8 + 0.2 for took in waited), waited  # twice the timeout, and slack
        assert waited[0] >= 0.4 - 0.05, waited


def test_calls_waiting_for_a_connection_that_is_lost_as_it_opens_fail_at_once(tmp_path: Path) -> None:
    """The connection a batch waited for can be lost (Redis restarting) before the batch's
    turn comes: the calls fail UNAVAILABLE, not wait for answers nobody will send."""
    with RedisServer(tmp_path / "redis") as server:
        server.start()

        async def scenario() -> None:
            state: Any = store(server.address)
            await state.init()
            await state.set([SetOp("k", b"v")])
            pipeline = state._pipeline
            opened = pipeline._open

            async def opened_then_lost() -> Any:
                connection = await opened()
                connection.transport.abort()  # the reset arrives before the batch's turn
                await asyncio.sleep(0.01)
                return connection

            pipeline._connection.transport.abort()
            await asyncio.sleep(0.01)
            pipeline._open = opened_then_lost
            with pytest.raises(Unavailable):
                await asyncio.wait_for(state.get("k"), 2.0)
            pipeline._open = opened
            assert (await state.get("k")).value == b"v"  # the next call connects again
            await state.close()

        asyncio.run(scenario())


@LOOPS
def test_calls_made_in_every_loop_turn_while_connecting_share_one_connection(
    tmp_path: Path, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """The connection was kept by the call that waited for it, once it resumed, loop turns
    after the connect had finished: a batch flushed in between found no connection and a
    finished connect, and opened a second one, which nothing closed (Redis keeps it for ever)."""
    with RedisServer(tmp_path / "redis") as server:
        server.start()

        async def scenario() -> tuple[int, int]:
            state: Any = store(server.address)
            await state.init()
            before = len(sockets_to(server.port))  # redis-py's own, which init's PING used
            calls: list[asyncio.Task[Any]] = []
            # A call in every loop turn until the first is answered, so one lands in each turn
            # of the connect, the turns after it finished among them.
            while not calls or not calls[0].done():
                calls.append(asyncio.ensure_future(state.get("k")))
                await asyncio.sleep(0)
            assert await asyncio.gather(*calls) == [None] * len(calls)
            opened = len(sockets_to(server.port)) - before
            await state.close()
            await until(lambda: not sockets_to(server.port), 1.0)
            return opened, len(sockets_to(server.port))

        with asyncio.Runner(loop_factory=new_loop) as runner:
            assert runner.run(scenario()) == (1, 0)  # one opened; none left after close()


@LOOPS
def test_close_during_a_connect_leaves_no_connection_open(
    tmp_path: Path, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """close() cancelled the calls waiting for a connection but not the connect itself: the
    connection it opened after close() was never closed."""
    with RedisServer(tmp_path / "redis") as server:
        server.start()
        pid = server.pid
        assert pid is not None

        async def scenario() -> set[str]:
            state: Any = store(server.address, redisDB="1")  # a greeting (SELECT) to wait for
            await state.init()
            before = len(sockets_to(server.port))
            os.kill(pid, signal.SIGSTOP)  # the kernel still accepts the connection; SELECT waits
            try:
                call = asyncio.ensure_future(state.get("k"))
                assert await until(lambda: len(sockets_to(server.port)) > before, 2.0)
                await state.close()
            finally:
                os.kill(pid, signal.SIGCONT)
            await asyncio.wait([call], timeout=2.0)
            assert call.cancelled() or isinstance(call.exception(), Unavailable)
            await asyncio.sleep(0.2)  # SELECT answered by now: a connect still going would be done
            return sockets_to(server.port)

        with asyncio.Runner(loop_factory=new_loop) as runner:
            assert runner.run(scenario()) == set()


def test_a_call_flushed_after_close_opens_no_connection(tmp_path: Path) -> None:
    """A call queued just before close() is flushed after it: it fails, and opens nothing."""
    with RedisServer(tmp_path / "redis") as server:
        server.start()

        async def scenario() -> set[str]:
            state: Any = store(server.address)
            await state.init()
            pipeline = state._pipeline
            call = pipeline.call(("GET", "k"))  # its flush comes in the next loop turn
            await pipeline.close()
            with pytest.raises(Unavailable, match="closed"):
                await asyncio.wait_for(call, 2.0)
            await state.close()
            await asyncio.sleep(0.1)
            return sockets_to(server.port)

        assert asyncio.run(scenario()) == set()
