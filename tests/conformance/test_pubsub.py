"""Pub/sub conformance: what every component promises, against its real backend.

Data and metadata arrive intact; order is kept (per partition key when handled
concurrently); RETRY and errors bring a message back, DROP and SUCCESS do not; a
subscriber that goes away leaves its unacknowledged messages to the rest of its group;
subscribers of one group share messages, every group gets each one. Through the pub/sub
service: ids survive, retries and dead letters behave the same over every backend.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from layotto_fast.errors import Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.cloudevents import Event
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.pubsub import PARTITION_KEY, Message, SubscribeOptions, Verdict
from layotto_fast.runtime.pubsub_service import DeliveryCounts, PubSubService, TopicSubscription
from tests.conformance.conftest import Harness, implementations
from tests.conformance.matrix import Implementation

pytestmark = implementations("pubsub")

PATIENCE = 10.0  # seconds a test waits for messages it expects


class Inbox:
    """What a handler received, with a verdict chosen per message."""

    def __init__(self, verdict: Callable[[Message], Verdict] = lambda m: Verdict.SUCCESS, delay: float = 0.0) -> None:
        self.messages: list[Message] = []
        self._verdict = verdict
        self._delay = delay

    async def __call__(self, message: Message) -> Verdict:
        if self._delay:
            await asyncio.sleep(random.uniform(0, self._delay))
        self.messages.append(message)
        return self._verdict(message)

    def data(self) -> list[bytes]:
        return [m.data for m in self.messages]

    @staticmethod
    async def until(done: Callable[[], bool], timeout: float = PATIENCE) -> None:
        """Wait until ``done()`` (which may look at several inboxes)."""
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.01)


def _topic() -> str:
    return f"conf-{uuid.uuid4().hex[:10]}"


def _group() -> str:
    return f"g-{uuid.uuid4().hex[:6]}"


def _at_least_once(implementation: Implementation) -> bool:
    """Whether the backend may hand a message out once more than asked: JetStream, under a
    loaded machine, now and then delivers an extra copy (an acknowledgement that came after
    ackWait, say), as at-least-once allows."""
    return implementation.type == "pubsub.jetstream"


async def _publish(pubsub: Any, topic: str, count: int, **meta: str) -> list[bytes]:
    sent = [b"m-%d-%s" % (i, uuid.uuid4().hex[:4].encode()) for i in range(count)]
    for data in sent:
        await pubsub.publish(topic, data, meta)
    return sent


def test_data_and_metadata_arrive_in_order(harness: Harness, implementation: Implementation) -> None:
    pubsub = harness.make(implementation)
    topic, inbox = _topic(), Inbox()

    async def run() -> list[bytes]:
        stop = await pubsub.subscribe(topic, SubscribeOptions(group=_group(), concurrency=1), inbox)
        sent = await _publish(pubsub, topic, 30, tenant="a b")
        if _at_least_once(implementation):  # an extra copy does not stand for a message
            await inbox.until(lambda: set(inbox.data()) >= set(sent))
        else:
            await inbox.until(lambda: len(inbox.messages) >= 30)
        await stop()
        return sent

    sent = harness.run(run())
    if _at_least_once(implementation):
        # An extra copy may come, late; each message's first comes in the order published.
        assert list(dict.fromkeys(inbox.data())) == sent, "with one at a time, messages arrive in the order published"
    else:
        assert inbox.data() == sent, "with one at a time, messages arrive in the order published"
    assert all(m.metadata.get("tenant") == "a b" and m.topic == topic for m in inbox.messages)


def test_order_per_partition_key_when_concurrent(harness: Harness, implementation: Implementation) -> None:
    pubsub = harness.make(implementation)
    topic, inbox = _topic(), Inbox(delay=0.01)

    async def run() -> dict[str, list[bytes]]:
        stop = await pubsub.subscribe(topic, SubscribeOptions(group=_group(), concurrency=8), inbox)
        sent: dict[str, list[bytes]] = {}
        for i in range(60):
            key = f"k{i % 4}"
            data = b"%s-%d" % (key.encode(), i)
            sent.setdefault(key, []).append(data)
            await pubsub.publish(topic, data, {PARTITION_KEY: key})
        await inbox.until(lambda: len(inbox.messages) >= 60)
        await stop()
        return sent

    sent = harness.run(run())
    for key, datas in sent.items():
        assert [m.data for m in inbox.messages if m.metadata.get(PARTITION_KEY) == key] == datas, key


def test_retry_and_errors_redeliver_drop_and_success_do_not(harness: Harness, implementation: Implementation) -> None:
    pubsub = harness.make(implementation)
    topic = _topic()
    first_time: set[bytes] = set()

    def verdict(message: Message) -> Verdict:
        if message.data in (b"retry", b"raise") and message.data not in first_time:
            first_time.add(message.data)
            if message.data == b"raise":
                raise RuntimeError("subscriber failed")
            return Verdict.RETRY
        return Verdict.DROP if message.data == b"drop" else Verdict.SUCCESS

    inbox = Inbox(verdict)
    expected = Counter({b"retry": 2, b"raise": 2, b"drop": 1, b"ok": 1})

    async def run() -> None:
        stop = await pubsub.subscribe(topic, SubscribeOptions(group=_group()), inbox)
        for data in (b"retry", b"raise", b"drop", b"ok"):
            await pubsub.publish(topic, data, {})
        await inbox.until(lambda: Counter(inbox.data()) >= expected)
        await asyncio.sleep(2.5)  # past every component's redelivery time in this matrix
        await stop()

    harness.run(run())
    counts = Counter(inbox.data())
    if _at_least_once(implementation):
        # One extra copy of a message is allowed, not a redelivery loop: a DROP or a SUCCESS
        # taken for a RETRY would come back every ackWait (1 s), three times or more by now.
        assert counts.keys() == expected.keys(), counts
        assert all(expected[data] <= counts[data] <= expected[data] + 1 for data in expected), counts
        assert any(m.delivery_count >= 2 for m in inbox.messages if m.data == b"retry"), inbox.messages
    else:
        assert counts == expected, counts
        again = [m for m in inbox.messages if m.data == b"retry"][1]
        assert again.delivery_count >= 2


def test_a_group_shares_and_every_group_gets_all(harness: Harness, implementation: Implementation) -> None:
    publisher = harness.make(implementation, "publisher")
    first, second = harness.make(implementation, "first"), harness.make(implementation, "second")
    if implementation.backend is None:
        first = second = publisher  # in-memory: one process, one component
    topic, shared, other = _topic(), _group(), _group()
    a, b, c = Inbox(delay=0.005), Inbox(delay=0.005), Inbox()

    async def run() -> list[bytes]:
        stops = [
            await first.subscribe(topic, SubscribeOptions(group=shared, concurrency=2), a),
            await second.subscribe(topic, SubscribeOptions(group=shared, concurrency=2), b),
            await second.subscribe(topic, SubscribeOptions(group=other), c),
        ]
        sent = await _publish(publisher, topic, 200)
        await c.until(lambda: len(c.messages) >= 200)
        await a.until(lambda: len(a.messages) + len(b.messages) >= 200)
        for stop in stops:
            await stop()
        return sent

    sent = harness.run(run())
    assert sorted(c.data()) == sorted(sent), "a group of its own gets every message"
    assert sorted(a.data() + b.data()) == sorted(sent), "one group's subscribers get each message once between them"
    assert a.messages and b.messages, "both subscribers of the group got a share"


def test_unacknowledged_messages_go_to_the_rest_of_the_group(harness: Harness, implementation: Implementation) -> None:
    leaving = harness.make(implementation, "leaving")
    staying = harness.make(implementation, "staying") if implementation.backend else leaving
    topic, group = _topic(), _group()
    stuck = asyncio.Event()

    async def never_answers(message: Message) -> Verdict:
        stuck.set()
        await asyncio.Event().wait()
        return Verdict.SUCCESS

    inbox = Inbox()

    async def run() -> None:
        stop_leaving = await leaving.subscribe(topic, SubscribeOptions(group=group, concurrency=1), never_answers)
        await leaving.publish(topic, b"orphan", {})
        async with asyncio.timeout(PATIENCE):
            await stuck.wait()
        await stop_leaving()  # goes away holding it, unacknowledged
        stop = await staying.subscribe(topic, SubscribeOptions(group=group), inbox)
        await inbox.until(lambda: b"orphan" in inbox.data())
        await stop()

    harness.run(run())


def test_a_stop_lets_the_handler_at_work_finish_until_its_deadline(
    harness: Harness, implementation: Implementation
) -> None:
    """A stop given a deadline 3 s away lets a handler that needs 1.5 s finish, and settles
    its SUCCESS in the backend before it returns: the group never gets the message again. (A
    fixed 1 s drain cut the handler off, and the message came back: a needless duplicate.)"""
    leaving = harness.make(implementation, "leaving")
    staying = harness.make(implementation, "staying") if implementation.backend else leaving
    topic, group = _topic(), _group()
    started: list[bytes] = []
    finished: list[bytes] = []

    async def slow(message: Message) -> Verdict:
        started.append(message.data)
        await asyncio.sleep(1.5)
        finished.append(message.data)
        return Verdict.SUCCESS

    inbox = Inbox()

    async def run() -> float:
        stop_leaving = await leaving.subscribe(topic, SubscribeOptions(group=group, concurrency=1), slow)
        await leaving.publish(topic, b"slow", {})
        await Inbox.until(lambda: bool(started))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await stop_leaving(began + 3.0)
        took = loop.time() - began
        stop = await staying.subscribe(topic, SubscribeOptions(group=group), inbox)
        await asyncio.sleep(2.5)  # past every backend's redelivery in this matrix
        await stop()
        return took

    took = harness.run(run())
    assert finished == [b"slow"], "the handler was cut off before the deadline"
    assert inbox.data() == [], "a message its handler answered SUCCESS was handed out again"
    assert 1.3 <= took < 2.9, f"the stop took {took:.2f}s: it should end when the handler does"


def test_a_stop_by_a_deadline_sooner_than_the_handler_returns_by_then(
    harness: Harness, implementation: Implementation
) -> None:
    """A deadline 0.3 s away is kept, however long the handler would take (a fixed drain of 1 s,
    5 s for JetStream, overran it); the message it cut off goes to the rest of the group."""
    leaving = harness.make(implementation, "leaving")
    staying = harness.make(implementation, "staying") if implementation.backend else leaving
    topic, group = _topic(), _group()
    stuck: list[bytes] = []

    async def never_answers(message: Message) -> Verdict:
        stuck.append(message.data)
        await asyncio.Event().wait()
        return Verdict.SUCCESS

    inbox = Inbox()

    async def run() -> float:
        stop_leaving = await leaving.subscribe(topic, SubscribeOptions(group=group, concurrency=1), never_answers)
        await leaving.publish(topic, b"orphan", {})
        await Inbox.until(lambda: bool(stuck))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await stop_leaving(began + 0.3)
        took = loop.time() - began
        stop = await staying.subscribe(topic, SubscribeOptions(group=group), inbox)
        await inbox.until(lambda: b"orphan" in inbox.data())
        await stop()
        return took

    took = harness.run(run())
    assert 0.25 <= took < 0.8, f"the stop took {took:.2f}s for a deadline 0.3 s away"


def _service(harness: Harness, implementation: Implementation, tmp_path: Path) -> tuple[Components, PubSubService]:
    """The pub/sub service over one component ``ps`` of ``implementation`` (not yet initialised)."""
    backend = harness._request.getfixturevalue(implementation.backend) if implementation.backend else None
    manifest = ComponentManifest(
        name="ps",
        type=implementation.type,
        version="v1",
        metadata=implementation.metadata(backend),
        source=str(tmp_path / "ps.yaml"),
    )
    components = Components([manifest])
    return components, PubSubService(components, "conformance-app")


def _recorder(events: list[Event], verdict: Verdict = Verdict.SUCCESS) -> Callable[[Event, float], Any]:
    """A subscriber that keeps what it gets in ``events`` and answers ``verdict``."""

    async def app(event: Event, timeout: float) -> Verdict:
        events.append(event)
        return verdict

    return app


def test_service_keeps_ids_and_dead_letters_everywhere(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    components, service = _service(harness, implementation, tmp_path)
    topic, dead = _topic(), _topic()
    events: list[Event] = []
    dead_events: list[Event] = []

    async def app(event: Event, timeout: float) -> Verdict:
        events.append(event)
        return Verdict.RETRY if event.data == b"poison" else Verdict.SUCCESS

    async def dead_app(event: Event, timeout: float) -> Verdict:
        dead_events.append(event)
        return Verdict.SUCCESS

    async def run() -> tuple[str, str]:
        await components.init_all()
        meta = {"retryAttempts": "3", "retryInitialInterval": "10ms", "consumerID": _group()}
        stops = [
            await service.subscribe(TopicSubscription("ps", topic, meta, dead_letter_topic=dead), app),
            await service.subscribe(TopicSubscription("ps", dead, {"consumerID": _group()}), dead_app),
        ]
        good = await service.publish("ps", topic, b"fine", "text/plain", {})
        poison = await service.publish("ps", topic, b"poison", "text/plain", {})
        await Inbox.until(lambda: bool(dead_events) and any(e.id == good for e in events))
        for stop in stops:
            await stop()
        await components.close_all()
        return good, poison

    good, poison = harness.run(run())
    assert Counter(e.id for e in events) == {good: 1, poison: 3}, "RETRY is tried retryAttempts times"
    assert [e.id for e in dead_events] == [poison] and dead_events[0].data == b"poison"
    assert dead_events[0].topic == dead


def test_service_raw_payload_travels_without_an_envelope(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    """rawPayload on a publish stores the bytes as they are (even bytes that look like a
    CloudEvent) and they arrive as they were, under the id publishing returned; rawPayload on a
    subscription hands every message over unread, a normal publish as its envelope's bytes."""
    components, service = _service(harness, implementation, tmp_path)
    topic, raw_topic = _topic(), _topic()
    looks_like_one = b'{"specversion": "1.0", "id": "not-mine", "source": "s", "type": "t", "data": 1}'
    events: list[Event] = []
    raw_events: list[Event] = []
    app, raw_app = _recorder(events), _recorder(raw_events)

    async def run() -> tuple[str, str]:
        await components.init_all()
        stops = [
            await service.subscribe(TopicSubscription("ps", topic, {"consumerID": _group()}), app),
            await service.subscribe(
                TopicSubscription("ps", raw_topic, {"consumerID": _group(), "rawPayload": "true"}), raw_app
            ),
        ]
        raw_id = await service.publish("ps", topic, looks_like_one, "application/json", {"rawPayload": "true"})
        wrapped_id = await service.publish("ps", raw_topic, b"hello", "text/plain", {})
        await Inbox.until(lambda: bool(events) and bool(raw_events))
        for stop in stops:
            await stop()
        await components.close_all()
        return raw_id, wrapped_id

    raw_id, wrapped_id = harness.run(run())
    assert [(e.id, e.data, e.data_content_type) for e in events] == [
        (raw_id, looks_like_one, "application/octet-stream")
    ]
    assert raw_id != "not-mine"
    envelope = orjson.loads(raw_events[0].data)
    assert envelope["id"] == wrapped_id and envelope["data"] == "hello", "the subscriber got the envelope unread"


def test_service_applies_its_rules_to_a_subscriber_that_answers_with_futures(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    """The app channel answers a delivery with a future (a call in flight), not a coroutine:
    its errors and timeouts count as RETRY and are tried again, as a coroutine's are."""
    components, service = _service(harness, implementation, tmp_path)
    topic = _topic()
    attempts: list[bytes] = []

    def app(event: Event, timeout: float) -> asyncio.Future[Verdict]:
        attempts.append(event.data)
        answer: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        tries = attempts.count(event.data)
        if event.data == b"late" and tries == 1:
            answer.set_exception(TimeoutError("no answer in time"))
        elif event.data == b"broken" and tries < 3:
            answer.set_exception(RuntimeError("the app's connection broke"))
        else:
            asyncio.get_running_loop().call_later(0.001, answer.set_result, Verdict.SUCCESS)
        return answer

    async def run() -> DeliveryCounts:
        await components.init_all()
        meta = {"retryAttempts": "3", "retryInitialInterval": "10ms", "consumerID": _group()}
        stop = await service.subscribe(TopicSubscription("ps", topic, meta), app)
        for data in (b"fine", b"late", b"broken"):
            await service.publish("ps", topic, data, "text/plain", {})
        await Inbox.until(lambda: service.counts[("ps", topic)].delivered == 3)
        await stop()
        await components.close_all()
        return service.counts[("ps", topic)]

    counts = harness.run(run())
    assert Counter(attempts) == {b"fine": 1, b"late": 2, b"broken": 3}
    assert (counts.delivered, counts.retried, counts.returned) == (3, 3, 0)


def test_service_keeps_a_message_it_could_not_dead_letter(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    """A DROP bound for a dead-letter topic that refuses it stays in the backend (the refusal
    is a fault injected into the real component's publish) and gets there once it can."""
    components, service = _service(harness, implementation, tmp_path)
    topic, dead = _topic(), _topic()
    seen: list[Event] = []
    dead_events: list[Event] = []
    refusing = True
    app, dead_app = _recorder(seen, Verdict.DROP), _recorder(dead_events)

    async def run() -> DeliveryCounts:
        nonlocal refusing
        await components.init_all()
        pubsub = components.ready("pubsub")["ps"]
        publish = pubsub.publish

        async def faulty_publish(to: str, data: bytes, metadata: dict[str, str]) -> Any:
            if refusing and to == dead:
                raise ConnectionError("dead-letter topic refused (injected fault)")
            return await publish(to, data, metadata)

        pubsub.publish = faulty_publish
        meta = {"retryAttempts": "1", "consumerID": _group()}
        stops = [
            await service.subscribe(TopicSubscription("ps", topic, meta, dead_letter_topic=dead), app),
            await service.subscribe(TopicSubscription("ps", dead, {"consumerID": _group()}), dead_app),
        ]
        doomed = await service.publish("ps", topic, b"doomed", "text/plain", {})
        await Inbox.until(lambda: len(seen) >= 2)  # handed out again: the backend still had it
        refusing = False
        await Inbox.until(lambda: bool(dead_events))
        for stop in stops:
            await stop()
        await components.close_all()
        assert {e.id for e in seen} == {doomed} and [e.id for e in dead_events] == [doomed]
        return service.counts[("ps", topic)]

    counts = harness.run(run())
    assert counts.dropped == 0 and counts.returned >= 1 and counts.dead_lettered == 1, counts


def test_service_leaves_a_message_that_used_up_its_retries_in_the_backend(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    """With no dead-letter topic, a message still RETRY after its last attempt is not
    acknowledged: the backend hands it out again."""
    components, service = _service(harness, implementation, tmp_path)
    topic = _topic()
    attempts: list[str] = []

    async def app(event: Event, timeout: float) -> Verdict:
        attempts.append(event.id)
        return Verdict.RETRY if len(attempts) <= 2 else Verdict.SUCCESS

    async def run() -> tuple[str, DeliveryCounts]:
        await components.init_all()
        meta = {"retryAttempts": "2", "retryInitialInterval": "10ms", "consumerID": _group()}
        stop = await service.subscribe(TopicSubscription("ps", topic, meta), app)
        stubborn = await service.publish("ps", topic, b"stubborn", "text/plain", {})
        await Inbox.until(lambda: service.counts[("ps", topic)].delivered == 1)
        await stop()
        await components.close_all()
        return stubborn, service.counts[("ps", topic)]

    stubborn, counts = harness.run(run())
    assert attempts == [stubborn] * 3, "two attempts, returned to the backend, then handed out again"
    assert (counts.retried, counts.returned, counts.delivered, counts.dropped) == (1, 1, 1, 0), counts


def test_service_discards_a_drop_when_there_is_no_dead_letter_topic(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    """DROP with no dead-letter topic: counted as dropped and settled in the backend, which
    never hands it out again (a RETRY there would bring it back within a second here)."""
    components, service = _service(harness, implementation, tmp_path)
    topic = _topic()
    seen: list[bytes] = []

    async def app(event: Event, timeout: float) -> Verdict:
        seen.append(event.data)
        return Verdict.DROP if event.data == b"unwanted" else Verdict.SUCCESS

    async def run() -> DeliveryCounts:
        await components.init_all()
        stop = await service.subscribe(TopicSubscription("ps", topic, {"consumerID": _group()}), app)
        await service.publish("ps", topic, b"unwanted", "text/plain", {})
        await service.publish("ps", topic, b"wanted", "text/plain", {})
        await Inbox.until(lambda: b"wanted" in seen)
        await asyncio.sleep(1.5)  # past every backend's redelivery in this matrix
        await stop()
        await components.close_all()
        return service.counts[("ps", topic)]

    counts = harness.run(run())
    assert Counter(seen) == {b"unwanted": 1, b"wanted": 1}
    assert (counts.dropped, counts.delivered, counts.returned) == (1, 1, 0), counts


def test_service_hands_a_subscription_no_more_than_its_concurrency_at_once(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    """The subscription's ``concurrency`` is how many messages the app has at once: it is
    reached (the first ones are held until it is), and never passed."""
    components, service = _service(harness, implementation, tmp_path)
    topic = _topic()
    at_once, most, done = 0, 0, 0
    full = asyncio.Event()

    async def app(event: Event, timeout: float) -> Verdict:
        nonlocal at_once, most, done
        at_once += 1
        most = max(most, at_once)
        if at_once >= 3:
            full.set()
        await full.wait()
        await asyncio.sleep(0.02)  # a subscriber past its limit would get more meanwhile
        at_once -= 1
        done += 1
        return Verdict.SUCCESS

    async def run() -> None:
        await components.init_all()
        stop = await service.subscribe(
            TopicSubscription("ps", topic, {"consumerID": _group(), "concurrency": "3"}), app
        )
        for index in range(12):
            await service.publish("ps", topic, b"m%d" % index, "text/plain", {})
        await Inbox.until(lambda: done == 12)
        await stop()
        await components.close_all()

    harness.run(run())
    assert most == 3


def test_service_backs_off_between_attempts_up_to_the_longest_interval(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    """Attempts of a RETRY wait retryInitialInterval, then twice that, capped at
    retryMaxInterval: 100, 150, 150, 150, 150 ms here, where doubling alone would give 100,
    200, 400, 800, 1600: a capped wait stays under 600 ms with room for a stalled loop, and
    an uncapped one passes it by the fourth."""
    components, service = _service(harness, implementation, tmp_path)
    topic = _topic()
    loop_times: list[float] = []

    async def app(event: Event, timeout: float) -> Verdict:
        loop_times.append(asyncio.get_running_loop().time())
        return Verdict.RETRY if len(loop_times) < 6 else Verdict.SUCCESS

    async def run() -> None:
        await components.init_all()
        meta = {"consumerID": _group(), "retryAttempts": "6", "retryInitialInterval": "100ms",
                "retryMaxInterval": "150ms"}  # fmt: skip
        stop = await service.subscribe(TopicSubscription("ps", topic, meta), app)
        await service.publish("ps", topic, b"slow to please", "text/plain", {})
        await Inbox.until(lambda: service.counts[("ps", topic)].delivered == 1)
        await stop()
        await components.close_all()

    harness.run(run())
    gaps = [later - earlier for earlier, later in itertools.pairwise(loop_times)]
    assert len(gaps) == 5
    assert gaps[0] >= 0.095 and all(gap >= 0.145 for gap in gaps[1:]), gaps
    assert all(gap < 0.6 for gap in gaps[2:]), f"the waits were not capped: {gaps}"


def test_service_close_stops_every_subscription_by_its_deadline(
    harness: Harness, implementation: Implementation, tmp_path: Path
) -> None:
    """``close(deadline)``, the sidecar's stop: every subscription stops by the one deadline,
    all at once; deliveries that finish before it are acknowledged. A subscription's own stop
    called meanwhile (the app's, unsubscribing as it closes) waits for that same stop, with
    close's deadline, rather than starting one of its own; a subscribe after it is refused."""
    components, service = _service(harness, implementation, tmp_path)
    topics = [_topic(), _topic()]
    groups = {topic: _group() for topic in topics}
    started: list[str] = []
    answered: list[str] = []

    async def slow_app(event: Event, timeout: float) -> Verdict:
        started.append(event.topic)
        await asyncio.sleep(1.5)
        answered.append(event.topic)
        return Verdict.SUCCESS

    inbox = Inbox()

    async def run() -> tuple[float, float]:
        await components.init_all()
        stops = [
            await service.subscribe(TopicSubscription("ps", topic, {"consumerID": groups[topic]}), slow_app)
            for topic in topics
        ]
        for topic in topics:
            await service.publish("ps", topic, b"slow", "text/plain", {})
        await Inbox.until(lambda: len(started) == 2)
        loop = asyncio.get_running_loop()
        began = loop.time()
        closing = asyncio.ensure_future(service.close(began + 3.0))
        await asyncio.sleep(0.05)
        await stops[0]()  # no deadline of its own: close's, not DRAIN_SECONDS from now
        one_stopped = loop.time() - began
        await closing
        took = loop.time() - began
        await stops[1]()  # stopped already: at once
        with pytest.raises(Unavailable):
            await service.subscribe(TopicSubscription("ps", topics[0], {"consumerID": groups[topics[0]]}), slow_app)
        # What the groups still hold, read past the service: nothing, once past every redelivery.
        pubsub = components.ready("pubsub")["ps"]
        later = [await pubsub.subscribe(topic, SubscribeOptions(group=groups[topic]), inbox) for topic in topics]
        await asyncio.sleep(2.5)
        for stop in later:
            await stop()
        await components.close_all()
        return one_stopped, took

    one_stopped, took = harness.run(run())
    assert sorted(answered) == sorted(topics), "a delivery was cut off before the deadline"
    assert inbox.data() == [], "an acknowledged message was handed out again"
    assert 1.3 <= one_stopped < 2.9, f"a stop during close took {one_stopped:.2f}s"
    assert 1.3 <= took < 2.9, f"close took {took:.2f}s: its subscriptions stop together, when their deliveries end"
