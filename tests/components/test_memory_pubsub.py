"""pubsub.in-memory's own bounds: what it keeps for groups nobody subscribes to any more.

Every SubscribeTopicEvents stream with a consumerID of its own left a group behind, and each
such group queued every later publish for good: the sidecar's memory grew without end."""

from __future__ import annotations

import asyncio
import logging

import pytest

from layotto_fast.components.pubsub import memory
from layotto_fast.components.pubsub.memory import InMemoryConfig, InMemoryPubSub
from layotto_fast.runtime.pubsub import Handler, Message, SubscribeOptions, Verdict
from tests.components.support import until


def _recording(received: list[bytes]) -> Handler:
    """A handler that keeps each message's data in ``received`` and takes it."""

    async def handler(message: Message) -> Verdict:
        received.append(message.data)
        return Verdict.SUCCESS

    return handler


def test_an_idle_group_keeps_only_the_newest_messages(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(memory, "MAX_IDLE_BACKLOG", 5)
    received: list[bytes] = []
    handler = _recording(received)

    async def scenario() -> None:
        pubsub = InMemoryPubSub(InMemoryConfig())
        stop = await pubsub.subscribe("t", SubscribeOptions(group="g"), handler)
        await stop()  # the group exists, nobody reads it
        for number in range(8):
            await pubsub.publish("t", b"%d" % number, {})
        await pubsub.subscribe("t", SubscribeOptions(group="g"), handler)
        assert await until(lambda: len(received) == 5, 2)
        await asyncio.sleep(0.05)
        await pubsub.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert received == [b"3", b"4", b"5", b"6", b"7"]
    assert "older ones are dropped" in caplog.text


def test_a_subscribed_group_keeps_its_whole_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound is for groups without a subscriber: a slow one loses nothing."""
    monkeypatch.setattr(memory, "MAX_IDLE_BACKLOG", 5)
    received: list[bytes] = []
    release = asyncio.Event()

    async def scenario() -> None:
        async def handler(message: Message) -> Verdict:
            await release.wait()
            received.append(message.data)
            return Verdict.SUCCESS

        pubsub = InMemoryPubSub(InMemoryConfig(concurrency=1))
        await pubsub.subscribe("t", SubscribeOptions(group="g"), handler)
        for number in range(20):
            await pubsub.publish("t", b"%d" % number, {})
        release.set()
        assert await until(lambda: len(received) == 20, 2)
        await pubsub.close()

    asyncio.run(scenario())
    assert received == [b"%d" % n for n in range(20)]


def test_idle_groups_beyond_the_bound_are_dropped_longest_idle_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "MAX_IDLE_GROUPS", 2)
    received: dict[str, list[bytes]] = {}

    def recorder(group: str) -> Handler:
        async def handler(message: Message) -> Verdict:
            received.setdefault(group, []).append(message.data)
            return Verdict.SUCCESS

        return handler

    async def scenario() -> None:
        pubsub = InMemoryPubSub(InMemoryConfig())
        for group in ("first", "second", "third"):  # each subscribes once and goes
            stop = await pubsub.subscribe("t", SubscribeOptions(group=group), recorder(group))
            await stop()
        await pubsub.publish("t", b"m", {})
        for group in ("first", "second", "third"):
            await pubsub.subscribe("t", SubscribeOptions(group=group), recorder(group))
        assert await until(lambda: len(received) == 2, 2)
        await asyncio.sleep(0.05)
        await pubsub.close()

    asyncio.run(scenario())
    assert received == {"second": [b"m"], "third": [b"m"]}  # "first" was forgotten: it starts afresh


def test_a_stop_called_twice_leaves_the_groups_other_subscriber_be(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract allows a second stop. Each counted the group's subscriber out: with two
    subscribers, a twice-stopped one left the group idle with the other still reading, and
    past MAX_IDLE_GROUPS the group was forgotten and publishes no longer reached it."""
    monkeypatch.setattr(memory, "MAX_IDLE_GROUPS", 0)
    received: list[bytes] = []
    handler = _recording(received)

    async def scenario() -> None:
        pubsub = InMemoryPubSub(InMemoryConfig())
        stop_a = await pubsub.subscribe("t", SubscribeOptions(group="g"), handler)
        await pubsub.subscribe("t", SubscribeOptions(group="g"), handler)
        first = asyncio.ensure_future(stop_a())
        await asyncio.sleep(0)  # under way
        await stop_a()
        assert first.done(), "a second stop returns once the first is over"
        await stop_a()
        await pubsub.publish("t", b"m", {})
        assert await until(lambda: received == [b"m"], 2)
        await pubsub.close()

    asyncio.run(scenario())
