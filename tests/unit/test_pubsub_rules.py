"""The pub/sub rules that need no backend: the CloudEvents envelope, subscription options,
and a stream subscriber's matching of answers to events."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import datetime

import orjson
import pytest

from layotto_fast.errors import InvalidArgument, Unavailable
from layotto_fast.manifest import ComponentManifest, SecretRef
from layotto_fast.runtime import cloudevents
from layotto_fast.runtime.pubsub import Verdict
from layotto_fast.runtime.pubsub_service import RetryPolicy, TopicSubscription, _options, with_consumer_groups
from layotto_fast.runtime.pubsub_stream import StreamSubscriber

WHERE = {"source": "app-a", "topic": "orders", "pubsub_name": "ps"}


def stream_event() -> cloudevents.Event:
    """An event as a stream subscriber is handed one."""
    return cloudevents.unwrap(cloudevents.wrap(b"x", "text/plain", **WHERE)[1], "orders", "ps")


@pytest.mark.parametrize(
    ("data", "content_type", "field", "value"),
    [
        (b'{"n": 1}', "application/json", "data", {"n": 1}),
        (b"hello", "text/plain", "data", "hello"),
        (b"hello", "", "data", "hello"),  # text/plain by default, as Dapr does
        (b"\x00\xff", "application/octet-stream", "data_base64", base64.b64encode(b"\x00\xff").decode()),
        (b"not json", "application/json", "data_base64", base64.b64encode(b"not json").decode()),
    ],
)
def test_envelope_carries_data_as_its_content_type_allows(
    data: bytes, content_type: str, field: str, value: object
) -> None:
    message_id, stored = cloudevents.wrap(data, content_type, traceparent="00-abc-01", **WHERE)
    envelope = orjson.loads(stored)
    assert envelope[field] == value and envelope["id"] == message_id
    assert (envelope["specversion"], envelope["source"], envelope["topic"], envelope["pubsubname"]) == (
        "1.0",
        "app-a",
        "orders",
        "ps",
    )
    assert envelope["traceparent"] == "00-abc-01"
    event = cloudevents.unwrap(stored, "orders", "ps")
    # time: the publish's second in RFC 3339, as Dapr writes it (passed on as an extension)
    stamp = datetime.fromisoformat(envelope["time"]).timestamp()
    assert abs(stamp - time.time()) < 5 and envelope["time"].endswith("Z")
    assert event.id == message_id and event.extensions == {"traceparent": "00-abc-01", "time": envelope["time"]}
    if field == "data_base64" or content_type != "application/json":
        assert event.data == data
    else:
        assert orjson.loads(event.data) == orjson.loads(data)


@pytest.mark.parametrize(
    ("content_type", "field"),
    [
        ("Application/JSON; charset=utf-8", "data"),
        ("application/vnd.orders+json", "data"),
        ("application/xml", "data"),
        ("TEXT/csv", "data"),
        ("application/protobuf", "data_base64"),
    ],
)
def test_content_types_are_read_by_their_media_type(content_type: str, field: str) -> None:
    data = b'{"n": 1}' if "json" in content_type.lower() else b"a,b"
    for _ in range(2):  # read, then remembered
        _, stored = cloudevents.wrap(data, content_type, **WHERE)
        envelope = orjson.loads(stored)
        assert field in envelope and envelope["datacontenttype"] == content_type


def test_content_types_beyond_those_remembered_are_still_read() -> None:
    for index in range(cloudevents._KINDS_KEPT + 10):
        _, stored = cloudevents.wrap(b"hello", f"text/x-{index}", **WHERE)
        assert orjson.loads(stored)["data"] == "hello"
    assert len(cloudevents._KINDS) <= cloudevents._KINDS_KEPT


def test_every_publish_gets_a_new_id() -> None:
    ids = {cloudevents.wrap(b"x", "text/plain", **WHERE)[0] for _ in range(100)}
    assert len(ids) == 100


def test_a_cloudevent_passes_through_with_its_id() -> None:
    own = {"specversion": "1.0", "id": "e-1", "source": "s", "type": "t", "data": {"k": 2}, "x-ext": "v"}
    message_id, stored = cloudevents.wrap(orjson.dumps(own), "application/cloudevents+json", **WHERE)
    assert message_id == "e-1"
    envelope = orjson.loads(stored)
    assert envelope["source"] == "s" and envelope["topic"] == "orders"  # added where missing
    event = cloudevents.unwrap(stored, "orders", "ps")
    assert orjson.loads(event.data) == {"k": 2} and event.extensions["x-ext"] == "v"


def test_a_cloudevent_with_an_id_and_a_specversion_gets_the_source_and_type_it_lacks() -> None:
    """Only an event without an id or a specversion was completed: one with both went out with
    no source and no type, which every CloudEvent has (Dapr's FromCloudEvent defaults them)."""
    own = {"specversion": "1.0", "id": "e-1", "data": {"k": 2}}
    message_id, stored = cloudevents.wrap(orjson.dumps(own), "application/cloudevents+json", **WHERE)
    assert message_id == "e-1"
    event = cloudevents.unwrap(stored, "orders", "ps")
    assert (event.id, event.source, event.type) == ("e-1", WHERE["source"], cloudevents.EVENT_TYPE)


def test_bytes_that_are_no_cloudevent_are_refused_by_unwrap() -> None:
    for stored in (
        b"plain",
        b'{"id": "x"}',
        b"[1]",
        b'{"id": "", "specversion": "1.0"}',
        b'{"id": 7, "specversion": "1.0"}',
        b'{"id": "x", "specversion": 1}',
        b'{"id": "x", "specversion": "1.0", "data_base64": "not base64!"}',
    ):
        with pytest.raises(cloudevents.NotACloudEvent):
            cloudevents.unwrap(stored, "t", "ps")


def test_unwrap_reads_what_another_producer_may_write() -> None:
    """Non-string attributes are read as text, a missing content type with JSON data is JSON,
    and the attributes the spec does not name become extensions: integers and booleans (which
    CloudEvents allows) as their JSON text. Before, they were dropped."""
    stored = orjson.dumps(
        {"specversion": "1.0", "id": "e-2", "source": 5, "data": [1, 2], "x-n": 3, "x-s": "s", "x-b": True,
         "x-none": None, "topic": "elsewhere"}
    )  # fmt: skip
    event = cloudevents.unwrap(stored, "orders", "ps")
    assert (event.id, event.source, event.type, event.spec_version) == ("e-2", "5", "", "1.0")
    assert (event.data_content_type, orjson.loads(event.data)) == ("application/json", [1, 2])
    assert event.extensions == {"x-n": "3", "x-s": "s", "x-b": "true"}
    assert (event.topic, event.pubsub_name) == ("orders", "ps"), "where it was read from, not what it says"
    bare = cloudevents.unwrap(b'{"specversion": "1.0", "id": "e-3"}', "orders", "ps")
    assert (bare.data, bare.data_content_type, dict(bare.extensions)) == (b"", "", {})


def test_subscription_options_are_read_and_checked() -> None:
    policy, options, dead = _options(
        TopicSubscription(
            "ps",
            "t",
            {"retryAttempts": "5", "retryInitialInterval": "50ms", "retryMaxInterval": "2s", "concurrency": "4",
             "consumerID": "g", "deadLetterTopic": "dlq"},
        )
    )  # fmt: skip
    assert policy == RetryPolicy(attempts=5, initial_interval=0.05, max_interval=2.0)
    assert [policy.interval(n) for n in (1, 2, 3, 10)] == [0.05, 0.1, 0.2, 2.0]
    assert (options.group, options.concurrency, dead) == ("g", 4, "dlq")
    for meta, key in (
        ({"retryAttempts": "0"}, "retryAttempts"),
        ({"retryAttempts": "x"}, "retryAttempts"),
        # as Go's strconv refuses them (Python's int() read them as 3)
        ({"retryAttempts": " 3 "}, "retryAttempts must be an integer"),
        ({"retryAttempts": "\uff13"}, "retryAttempts must be an integer"),  # a full-width 3
        ({"retryAttempts": "1_0"}, "retryAttempts must be an integer"),
        ({"concurrency": "0"}, "concurrency"),
        ({"retryMaxInterval": "soon"}, "retryMaxInterval"),
        ({"retryMaxInterval": "-1s"}, "retryMaxInterval must not be negative"),
        ({"deliveryTimeout": "1.5"}, "deliveryTimeout"),  # plain digits only: milliseconds
        ({"deadLetterTopic": "t"}, "dead_letter_topic"),
    ):
        with pytest.raises(InvalidArgument, match=key):
            _options(TopicSubscription("ps", "t", meta))


@pytest.mark.parametrize(
    ("key", "raw", "says"),
    [
        ("deliveryTimeout", "0", "more than 0"),  # would be a 1 ms deadline
        ("deliveryTimeout", "0s", "more than 0"),
        ("deliveryTimeout", "infs", "a duration such as"),  # Go's grammar has no infinity (math.ceil(inf) raises)
        ("deliveryTimeout", "28h", "at most 1h"),  # past gRPC's 8-digit grpc-timeout
        ("deliveryTimeout", "1e300s", "a duration such as"),  # nor exponents
        ("deliveryTimeout", "2562047h47m16s", "at most 1h"),  # Go's longest
        ("deliveryTimeout", "3600001", "at most 1h"),
        ("deliveryTimeout", "9" * 20, "at most 1h"),  # plain milliseconds: past the native client's u64
        ("retryInitialInterval", "infs", "a duration such as"),  # a slot held for good
        ("retryInitialInterval", "2h", "at most 1h"),
        ("retryMaxInterval", "1h0m0.001s", "at most 1h"),
        ("retryMaxInterval", "1e20m", "a duration such as"),
    ],
)
def test_subscription_durations_are_bounded(key: str, raw: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"metadata\.{key} must be .*{says}") as error:
        _options(TopicSubscription("ps", "t", {key: raw}))
    assert repr(raw) in error.value.message


def test_subscription_durations_at_their_bounds_are_taken() -> None:
    meta = {"deliveryTimeout": "1h", "retryInitialInterval": "0", "retryMaxInterval": "3600000"}
    policy, _, _ = _options(TopicSubscription("ps", "t", meta))
    assert (policy.timeout, policy.initial_interval, policy.max_interval) == (3600.0, 0.0, 3600.0)
    assert _options(TopicSubscription("ps", "t", {"deliveryTimeout": "1ms"}))[0].timeout == 0.001


def test_retry_intervals_after_very_many_attempts_stay_at_the_maximum() -> None:
    """retryAttempts has no upper bound: the doubling must not overflow a float."""
    policy = RetryPolicy(attempts=10_000, initial_interval=0.05, max_interval=2.0)
    assert [policy.interval(n) for n in (1025, 5000)] == [2.0, 2.0]


def test_subscription_durations_read_as_a_manifests_do() -> None:
    # The manifest's parser: Go-style units up to hours, plain digits in milliseconds.
    meta = {"retryInitialInterval": "250", "retryMaxInterval": "1h", "deliveryTimeout": "1.5s"}
    policy, _, _ = _options(TopicSubscription("ps", "t", meta))
    assert (policy.initial_interval, policy.max_interval, policy.timeout) == (0.25, 3600.0, 1.5)


def test_stream_subscriber_matches_answers_to_events() -> None:
    async def run() -> None:
        subscriber = StreamSubscriber()
        event = stream_event()
        delivery = asyncio.ensure_future(subscriber.deliver(event, 5.0))
        assert await subscriber.next() == event
        subscriber.answer("someone-else", Verdict.SUCCESS)  # ignored
        assert not delivery.done()
        subscriber.answer(event.id, Verdict.DROP)
        assert await delivery == Verdict.DROP
        waiting = asyncio.ensure_future(subscriber.deliver(event, 5.0))
        await subscriber.next()
        subscriber.close()
        with pytest.raises(Unavailable):
            await waiting
        assert await subscriber.next() is None
        with pytest.raises(Unavailable):
            await subscriber.deliver(event, 5.0)

    asyncio.run(run())


def test_two_events_of_one_id_go_out_on_a_stream_one_at_a_time() -> None:
    """Ids are unique per source only: two events may share one, and an answer names only the
    id. Before, both went out at once, and the first answer (say the client's SUCCESS for the
    second) settled the first, whose failure then acknowledged it."""

    async def run() -> None:
        subscriber = StreamSubscriber()
        first, second = stream_event(), stream_event()
        second = second._replace(id=first.id, data=b"another")
        one = asyncio.ensure_future(subscriber.deliver(first, 5.0))
        two = asyncio.ensure_future(subscriber.deliver(second, 5.0))
        assert await subscriber.next() == first
        sent_next = asyncio.ensure_future(subscriber.next())
        await asyncio.sleep(0.01)
        assert not sent_next.done(), "the second waits while an event of its id is out"
        subscriber.answer(first.id, Verdict.DROP)
        assert await one == Verdict.DROP
        assert await sent_next == second
        subscriber.answer(first.id, Verdict.SUCCESS)
        assert await two == Verdict.SUCCESS

    asyncio.run(run())


def test_a_failed_stream_subscriber_ends_with_its_error_and_gives_its_deliveries_back() -> None:
    async def run() -> None:
        subscriber = StreamSubscriber()
        event = stream_event()
        waiting = asyncio.ensure_future(subscriber.deliver(event, 5.0))
        assert await subscriber.next() == event
        subscriber.fail(InvalidArgument("event_processed.id is empty"))
        with pytest.raises(Unavailable):  # SubscriberGone: back to the backend
            await waiting
        with pytest.raises(InvalidArgument, match=r"event_processed\.id"):
            await subscriber.next()

    asyncio.run(run())


def test_stream_subscriber_gives_up_after_the_timeout() -> None:
    async def run() -> None:
        subscriber = StreamSubscriber()
        event = stream_event()
        with pytest.raises(TimeoutError):
            await subscriber.deliver(event, 0.05)
        subscriber.answer(event.id, Verdict.SUCCESS)  # too late: nobody waits for it any more
        fresh = stream_event()
        delivery = asyncio.ensure_future(subscriber.deliver(fresh, 5.0))
        # the one given up on never went out: the stream's next event is the fresh one
        assert await subscriber.next() == fresh
        subscriber.answer(fresh.id, Verdict.SUCCESS)
        assert await delivery == Verdict.SUCCESS

    asyncio.run(run())


def test_a_stalled_stream_holds_only_what_is_being_delivered() -> None:
    """A client that stops reading: the deliveries that time out take their events back,
    so retries and redeliveries do not pile up copies for it."""

    async def run() -> None:
        subscriber = StreamSubscriber()
        for _ in range(20):
            with pytest.raises(TimeoutError):
                await subscriber.deliver(stream_event(), 0.001)
        assert len(subscriber._outbox) == 0
        waiting = asyncio.ensure_future(subscriber.deliver(stream_event(), 5.0))
        await asyncio.sleep(0)
        assert len(subscriber._outbox) == 1
        subscriber.close()
        with pytest.raises(Unavailable):
            await waiting

    asyncio.run(run())


def test_consumer_group_defaults_to_the_app_id_and_only_when_none_is_given() -> None:
    def manifest(type_: str, metadata: dict[str, str], refs: dict[str, SecretRef] | None = None) -> ComponentManifest:
        return ComponentManifest(type_, type_, "v1", metadata, "m.yaml", secret_refs=refs or {})

    given = [
        manifest("pubsub.redis", {"redisHost": "h:1"}),
        manifest("pubsub.in-memory", {"consumerID": "mine"}),
        manifest("pubsub.jetstream", {}, {"consumerID": SecretRef("group", "group", "spec.metadata[0].secretKeyRef")}),
        manifest("state.redis", {"redisHost": "h:1"}),
        manifest("pubsub.redis", {"consumerID": ""}),  # a bare `value:` in the YAML
        manifest("pubsub.in-memory", {"ConsumerID": " "}),
    ]
    out = with_consumer_groups(given, "orders")
    assert [m.metadata for m in out] == [
        {"redisHost": "h:1", "consumerID": "orders"},
        {"consumerID": "mine"},
        {},
        {"redisHost": "h:1"},
        {"consumerID": "orders"},
        {"consumerID": "orders"},
    ]


def test_delivery_counts_of_topics_nobody_reads_any_more_are_bounded() -> None:
    """Topics are the client's to choose: a SubscribeTopicEvents stream per random topic added
    an entry (and five /metrics series) for good. Topics still read keep theirs; of those no
    longer read, the last MAX_IDLE_TOPIC_COUNTS are kept (a resubscribing app keeps its counts)."""
    from layotto_fast.runtime.lifecycle import Components
    from layotto_fast.runtime.pubsub_service import MAX_IDLE_TOPIC_COUNTS, PubSubService

    async def scenario() -> None:
        components = Components([ComponentManifest("ps", "pubsub.in-memory", "v1", {}, "m.yaml")])
        await components.init_all()
        service = PubSubService(components, "app")

        async def deliver(event: cloudevents.Event, timeout: float) -> Verdict:
            return Verdict.SUCCESS

        kept = await service.subscribe(TopicSubscription("ps", "kept"), deliver)
        first = await service.subscribe(TopicSubscription("ps", "t-0"), deliver)
        await first()
        counts_of_t0 = service.counts[("ps", "t-0")]
        again = await service.subscribe(TopicSubscription("ps", "t-0"), deliver)
        assert service.counts[("ps", "t-0")] is counts_of_t0  # resubscribed: the same counts
        await again()
        for number in range(1, 3 * MAX_IDLE_TOPIC_COUNTS):
            stop = await service.subscribe(TopicSubscription("ps", f"t-{number}"), deliver)
            await stop()
        assert len(service.counts) == MAX_IDLE_TOPIC_COUNTS + 1
        assert ("ps", "kept") in service.counts and ("ps", "t-0") not in service.counts
        await kept()
        await components.close_all()

    asyncio.run(scenario())


def test_close_waits_for_a_stop_already_under_way() -> None:
    """A subscription stopped just before the sidecar's own stop (its app lost, its stream ended)
    was no longer among those close() stopped: close returned at once and the components were
    closed under its drain, losing what it settled."""
    from layotto_fast.runtime.lifecycle import Components
    from layotto_fast.runtime.pubsub_service import PubSubService

    async def scenario() -> tuple[float, list[str]]:
        components = Components([ComponentManifest("ps", "pubsub.in-memory", "v1", {}, "m.yaml")])
        await components.init_all()
        service = PubSubService(components, "app")
        finished: list[str] = []
        started = asyncio.Event()

        async def deliver(event: cloudevents.Event, timeout: float) -> Verdict:
            started.set()
            await asyncio.sleep(0.6)
            finished.append(event.id)
            return Verdict.SUCCESS

        stop = await service.subscribe(TopicSubscription("ps", "t"), deliver)
        await service.publish("ps", "t", b"x", "text/plain", {}, "")
        await started.wait()
        early = asyncio.ensure_future(stop())  # its drain: 1 s by default
        await asyncio.sleep(0)
        began = asyncio.get_running_loop().time()
        await service.close(asyncio.get_running_loop().time() + 2.0)
        took = asyncio.get_running_loop().time() - began
        await early
        await components.close_all()
        return took, finished

    took, finished = asyncio.run(scenario())
    assert len(finished) == 1 and took >= 0.4, (took, finished)


def test_a_retry_the_stop_cut_short_in_its_backoff_is_not_counted_as_made() -> None:
    """``retried`` counts attempts made again; it was counted before the backoff, so a stop
    during a 5 s backoff counted an attempt never made."""
    from tests.components.support import until
    from tests.pubsub.service import memory_pubsub

    async def scenario() -> tuple[int, int]:
        components, service = await memory_pubsub()
        attempts: list[str] = []

        async def deliver(event: cloudevents.Event, timeout: float) -> Verdict:
            attempts.append(event.id)
            return Verdict.RETRY

        try:
            options = {"retryInitialInterval": "5s", "retryAttempts": "3"}
            stop = await service.subscribe(TopicSubscription("ps", "t", metadata=options), deliver)
            await service.publish("ps", "t", b"x", "text/plain", {})
            assert await until(lambda: len(attempts) == 1, 5)
            await asyncio.sleep(0.1)
            await stop(asyncio.get_running_loop().time())  # no time left: the backoff is cut
            counts = service.counts[("ps", "t")]
            return counts.retried, len(attempts)
        finally:
            await service.close()
            await components.close_all()

    assert asyncio.run(scenario()) == (0, 1)
