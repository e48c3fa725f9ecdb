"""pubsub.jetstream against a real nats-server: consumers that disappear, consumer names that
collide, and publishes JetStream can recognise as duplicates."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest

from layotto_fast.components.pubsub.jetstream import JetStreamPubSub, safe_name
from layotto_fast.errors import Unavailable
from layotto_fast.runtime.cloudevents import wrap
from layotto_fast.runtime.pubsub import SubscribeOptions
from tests.backends.servers import NatsServer
from tests.components.support import until
from tests.components.test_jetstream_pubsub import Harness, Recorder, unique


@pytest.fixture
def harness(nats_server: NatsServer) -> Iterator[Harness]:
    running = Harness(nats_server)
    yield running
    running.close()


async def jetstream_of(harness: Harness) -> tuple[nats.NATS, nats.js.JetStreamContext]:
    nc = await nats.connect(harness.server.url)
    return nc, nc.jetstream()


async def add_stream(harness: Harness, name: str, subjects: list[str]) -> None:
    """A stream made as an operator would, shared by the topics ``subjects`` cover."""
    nc, js = await jetstream_of(harness)
    try:
        await js.add_stream(name=name, subjects=subjects)
    finally:
        await nc.close()


async def delete_consumer(harness: Harness, stream: str, name: str) -> None:
    """Consumer ``name`` of ``stream`` deleted, as an operator would."""
    nc, js = await jetstream_of(harness)
    try:
        await js.delete_consumer(stream, name)
    finally:
        await nc.close()


def test_a_consumer_deleted_under_a_subscription_is_made_again(harness: Harness) -> None:
    """Every pull was refused (409 Consumer Deleted) and retried every 2 s for good: the
    subscription delivered nothing more, and its messages piled up, until a restart. The new
    consumer knows nothing of the old one's acknowledgements: what the stream holds comes again
    (at least once)."""
    pubsub, topic = harness.make(), unique()
    received = Recorder()

    async def scenario() -> None:
        await pubsub.subscribe(topic, SubscribeOptions(group="g"), received)
        await pubsub.publish(topic, b"before", {})
        assert await until(lambda: received.data == [b"before"], 5)
        await delete_consumer(harness, safe_name(topic), "g")
        await pubsub.publish(topic, b"after", {})
        assert await until(lambda: b"after" in received.data, 10), received.data

    harness.run(scenario())


def test_a_consumer_not_made_again_at_first_is_made_when_its_pulls_go_unanswered(harness: Harness) -> None:
    """After the refusal that told of the deletion, pulls to a consumer that is not there are
    not answered at all (no status): a first attempt to make it again that failed (nats-server
    answers "error creating store" for a while after a deletion) left the subscription pulling
    into nothing for good. A pull nobody answers now counts as refused, and the consumer is
    made again. The failed first attempt is injected (a fault), the rest is the real server."""
    pubsub, topic = harness.make(), unique()
    received = Recorder()
    attempts: list[str] = []
    join = pubsub._join

    async def failing_once(stream: str, durable: str, topic_: str) -> str | None:
        attempts.append(durable)
        if len(attempts) == 2:  # the first is subscribe's own; the second is the first recovery
            raise Unavailable("injected: error creating store for consumer")
        return await join(stream, durable, topic_)

    pubsub._join = failing_once  # type: ignore[method-assign]

    async def scenario() -> None:
        await pubsub.subscribe(topic, SubscribeOptions(group="g"), received)
        await delete_consumer(harness, safe_name(topic), "g")
        await pubsub.publish(topic, b"after", {})
        assert await until(lambda: b"after" in received.data, 15), (received.data, attempts)

    harness.run(scenario())
    assert len(attempts) >= 3


def test_consumer_names_that_read_alike_in_a_shared_stream_stay_apart(harness: Harness) -> None:
    """Group "a" of topic "b_<u>" and group "a_b" of topic "<u>" were both consumer "a_b_<u>" in
    a shared stream: the second joined the first's consumer, was handed the other topic's
    messages and acknowledged them, and its own topic was never read."""
    u = unique()
    stream, topic_of_a, topic_of_a_b = f"shared{u}", f"b_{u}", u

    harness.run(add_stream(harness, stream, [topic_of_a, topic_of_a_b]))
    pubsub = harness.make(streamName=stream)
    first, second = Recorder(), Recorder()

    async def scenario() -> None:
        await pubsub.subscribe(topic_of_a, SubscribeOptions(group="a"), first)
        await pubsub.subscribe(topic_of_a_b, SubscribeOptions(group="a_b"), second)
        await pubsub.publish(topic_of_a, b"for a", {})
        await pubsub.publish(topic_of_a_b, b"for a_b", {})
        assert await until(lambda: first.data == [b"for a"] and second.data == [b"for a_b"], 5)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert [m.topic for m in first.messages + second.messages] == [topic_of_a, topic_of_a_b]

    harness.run(scenario())


def test_a_client_s_cloudevent_published_twice_is_stored_once_per_topic(harness: Harness) -> None:
    """Dapr gives JetStream the event's id (Nats-Msg-Id): a client that publishes its CloudEvent
    again after a lost answer has it stored once. The same event sent to another topic of the
    stream (a dead letter) is not a duplicate. An envelope this sidecar made an id for carries
    no such header (its id is new at each publish): the same bytes sent twice are two messages."""
    stream = f"shared{unique()}"
    own = b'{"specversion": "1.0", "id": "client-1", "source": "app", "data": 1}'
    _, forwarded = wrap(own, "application/cloudevents+json", source="app", topic="t", pubsub_name="ps")
    _, minted = wrap(b"{}", "application/json", source="app", topic="t", pubsub_name="ps")

    async def stored(pubsub: JetStreamPubSub, envelope: bytes, topics: list[str]) -> int:
        nc, js = await jetstream_of(harness)
        try:
            before = int((await js.stream_info(stream)).state.messages)
            for topic in topics:
                await pubsub.publish(topic, envelope, {})
            return int((await js.stream_info(stream)).state.messages) - before
        finally:
            await nc.close()

    harness.run(add_stream(harness, stream, [f"{stream}.>"]))
    pubsub = harness.make(streamName=stream)
    assert harness.run(stored(pubsub, forwarded, [f"{stream}.orders", f"{stream}.orders", f"{stream}.dead"])) == 2
    assert harness.run(stored(pubsub, minted, [f"{stream}.orders", f"{stream}.orders"])) == 2
    raw = b'{"id": "order-42", "status": "paid"}'  # a raw payload's own "id" is no message id
    assert harness.run(stored(pubsub, raw, [f"{stream}.orders", f"{stream}.orders"])) == 2
