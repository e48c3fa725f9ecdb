"""The auto-pipeline's own connection to a single Redis: greeting, batching, a silent server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from layotto_fast.errors import Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.state import SetOp
from tests.backends.servers import RedisServer


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
