"""pubsub.redis against a real redis-server: how its acknowledgements reach Redis, and its
own metadata.

What every pub/sub component promises is in tests/conformance/test_pubsub.py; these are
the Redis Streams component's own: settled entries are acknowledged together, in one
XACK, and none is left pending when the component closes right after settling them;
``maxLenApprox`` trims the stream; the durations read as Dapr's component reads them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from layotto_fast.components.pubsub.redis import RedisStreamsPubSub, StreamsConfig
from layotto_fast.errors import Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.pubsub import Handler, Message, SubscribeOptions, Verdict
from tests.backends.servers import RedisCluster, RedisServer
from tests.components.support import LoopHarness, until

MESSAGES = 40


class Harness(LoopHarness):
    def __init__(self, server: RedisServer) -> None:
        super().__init__(server)
        self.server = server
        self.topic = f"t{uuid.uuid4().hex[:12]}"

    def make(self, **metadata: str) -> RedisStreamsPubSub:
        manifest = ComponentManifest(
            name="streams", type="pubsub.redis", version="v1",
            metadata={"redisHost": self.server.address, **metadata}, source="test.yaml",
        )  # fmt: skip
        component = registry.build(manifest)
        assert isinstance(component, RedisStreamsPubSub)
        return self.started(component)

    def xack_calls(self) -> int:
        found = re.search(r"cmdstat_xack:calls=(\d+)", self.server.cli("INFO", "commandstats"))
        return int(found.group(1)) if found else 0

    def pending(self, group: str) -> int:
        return int(self.server.cli("XPENDING", self.topic, group).split("\n")[0])


@pytest.fixture
def harness(redis_server: RedisServer) -> Iterator[Harness]:
    running = Harness(redis_server)
    yield running
    running.close()


def recorder(into: list[bytes], verdict: Verdict = Verdict.SUCCESS) -> Handler:
    """A handler that keeps each message's data in ``into`` and answers ``verdict``."""

    async def handler(message: Message) -> Verdict:
        into.append(message.data)
        return verdict

    return handler


async def _deliver_all_at_once(component: RedisStreamsPubSub, topic: str, group: str) -> list[Message]:
    """Publish MESSAGES, hold every handler call until all have arrived, then answer SUCCESS to
    all of them in one go."""
    for index in range(MESSAGES):
        await component.publish(topic, b"m%d" % index, {})
    received: list[Message] = []
    everything = asyncio.Event()

    async def handler(message: Message) -> Verdict:
        received.append(message)
        if len(received) == MESSAGES:
            everything.set()
        await everything.wait()
        return Verdict.SUCCESS

    await component.subscribe(topic, SubscribeOptions(group=group, concurrency=MESSAGES), handler)
    async with asyncio.timeout(10):
        await everything.wait()
    return received


def test_an_xack_that_fails_while_redis_restarts_is_sent_again(tmp_path: Path) -> None:
    """The app answered SUCCESS, then Redis went away before the XACK: once Redis is back
    (its append-only file keeps the stream and its pending entries), the XACK goes again.
    Before, it was dropped: the entry stayed pending and was delivered again after
    ``processingTimeout``."""
    with RedisServer(tmp_path / "redis", extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        server.start()
        harness = Harness(server)
        try:
            component = harness.make(processingTimeout="1h")  # no claim would hide a lost XACK
            received: list[bytes] = []

            async def handler(message: Message) -> Verdict:
                received.append(message.data)
                server.stop()  # the XACK for this SUCCESS finds no Redis
                return Verdict.SUCCESS

            async def scenario() -> None:
                await component.subscribe(harness.topic, SubscribeOptions(group="g"), handler)
                await component.publish(harness.topic, b"once", {})
                assert await until(lambda: received == [b"once"], 5)
                await asyncio.sleep(0.3)  # the XACK fails meanwhile
                server.start()
                assert await until(lambda: harness.pending("g") == 0, 5), "the XACK was never sent again"

            harness.run(scenario())
            assert received == [b"once"]
        finally:
            harness.close()


def test_entries_settled_together_are_acknowledged_by_one_xack(harness: Harness) -> None:
    component = harness.make()
    calls_before = harness.xack_calls()
    received = harness.run(_deliver_all_at_once(component, harness.topic, "together"))
    assert sorted(m.data for m in received) == sorted(b"m%d" % i for i in range(MESSAGES))
    assert harness.run(until(lambda: harness.pending("together") == 0, timeout=5.0)), "entries left pending"
    # One XACK per entry would be MESSAGES calls; settled in one pass they share one.
    assert harness.xack_calls() - calls_before == 1


def test_closing_right_after_settling_leaves_nothing_pending(harness: Harness) -> None:
    component = harness.make()

    async def deliver_then_close() -> None:
        await _deliver_all_at_once(component, harness.topic, "closing")
        await component.close()  # the handlers settle while it drains; their XACK is still waiting

    harness.run(deliver_then_close())
    assert harness.pending("closing") == 0


def test_a_full_subscriber_gets_the_rest_of_a_read_in_batches_of_half_its_slots(harness: Harness) -> None:
    """Eight entries read at once, four slots: once the first four are taken, one freed slot
    starts nothing; the second starts two together (one write to the app, not two)."""
    component = harness.make()
    started: list[bytes] = []
    answers: dict[bytes, asyncio.Future[Verdict]] = {}

    async def handler(message: Message) -> Verdict:
        started.append(message.data)
        answers[message.data] = asyncio.get_running_loop().create_future()
        return await answers[message.data]

    async def scenario() -> None:
        for index in range(8):
            await component.publish(harness.topic, b"m%d" % index, {})
        await component.subscribe(harness.topic, SubscribeOptions(group="halves", concurrency=4), handler)
        assert await until(lambda: len(started) == 4, timeout=5.0)
        answers[b"m0"].set_result(Verdict.SUCCESS)
        await asyncio.sleep(0.1)
        assert started == [b"m0", b"m1", b"m2", b"m3"], "a single freed slot started a message"
        answers[b"m1"].set_result(Verdict.SUCCESS)
        assert await until(lambda: len(started) == 6, timeout=5.0)
        for index in range(2, 6):
            answers[b"m%d" % index].set_result(Verdict.SUCCESS)
        assert await until(lambda: len(started) == 8, timeout=5.0)
        for index in range(6, 8):
            answers[b"m%d" % index].set_result(Verdict.SUCCESS)

    harness.run(scenario())
    assert started == [b"m%d" % index for index in range(8)]
    assert harness.run(until(lambda: harness.pending("halves") == 0, timeout=5.0)), "entries left pending"


def test_a_backlog_behind_slow_handlers_is_handed_over_once(harness: Harness) -> None:
    """One read brings eight entries for two slots: the six that wait for a slot, and those
    being handled, grow idle past processingTimeout in Redis. This subscription's own claimer
    claims them, but must not hand out again what its reader holds: each comes once."""
    component = harness.make(processingTimeout="200ms", redeliverInterval="50ms")
    sent = [b"m%d" % index for index in range(8)]
    received: list[Message] = []
    at_work: set[bytes] = set()
    twice_at_once: list[bytes] = []

    async def slow(message: Message) -> Verdict:
        received.append(message)
        if message.data in at_work:
            twice_at_once.append(message.data)
        at_work.add(message.data)
        await asyncio.sleep(0.25)  # longer than processingTimeout too
        at_work.discard(message.data)
        return Verdict.SUCCESS

    async def scenario() -> None:
        for data in sent:
            await component.publish(harness.topic, data, {})
        await component.subscribe(harness.topic, SubscribeOptions(group="backlog", concurrency=2), slow)
        assert await until(lambda: len(received) >= len(sent), timeout=10.0)
        assert await until(lambda: harness.pending("backlog") == 0, timeout=5.0), "entries left pending"
        await asyncio.sleep(0.5)  # ten claim intervals: time for a redelivery, if any were due

    harness.run(scenario())
    assert twice_at_once == [], "handed out again while the first copy was being handled"
    assert sorted(m.data for m in received) == sorted(sent)
    assert [m.delivery_count for m in received] == [1] * len(sent)


def test_an_entry_without_data_is_acknowledged_and_said_so(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Another writer's entry with no 'data' field has nothing to hand over: it is not
    delivered, not left pending forever, and the log names it."""
    component = harness.make()
    received: list[bytes] = []

    async def scenario() -> None:
        await component.subscribe(harness.topic, SubscribeOptions(group="strangers"), recorder(received))
        foreign = harness.server.cli("XADD", harness.topic, "*", "other", "x").strip()
        await component.publish(harness.topic, b"ours", {})
        assert await until(lambda: received == [b"ours"], timeout=5.0)
        assert await until(lambda: harness.pending("strangers") == 0, timeout=5.0)
        assert f"entry {foreign} of stream {harness.topic} has no 'data' field" in caplog.text

    with caplog.at_level("WARNING", logger="layotto_fast"):
        harness.run(scenario())


def streams_config(**metadata: str) -> StreamsConfig:
    manifest = ComponentManifest(
        name="streams", type="pubsub.redis", version="v1", metadata={"redisHost": "127.0.0.1:6379", **metadata},
        source="test.yaml",
    )  # fmt: skip
    return StreamsConfig.from_manifest(manifest)


def test_durations_read_as_dapr_reads_them() -> None:
    """Dapr's defaults (from its code), and plain digits as milliseconds: a manifest written
    for Dapr means the same here."""
    defaults = streams_config()
    assert (defaults.processing_timeout, defaults.redeliver_interval) == (60.0, 15.0)
    plain = streams_config(processingTimeout="600000", redeliverInterval="5000")
    assert (plain.processing_timeout, plain.redeliver_interval) == (600.0, 5.0)
    spelled = streams_config(processingTimeout="2m", redeliverInterval="250ms")
    assert (spelled.processing_timeout, spelled.redeliver_interval) == (120.0, 0.25)


def test_a_duration_of_few_plain_milliseconds_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="layotto_fast"):
        assert streams_config(processingTimeout="60").processing_timeout == 0.06
    assert "spec.metadata.processingTimeout 60 is read as milliseconds" in caplog.text


@pytest.mark.parametrize("off", [{"processingTimeout": "0", "redeliverInterval": "100ms"},
                                 {"processingTimeout": "1ms", "redeliverInterval": "0"}])  # fmt: skip
def test_either_duration_at_zero_turns_claiming_off(harness: Harness, off: dict[str, str]) -> None:
    """An entry the subscriber left pending is not handed out again by this sidecar's
    claimer when either duration is 0 (with both set, the conformance suite shows it is)."""
    component = harness.make(**off)
    handled: list[bytes] = []

    async def scenario() -> None:
        await component.subscribe(harness.topic, SubscribeOptions(group="unclaimed"), recorder(handled, Verdict.RETRY))
        await component.publish(harness.topic, b"once", {})
        assert await until(lambda: handled == [b"once"], timeout=5.0)
        await asyncio.sleep(1.0)  # ten claim intervals, where claiming is on

    harness.run(scenario())
    assert handled == [b"once"]
    assert harness.pending("unclaimed") == 1


def test_max_len_approx_trims_the_stream(harness: Harness) -> None:
    """``MAXLEN ~``: Redis trims whole nodes (100 entries each by default), so the stream
    keeps somewhat more than asked, never the 2,000 published."""
    trimmed, untrimmed = harness.make(maxLenApprox="100"), harness.make()
    other = f"{harness.topic}-untrimmed"

    async def publish_all() -> None:
        for index in range(2000):
            await trimmed.publish(harness.topic, b"m%d" % index, {})
            await untrimmed.publish(other, b"m%d" % index, {})

    harness.run(publish_all())
    assert 100 <= int(harness.server.cli("XLEN", harness.topic)) < 300
    assert int(harness.server.cli("XLEN", other)) == 2000


def test_every_connection_of_the_component_authenticates(tmp_path: Path) -> None:
    """Publishing, the blocking reads, the group set-up and the acknowledgements each use a
    connection of their own: with redisPassword, all of them work against a server that
    requires it."""
    with RedisServer(tmp_path / "redis", password="s3cret") as server:
        server.start()
        manifest = ComponentManifest(
            name="streams", type="pubsub.redis", version="v1",
            metadata={"redisHost": server.address, "redisPassword": "s3cret"}, source="test.yaml",
        )  # fmt: skip
        received: list[bytes] = []

        async def scenario() -> None:
            component = registry.build(manifest)
            assert isinstance(component, RedisStreamsPubSub)
            await component.init()
            await component.subscribe("locked", SubscribeOptions(group="keyholders"), recorder(received))
            for index in range(3):
                await component.publish("locked", b"m%d" % index, {})
            assert await until(lambda: len(received) == 3, timeout=5.0)
            assert await until(lambda: server.cli("XPENDING", "locked", "keyholders").split("\n")[0] == "0", 5.0)
            await component.close()

        asyncio.run(scenario())
    assert received == [b"m0", b"m1", b"m2"]


def consumers(harness: Harness, group: str) -> list[str]:
    """The names of ``group``'s consumers, from XINFO CONSUMERS."""
    lines = harness.server.cli("XINFO", "CONSUMERS", harness.topic, group).split("\n")
    return [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == "name"]


def test_a_stopped_subscription_leaves_its_group_unless_entries_are_pending_on_it(harness: Harness) -> None:
    """Every subscription is a consumer of its own (a stream per app connection, per SubscribeTopicEvents
    stream): the group kept them all for good. One holding pending entries stays, to be claimed from."""
    component = harness.make()
    taken: list[bytes] = []

    async def scenario(verdict: Verdict, data: bytes) -> None:
        stop = await component.subscribe(harness.topic, SubscribeOptions(group="g"), recorder(taken, verdict))
        await component.publish(harness.topic, data, {})
        assert await until(lambda: data in taken, 5)
        await stop()

    harness.run(scenario(Verdict.SUCCESS, b"done"))
    assert consumers(harness, "g") == []
    harness.run(scenario(Verdict.RETRY, b"kept"))
    assert len(consumers(harness, "g")) == 1 and harness.pending("g") == 1


def test_an_entry_held_past_processing_timeout_is_not_claimed_by_the_other_consumers(harness: Harness) -> None:
    """Two subscriptions share a group; the one that reads the entry takes 2.5 s to handle it,
    past processingTimeout (1 s). Before, the other one's claim pass took the entry once it
    was idle that long and delivered it a second time while the first still had it."""
    component = harness.make(processingTimeout="1s", redeliverInterval="200ms")
    handled: list[tuple[str, bytes]] = []

    def slow(name: str) -> Handler:
        async def handler(message: Message) -> Verdict:
            handled.append((name, message.data))
            await asyncio.sleep(2.5)
            return Verdict.SUCCESS

        return handler

    async def scenario() -> None:
        await component.subscribe(harness.topic, SubscribeOptions(group="g"), slow("first"))
        await component.subscribe(harness.topic, SubscribeOptions(group="g"), slow("second"))
        await component.publish(harness.topic, b"once", {})
        assert await until(lambda: harness.pending("g") == 0 and len(handled) > 0, 6)
        await asyncio.sleep(0.5)  # a claim pass or two more

    harness.run(scenario())
    assert [data for _, data in handled] == [b"once"], handled


def test_a_read_timeout_under_a_second_does_not_cut_idle_reads(harness: Harness) -> None:
    """A read blocked READ_BLOCK_MS (1 s) whatever the read timeout: with readTimeout 400ms every
    idle read was cut off, its connection dropped and made again about twice a second."""
    component = harness.make(readTimeout="400ms")
    taken: list[bytes] = []

    def connections() -> int:
        found = re.search(r"total_connections_received:(\d+)", harness.server.cli("INFO", "stats"))
        assert found
        return int(found.group(1))

    async def scenario() -> int:
        await component.subscribe(harness.topic, SubscribeOptions(group="g"), recorder(taken))
        await asyncio.sleep(0.2)
        before = connections()
        await asyncio.sleep(2.0)  # idle: only blocked reads waiting
        made = connections() - before - 1  # less the connection redis-cli made to ask
        await component.publish(harness.topic, b"late", {})
        assert await until(lambda: taken == [b"late"], 5)
        return made

    assert harness.run(scenario()) == 0


def make_sweeping(harness: Harness, stale_seconds: float, **metadata: str) -> RedisStreamsPubSub:
    """A component whose consumers count as stale after ``stale_seconds`` (an hour or more in
    production: a test cannot wait for that)."""
    manifest = ComponentManifest(
        name="streams", type="pubsub.redis", version="v1",
        metadata={"redisHost": harness.server.address, **metadata}, source="test.yaml",
    )  # fmt: skip
    config = dataclasses.replace(StreamsConfig.from_manifest(manifest), stale_consumer_seconds=stale_seconds)
    return harness.started(RedisStreamsPubSub(config))


def left_behind(harness: Harness, group: str) -> None:
    """Consumers of subscriptions that are gone, as a killed sidecar leaves them: ``holding``
    read an entry and never settled it, ``done`` read one and acknowledged it."""
    harness.server.cli("XGROUP", "CREATE", harness.topic, group, "0", "MKSTREAM")
    harness.server.cli("XADD", harness.topic, "*", "data", "held")
    harness.server.cli("XREADGROUP", "GROUP", group, "holding", "COUNT", "1", "STREAMS", harness.topic, ">")
    acked = harness.server.cli("XADD", harness.topic, "*", "data", "acked")
    harness.server.cli("XREADGROUP", "GROUP", group, "done", "COUNT", "1", "STREAMS", harness.topic, ">")
    harness.server.cli("XACK", harness.topic, group, acked)


def test_stale_consumers_with_nothing_pending_are_deleted_but_not_those_holding_entries(harness: Harness) -> None:
    """A consumer left by a subscription that is gone stayed in its group for good. Once stale it
    is deleted, unless entries are pending on it (deleting it would drop them: never delivered
    again); this sidecar's own live consumer stays however long it has been idle."""
    left_behind(harness, "swept")
    # processingTimeout an hour: the held entry is not claimed during the test
    component = make_sweeping(harness, 0.5, processingTimeout="1h", redeliverInterval="50ms")
    taken: list[bytes] = []

    async def scenario() -> None:
        await component.subscribe(harness.topic, SubscribeOptions(group="swept"), recorder(taken))
        await component.publish(harness.topic, b"live", {})  # Redis 7.0 makes a consumer at its first entry
        assert await until(lambda: taken == [b"live"], 5)
        assert await until(lambda: "done" not in consumers(harness, "swept"), 5), consumers(harness, "swept")
        await asyncio.sleep(1.5)  # every consumer idle past the threshold, thirty sweeps

    harness.run(scenario())
    names = consumers(harness, "swept")
    assert "holding" in names and harness.pending("swept") == 1
    assert len(names) == 2, names  # and the live one


def test_a_stale_consumer_holding_entries_goes_once_they_are_claimed(harness: Harness) -> None:
    left_behind(harness, "claimed")
    component = make_sweeping(harness, 0.5, processingTimeout="200ms", redeliverInterval="50ms")
    taken: list[Message] = []

    async def handler(message: Message) -> Verdict:
        taken.append(message)
        return Verdict.SUCCESS

    async def scenario() -> None:
        await component.subscribe(harness.topic, SubscribeOptions(group="claimed"), handler)
        assert await until(lambda: [(m.data, m.delivery_count) for m in taken] == [(b"held", 2)], 5), taken
        # ``done`` was made a few milliseconds after ``holding``: a sweep can find one stale and
        # not yet the other, so wait for both
        assert await until(lambda: not {"holding", "done"} & set(consumers(harness, "claimed")), 5), consumers(
            harness, "claimed"
        )
        # The entry's XACK goes out within 2 ms of the SUCCESS, on this loop: waited for here,
        # while the loop runs, not looked for once it has stopped
        assert await until(lambda: harness.pending("claimed") == 0, 5), harness.pending("claimed")

    harness.run(scenario())
    assert len(consumers(harness, "claimed")) == 1  # the live one, which claimed the entry


def test_stale_consumers_are_deleted_on_a_cluster_too(redis_cluster: RedisCluster) -> None:
    """The deleting script runs on the stream's master, found by its key."""
    harness = Harness(redis_cluster)  # type: ignore[arg-type]  # cli, address: all a cluster has too
    try:
        left_behind(harness, "swept")
        component = make_sweeping(harness, 0.3, redisType="cluster", processingTimeout="1h", redeliverInterval="50ms")

        async def scenario() -> None:
            await component.subscribe(harness.topic, SubscribeOptions(group="swept"), recorder([]))
            assert await until(lambda: "done" not in consumers(harness, "swept"), 5), consumers(harness, "swept")

        harness.run(scenario())
        assert "holding" in consumers(harness, "swept")  # with ours from Redis 7.2, which makes it at its first read
    finally:
        harness.close()


def test_stream_ttl_trims_entries_older_than_it_at_each_publish(harness: Harness) -> None:
    """Dapr's streamTTL (XADD with MINID ~): accepted and ignored before, so a stream grew
    without bound. Trimming is approximate, by Redis's nodes of 100 entries: the old ones
    in whole nodes go."""
    pubsub = harness.make(streamTTL="300ms")

    async def scenario() -> None:
        for i in range(250):
            await pubsub.publish(harness.topic, b"old-%d" % i, {})
        await asyncio.sleep(0.5)
        await pubsub.publish(harness.topic, b"new", {})

    harness.run(scenario())
    assert int(harness.server.cli("XLEN", harness.topic)) < 100


def test_redis_out_of_memory_is_unavailable_not_failed_precondition(harness: Harness) -> None:
    """OOM under noeviction refuses for Redis's state, not the message's: UNAVAILABLE, which
    clients retry, as state.redis answers it. It was FAILED_PRECONDITION."""
    pubsub = harness.make()
    policy = harness.server.cli("CONFIG", "GET", "maxmemory-policy").split("\n")[1]
    harness.server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    harness.server.cli("CONFIG", "SET", "maxmemory", "1")
    try:
        with pytest.raises(Unavailable, match="OOM"):
            harness.run(pubsub.publish(harness.topic, b"x", {}))
    finally:
        harness.server.cli("CONFIG", "SET", "maxmemory", "0")
        harness.server.cli("CONFIG", "SET", "maxmemory-policy", policy)
    harness.run(pubsub.publish(harness.topic, b"x", {}))
