"""Pub/sub through a running sidecar: publish with ids, delivery to the app's callback server,
verdicts, dead letters, the streaming subscription, and the app's own readiness entry."""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from layotto_fast._proto import appcallback_pb2
from layotto_fast._proto import runtime_pb2 as pb
from tests import sidecar as sc
from tests.pubsub.app import DROP, RETRY, SUCCESS, CallbackApp, Topic
from tests.topic_events import TopicEventStream, subscription

PUBSUB = "pub_subs_demo"  # the embedded in-memory component


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def app_and_sidecar(tmp_path: Path) -> Iterator[tuple[CallbackApp, sc.Sidecar, str, str]]:
    topic, dead = _topic(), _topic()
    app = CallbackApp(
        [
            Topic(PUBSUB, topic, {"retryAttempts": "2", "retryInitialInterval": "20ms"}, dead_letter_topic=dead),
            Topic(PUBSUB, dead),
        ]
    ).start()
    sidecar = sc.start(tmp_path, "--app-port", str(app.port))
    try:
        yield app, sidecar, topic, dead
    finally:
        sidecar.stop()
        app.stop()


def _wait_subscribed(sidecar: sc.Sidecar, count: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, body = sidecar.http("/actuator/info")
        if code == 200 and len(json.loads(body)["app"]["subscriptions"]) == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the sidecar did not subscribe for the app: {sidecar.http('/actuator/info')}")


def test_publish_returns_the_id_the_app_receives(app_and_sidecar: tuple[CallbackApp, sc.Sidecar, str, str]) -> None:
    app, sidecar, topic, _ = app_and_sidecar
    _wait_subscribed(sidecar, 2)
    reply = sidecar.stub().PublishEvent(
        pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b'{"a": 1}', data_content_type="application/json"),
        metadata=[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                  ("tracestate", "vendor=x")],
    )  # fmt: skip
    assert reply.message_id
    events = app.wait_for(lambda events: any(e.id == reply.message_id for e in events))
    event = next(e for e in events if e.id == reply.message_id)
    assert (event.topic, event.pubsub_name, event.spec_version) == (topic, PUBSUB, "1.0")
    assert json.loads(event.data) == {"a": 1} and event.data_content_type == "application/json"
    assert event.source == "layotto-fast" and event.type == "com.dapr.event.sent"
    assert event.metadata["traceparent"].startswith("00-0af7651916cd43dd")
    assert event.metadata["tracestate"] == "vendor=x", "before, the call's tracestate was left out"


def test_a_cloudevent_keeps_its_own_id(app_and_sidecar: tuple[CallbackApp, sc.Sidecar, str, str]) -> None:
    app, sidecar, topic, _ = app_and_sidecar
    _wait_subscribed(sidecar, 2)
    own = {"specversion": "1.0", "id": "my-own-id", "source": "me", "type": "t", "data": "hello"}
    reply = sidecar.stub().PublishEvent(
        pb.PublishEventRequest(
            pubsub_name=PUBSUB,
            topic=topic,
            data=json.dumps(own).encode(),
            data_content_type="application/cloudevents+json",
        )
    )
    assert reply.message_id == "my-own-id"
    event = app.wait_for(lambda events: any(e.id == "my-own-id" for e in events))[-1]
    assert (event.source, event.data) == ("me", b"hello")


def test_retry_then_dead_letter_and_drop(app_and_sidecar: tuple[CallbackApp, sc.Sidecar, str, str]) -> None:
    app, sidecar, topic, dead = app_and_sidecar
    verdicts = {b"retry": RETRY, b"drop": DROP}
    failed_once: set[bytes] = set()

    def verdict(event: Any) -> int:
        if event.topic != topic:
            return SUCCESS
        if event.data == b"fails once" and event.data not in failed_once:
            failed_once.add(event.data)
            raise RuntimeError("the app's handler failed")  # the app answers UNKNOWN: counts as RETRY
        return verdicts.get(event.data, SUCCESS)

    app.verdict = verdict
    _wait_subscribed(sidecar, 2)
    stub = sidecar.stub()
    ids = {
        data: stub.PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=data)).message_id
        for data in (b"retry", b"drop", b"fine", b"fails once")
    }
    app.wait_for(  # every delivery the counts below look at: "fine" may come after the others
        lambda events: (
            sum(e.topic == dead for e in events) == 2
            and all(any(e.topic == topic and e.id == ids[data] for e in events) for data in (b"fine", b"fails once"))
        )
    )
    on_topic = app.ids(topic)
    assert on_topic[ids[b"retry"]] == 2, "RETRY is delivered again, up to retryAttempts"
    assert on_topic[ids[b"drop"]] == 1 and on_topic[ids[b"fine"]] == 1
    assert on_topic[ids[b"fails once"]] == 1, "an app error is retried (the failed call is not recorded)"
    assert set(app.ids(dead)) == {ids[b"retry"], ids[b"drop"]}, "both went to the dead-letter topic, ids kept"
    metrics = sidecar.http("/metrics")[1].decode()
    labels = f'outcome="dead_lettered",pubsub="{PUBSUB}",topic="{topic}"'
    assert f"layotto_fast_pubsub_deliveries_total{{{labels}}} 2.0" in metrics


def test_an_app_slower_than_delivery_timeout_gets_the_message_again(tmp_path: Path) -> None:
    """deliveryTimeout is the app call's deadline: a first attempt left unanswered that long
    counts as RETRY, and the message comes again (retryAttempts) until the app answers in time."""
    topic = _topic()
    metadata = {"deliveryTimeout": "300ms", "retryAttempts": "3", "retryInitialInterval": "10ms"}
    attempts: list[float] = []

    def verdict(event: Any) -> int:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            time.sleep(1.0)  # answers long after the sidecar stopped waiting
        return SUCCESS

    with CallbackApp([Topic(PUBSUB, topic, metadata)], verdict) as app:
        sidecar = sc.start(tmp_path, "--app-port", str(app.port))
        try:
            _wait_subscribed(sidecar, 1)
            message_id = (
                sidecar.stub()
                .PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"slow"))
                .message_id
            )
            app.wait_for(lambda events: sum(e.id == message_id for e in events) >= 2)
            assert 0.25 <= attempts[1] - attempts[0] < 0.9, "the second attempt came after deliveryTimeout"
            metrics = sidecar.http("/metrics")[1].decode()
            assert f'outcome="retried",pubsub="{PUBSUB}",topic="{topic}"}} 1.0' in metrics
        finally:
            sidecar.stop()


def test_raw_payload_reaches_the_app_as_published(tmp_path: Path) -> None:
    topic = _topic()
    with CallbackApp([Topic(PUBSUB, topic)]) as app:
        sidecar = sc.start(tmp_path, "--app-port", str(app.port))
        try:
            _wait_subscribed(sidecar, 1)
            stub = sidecar.stub()
            data = b"\x00raw bytes\xff"
            reply = stub.PublishEvent(
                pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=data, metadata={"rawPayload": "true"})
            )
            event = app.wait_for(lambda events: any(e.id == reply.message_id for e in events))[-1]
            assert (event.data, event.data_content_type) == (data, "application/octet-stream")
            with pytest.raises(grpc.RpcError) as refused:
                stub.PublishEvent(
                    pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"x", metadata={"rawPayload": "yes"})
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "metadata.rawPayload" in (refused.value.details() or "")
        finally:
            sidecar.stop()


@pytest.mark.parametrize("backend", ["redis", "jetstream"])
def test_publish_and_delivery_through_the_front_over_each_backend(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """The gRPC front runs a call's first steps outside any Task: a component that needs one
    (asyncio.timeout does) would fail here and nowhere in the component tests."""
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        type_, key, address = "pubsub.redis", "redisHost", server.address
    else:
        server = request.getfixturevalue("nats_server")
        type_, key, address = "pubsub.jetstream", "natsURL", server.url
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "pubsub.yaml").write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {backend}\nspec:\n"
        f'  type: {type_}\n  version: v1\n  metadata:\n    - name: {key}\n      value: "{address}"\n'
    )
    topic = _topic()
    with CallbackApp([Topic(backend, topic)]) as app:
        sidecar = sc.start(tmp_path, "--app-port", str(app.port), "--resources-path", str(folder))
        try:
            _wait_subscribed(sidecar, 1)
            stub = sidecar.stub()
            ids = [
                stub.PublishEvent(pb.PublishEventRequest(pubsub_name=backend, topic=topic, data=b"m%d" % i)).message_id
                for i in range(3)
            ]
            events = app.wait_for(lambda events: {e.id for e in events} >= set(ids))
            assert sorted(e.data for e in events if e.id in ids) == [b"m0", b"m1", b"m2"]
        finally:
            sidecar.stop()


def test_bulk_publish_reports_per_entry(app_and_sidecar: tuple[CallbackApp, sc.Sidecar, str, str]) -> None:
    app, sidecar, topic, _ = app_and_sidecar
    _wait_subscribed(sidecar, 2)
    reply = sidecar.stub().BulkPublishEvent(
        pb.BulkPublishRequest(
            pubsub_name=PUBSUB,
            topic=topic,
            entries=[
                pb.BulkPublishRequestEntry(entry_id=str(i), event=b"e%d" % i, content_type="text/plain")
                for i in range(5)
            ],
        ),
        metadata=[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
    )
    assert list(reply.failedEntries) == []
    events = app.wait_for(lambda events: {e.data for e in events} >= {b"e%d" % i for i in range(5)})
    # each envelope carries the call's trace context, as a single publish's does (before: none)
    bulk = [e for e in events if e.data in {b"e%d" % i for i in range(5)}]
    assert all(e.metadata["traceparent"].startswith("00-0af7651916cd43dd") for e in bulk), bulk
    with pytest.raises(grpc.RpcError) as raised:
        sidecar.stub().BulkPublishEvent(
            pb.BulkPublishRequest(pubsub_name=PUBSUB, topic=topic, entries=[pb.BulkPublishRequestEntry(entry_id="")])
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "entry_id" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        sidecar.stub().BulkPublishEvent(
            pb.BulkPublishRequest(pubsub_name=PUBSUB, topic=topic, metadata={"rawPayload": "yes"},
                                  entries=[pb.BulkPublishRequestEntry(entry_id="1", event=b"x")])
        )  # fmt: skip
    # the request's metadata, where the value is (before: blamed on entries[0].metadata)
    assert (raised.value.details() or "").startswith("metadata.rawPayload must be true or false"), raised.value


def test_publish_errors_name_the_field(tmp_path: Path) -> None:
    sidecar = sc.start(tmp_path, "--app-port", "0")
    try:
        stub = sidecar.stub()
        for request, field in (
            (pb.PublishEventRequest(pubsub_name="", topic="t"), "pubsub_name"),
            (pb.PublishEventRequest(pubsub_name="nope", topic="t"), "pubsub_name"),
            (pb.PublishEventRequest(pubsub_name=PUBSUB, topic=""), "topic"),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                stub.PublishEvent(request)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in raised.value.details()
    finally:
        sidecar.stop()


def _app_entry(sidecar: sc.Sidecar) -> dict[str, str]:
    entry: dict[str, str] = json.loads(sidecar.http("/actuator/health/readiness")[1])["components"]["app"]
    return entry


def _wait_app_entry(sidecar: sc.Sidecar, status: str, reason: Callable[[str], bool], what: str) -> dict[str, str]:
    """The app's readiness entry once it has ``status`` and a reason ``reason`` accepts."""
    deadline = time.monotonic() + 10
    while not ((entry := _app_entry(sidecar))["status"] == status and reason(entry["reason"])):
        assert time.monotonic() < deadline, f"{what}: {entry}"
        time.sleep(0.05)
    return entry


def test_no_app_is_up_and_app_shows_apart(tmp_path: Path) -> None:
    """The app's entry says where the sidecar looks for it and why it is not UP: the connect
    failure at that address while it was never reached (INIT) and again once it went away
    (DOWN); the sidecar itself stays UP throughout."""
    port = sc.free_port()
    address = f"127.0.0.1:{port}"

    def refused(reason: str) -> bool:
        return reason.startswith(f"unreachable: app at {address}: ") and f"cannot connect to {address}" in reason

    sidecar = sc.start(tmp_path, "--app-port", str(port))
    try:
        code, body = sidecar.http("/actuator/health/readiness")
        health = json.loads(body)
        assert code == 200 and health["status"] == "UP"
        assert health["components"]["app"]["status"] in ("INIT", "DOWN")
        assert health["components"]["app"]["required"] is False
        never = _wait_app_entry(sidecar, "INIT", refused, "the app's entry never named the connect failure")
        assert never["address"] == address
        app = CallbackApp([], port=port).start()
        try:
            up = _wait_app_entry(sidecar, "UP", lambda _: True, "the sidecar did not find the app once it started")
            assert (up["reason"], up["address"]) == ("", address)
        finally:
            app.stop()
        # "connection lost" at once, then the failed redials
        _wait_app_entry(sidecar, "DOWN", refused, "the sidecar did not notice the app going away")
        assert json.loads(sidecar.http("/actuator/health/readiness")[1])["status"] == "UP"
    finally:
        sidecar.stop()


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_streaming_subscription_with_verdicts(tmp_path: Path, transport: str) -> None:
    sidecar = sc.start(tmp_path, "--app-port", "0", "--grpc-transport", transport)
    topic = _topic()
    requests: queue.Queue[pb.SubscribeTopicEventsRequest | None] = queue.Queue()
    requests.put(
        pb.SubscribeTopicEventsRequest(
            initial_request=pb.SubscribeTopicEventsRequestInitial(
                pubsub_name=PUBSUB, topic=topic, metadata={"retryAttempts": "3", "retryInitialInterval": "10ms"}
            )
        )
    )

    def outgoing() -> Iterator[pb.SubscribeTopicEventsRequest]:
        while (request := requests.get()) is not None:
            yield request

    try:
        responses = sidecar.stub().SubscribeTopicEvents(outgoing())
        first = next(responses)
        assert first.WhichOneof("subscribe_topic_events_response_type") == "initial_response"
        published = sidecar.stub().PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"x"))
        seen: list[str] = []
        for response in responses:
            event = response.event_message
            seen.append(event.id)
            status = RETRY if len(seen) == 1 else SUCCESS  # first answer RETRY: it comes again
            requests.put(
                pb.SubscribeTopicEventsRequest(
                    event_processed=pb.SubscribeTopicEventsRequestProcessed(
                        id=event.id,
                        status=appcallback_pb2.TopicEventResponse(status=status),  # type: ignore[arg-type]
                    )
                )
            )
            if len(seen) == 2:
                break
        assert seen == [published.message_id] * 2
        requests.put(None)
        responses.cancel()
    finally:
        sidecar.stop()


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_a_bad_request_after_the_first_ends_the_stream_naming_the_field(tmp_path: Path, transport: str) -> None:
    sidecar = sc.start(tmp_path, "--app-port", "0", "--grpc-transport", transport)
    topic = _topic()
    initial = pb.SubscribeTopicEventsRequest(
        initial_request=pb.SubscribeTopicEventsRequestInitial(pubsub_name=PUBSUB, topic=topic)
    )
    # An answer naming no awaited event, or a status the enum lacks, does not end the stream
    # (Layotto ignores the one and retries the other): tests/integration/test_api_front_edges.py
    cases = [(initial, "initial_request"), (pb.SubscribeTopicEventsRequest(), "event_processed")]
    try:
        for bad, field in cases:
            requests: queue.Queue[pb.SubscribeTopicEventsRequest | None] = queue.Queue()
            requests.put(initial)
            responses = sidecar.stub().SubscribeTopicEvents(iter(requests.get, None), timeout=10)
            first = next(responses)
            assert first.WhichOneof("subscribe_topic_events_response_type") == "initial_response"
            requests.put(bad)
            with pytest.raises(grpc.RpcError) as raised:
                next(responses)
            requests.put(None)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
            assert raised.value.details().startswith(field), raised.value.details()
        # The sidecar still serves a stream that answers as it should.
        stream = _subscribed(sidecar, topic)
        published = sidecar.stub().PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"x"))
        event = stream.next()
        assert event.id == published.message_id
        stream.answer(event.id, SUCCESS)
        stream.close()
    finally:
        sidecar.stop()


def _subscribed(sidecar: sc.Sidecar, topic: str, dead_letter_topic: str | None = None) -> TopicEventStream:
    first = subscription(PUBSUB, topic, dead_letter_topic, metadata={"retryAttempts": "1"})
    return TopicEventStream.subscribed(sidecar, first)


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_a_streaming_subscriber_s_drop_goes_to_its_dead_letter_topic_and_what_it_leaves_comes_back(
    tmp_path: Path, transport: str
) -> None:
    """The verdicts of a stream follow the service's rules as a callback's do: DROP sends the
    message to the subscription's dead-letter topic; a stream that ends before answering
    leaves its message in the backend, handed to the next subscriber."""
    sidecar = sc.start(tmp_path, "--app-port", "0", "--grpc-transport", transport)
    topic, dead = _topic(), _topic()
    try:
        subscriber, dead_reader = _subscribed(sidecar, topic, dead_letter_topic=dead), _subscribed(sidecar, dead)
        dropped = sidecar.stub().PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"x"))
        event = subscriber.next()
        assert event.id == dropped.message_id
        subscriber.answer(event.id, DROP)
        assert dead_reader.next().id == dropped.message_id
        dead_reader.close()

        left = sidecar.stub().PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"y"))
        assert subscriber.next().id == left.message_id
        subscriber.close()  # unanswered
        successor = _subscribed(sidecar, topic)
        event = successor.next()
        assert event.id == left.message_id and event.data == b"y"
        successor.answer(event.id, SUCCESS)
        successor.close()
    finally:
        sidecar.stop()


@pytest.mark.parametrize("backend", ["redis", "jetstream"])
def test_apps_of_different_ids_each_get_every_message_and_one_app_shares_them(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """With no consumerID in the manifest the group is the app id, as Dapr makes it: two apps
    each get every message; two sidecars of one app share them."""
    if backend == "redis":
        type_, key, address = "pubsub.redis", "redisHost", request.getfixturevalue("redis_server").address
    else:
        type_, key, address = "pubsub.jetstream", "natsURL", request.getfixturevalue("nats_server").url
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "pubsub.yaml").write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {backend}\nspec:\n"
        f"  type: {type_}\n  version: v1\n  metadata:\n"
        f'    - name: {key}\n      value: "{address}"\n'
    )
    topic = _topic()
    apps = {name: CallbackApp([Topic(backend, topic)]).start() for name in ("orders-1", "orders-2", "billing")}
    sidecars = []
    try:
        for name, app in apps.items():
            app_id = name.split("-")[0]
            sidecars.append(
                sc.start(tmp_path, "--app-port", str(app.port), "--app-id", app_id, "--resources-path", str(folder))
            )
            _wait_subscribed(sidecars[-1], 1)
        stub = sidecars[-1].stub()
        ids = {stub.PublishEvent(pb.PublishEventRequest(pubsub_name=backend, topic=topic, data=b"m")).message_id
               for _ in range(20)}  # fmt: skip
        apps["billing"].wait_for(lambda events: {e.id for e in events} >= ids)

        def orders_ids() -> set[str]:
            return set(apps["orders-1"].ids()) | set(apps["orders-2"].ids())

        deadline = time.monotonic() + 10
        while orders_ids() < ids and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orders_ids() == ids, "the app with two sidecars got every message"
        shared = sum(apps["orders-1"].ids().values()) + sum(apps["orders-2"].ids().values())
        assert shared == len(ids), "its two sidecars are one group: each message went to one of them"
    finally:
        for sidecar in sidecars:
            sidecar.stop()
        for app in apps.values():
            app.stop()


def test_bulk_publish_reports_the_entry_the_backend_refused(tmp_path: Path, nats_server: Any) -> None:
    """An entry over nats-server's max_payload (1 MiB) is refused by JetStream; the others of
    the same call are published, and only the refused one is reported, with the reason."""
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "pubsub.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: js\nspec:\n"
        "  type: pubsub.jetstream\n  version: v1\n  metadata:\n"
        f'    - name: natsURL\n      value: "{nats_server.url}"\n'
    )
    topic = _topic()
    with CallbackApp([Topic("js", topic)]) as app:
        sidecar = sc.start(tmp_path, "--app-port", str(app.port), "--resources-path", str(folder))
        try:
            _wait_subscribed(sidecar, 1)
            sizes = {"small-1": 10, "huge": 1_500_000, "small-2": 10}
            entries = [
                pb.BulkPublishRequestEntry(entry_id=k, event=b"x" * n, content_type="application/octet-stream")
                for k, n in sizes.items()
            ]
            reply = sidecar.stub().BulkPublishEvent(
                pb.BulkPublishRequest(pubsub_name="js", topic=topic, entries=entries)
            )
            assert [f.entry_id for f in reply.failedEntries] == ["huge"], reply
            assert "payload" in reply.failedEntries[0].error.lower(), reply.failedEntries[0].error
            app.wait_for(lambda events: sorted(len(e.data) for e in events) == [10, 10])
        finally:
            sidecar.stop()


def test_nothing_is_taken_from_the_backend_before_the_app_asks(tmp_path: Path, redis_server: Any) -> None:
    """With the app not up, the sidecar makes no consumer group and reads nothing; once the
    app is up and lists the topic, its group is made and what was published before arrives."""
    import redis as redis_client

    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "pubsub.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: redis\nspec:\n"
        "  type: pubsub.redis\n  version: v1\n  metadata:\n"
        f'    - name: redisHost\n      value: "{redis_server.address}"\n'
    )
    topic, app_port = _topic(), sc.free_port()
    direct = redis_client.Redis.from_url(f"redis://{redis_server.address}")
    sidecar = sc.start(tmp_path, "--app-port", str(app_port), "--app-id", "late-app", "--resources-path", str(folder))
    try:
        stub = sidecar.stub()
        early = stub.PublishEvent(pb.PublishEventRequest(pubsub_name="redis", topic=topic, data=b"early")).message_id
        time.sleep(1.0)  # the sidecar dials the absent app meanwhile
        assert direct.xlen(topic) == 1
        assert direct.xinfo_groups(topic) == [], "no group, so nothing read, before the app asked"
        with CallbackApp([Topic("redis", topic)], port=app_port) as app:
            app.wait_for(lambda events: early in {e.id for e in events})
            assert [g["name"] for g in direct.xinfo_groups(topic)] == [b"late-app"]
    finally:
        sidecar.stop()
        direct.close()
