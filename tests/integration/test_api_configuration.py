"""Configuration rpcs, including the SubscribeConfiguration stream."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import orjson
import pytest

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.runtime.configuration_service import MAX_WATCHED_KEYS
from tests.sidecar import Sidecar

STORE = "config_demo"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def save(sidecar: Sidecar, app: str, *items: pb.ConfigurationItem) -> None:
    sidecar.stub().SaveConfiguration(pb.SaveConfigurationRequest(store_name=STORE, app_id=app, items=list(items)))


def test_save_get_delete_with_all_fields(sidecar: Sidecar) -> None:
    app, k = unique("app"), unique("key")
    item = pb.ConfigurationItem(key=k, content="c1", group="g1", label="blue", tags={"t": "1"}, metadata={"m": "2"})
    save(sidecar, app, item)
    get = pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k], group="g1", label="blue")
    assert list(sidecar.stub().GetConfiguration(get).items) == [item]
    sidecar.stub().DeleteConfiguration(
        pb.DeleteConfigurationRequest(store_name=STORE, app_id=app, keys=[k], group="g1", label="blue")
    )
    assert not sidecar.stub().GetConfiguration(get).items


def test_request_metadata_is_not_saved_into_the_items(sidecar: Sidecar) -> None:
    """As in Layotto, whose stores' SetRequest has no metadata: the request's came back from
    GetConfiguration on every item saved without metadata of its own."""
    app, k = unique("app"), unique("key")
    items = [pb.ConfigurationItem(key=k, content="c"), pb.ConfigurationItem(key=k, group="g", metadata={"m": "own"})]
    sidecar.stub().SaveConfiguration(
        pb.SaveConfigurationRequest(store_name=STORE, app_id=app, items=items, metadata={"requestOption": "x"})
    )
    get = pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k], group="*")
    saved = {item.group: dict(item.metadata) for item in sidecar.stub().GetConfiguration(get).items}
    assert saved == {"default": {}, "g": {"m": "own"}}


def test_a_blank_group_and_label_are_default(sidecar: Sidecar) -> None:
    """As Layotto's API does with its stores' defaults; ``*`` matches any."""
    app, k = unique("app"), unique("key")
    save(
        sidecar, app, pb.ConfigurationItem(key=k, content="plain"), pb.ConfigurationItem(key=k, content="g", group="g")
    )
    stub = sidecar.stub()
    plain = stub.GetConfiguration(pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k])).items
    assert [(i.content, i.group, i.label) for i in plain] == [("plain", "default", "default")]
    named = stub.GetConfiguration(
        pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k], group="default", label="default")
    ).items
    assert list(named) == list(plain)
    anywhere = stub.GetConfiguration(pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k], group="*"))
    assert sorted(i.content for i in anywhere.items) == ["g", "plain"]
    with pytest.raises(grpc.RpcError) as raised:
        save(sidecar, app, pb.ConfigurationItem(key=k, content="x", label="*"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "items[0].label" in raised.value.details()  # type: ignore[attr-defined]


def test_label_and_group_filter(sidecar: Sidecar) -> None:
    app, k = unique("app"), unique("key")
    save(
        sidecar,
        app,
        pb.ConfigurationItem(key=k, content="blue", group="g", label="blue"),
        pb.ConfigurationItem(key=k, content="green", group="g", label="green"),
        pb.ConfigurationItem(key=k, content="other", group="h", label="blue"),
    )
    stub = sidecar.stub()
    only_green = stub.GetConfiguration(
        pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k], group="g", label="green")
    )
    assert [i.content for i in only_green.items] == ["green"]
    group_g = stub.GetConfiguration(
        pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k], group="g", label="*")
    )
    assert sorted(i.content for i in group_g.items) == ["blue", "green"]
    label_blue = stub.GetConfiguration(
        pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k], group="*", label="blue")
    )
    assert sorted(i.content for i in label_blue.items) == ["blue", "other"]
    assert not stub.GetConfiguration(pb.GetConfigurationRequest(store_name=STORE, app_id=app, keys=[k])).items
    other_app = stub.GetConfiguration(pb.GetConfigurationRequest(store_name=STORE, app_id=unique("app"), keys=[k]))
    assert not other_app.items


class Subscription:
    """A SubscribeConfiguration stream driven from a thread, pushes collected in a queue."""

    def __init__(self, sidecar: Sidecar, *requests: pb.SubscribeConfigurationRequest) -> None:
        self.channel = grpc.insecure_channel(sidecar.target)
        self._requests: queue.Queue[pb.SubscribeConfigurationRequest | None] = queue.Queue()
        for request in requests:
            self._requests.put(request)
        self.pushes: queue.Queue[tuple[float, pb.SubscribeConfigurationResponse]] = queue.Queue()
        self.call = pb_stub(self.channel).SubscribeConfiguration(self._outgoing())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _outgoing(self) -> Iterator[pb.SubscribeConfigurationRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for response in self.call:
                self.pushes.put((time.monotonic(), response))
        except grpc.RpcError:
            pass

    def next(self, timeout: float = 2.0) -> tuple[float, pb.SubscribeConfigurationResponse]:
        return self.pushes.get(timeout=timeout)

    def got(self, key: str, timeout: float) -> bool:
        """Whether a push of ``key`` arrives within ``timeout`` s (pushes of other keys are dropped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, push = self.next(timeout=left)
            except queue.Empty:
                return False
            if any(item.key == key for item in push.items):
                return True
        return False

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def pb_stub(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    from layotto_fast._proto import runtime_pb2_grpc

    return runtime_pb2_grpc.RuntimeStub(channel)


def subscriptions(sidecar: Sidecar) -> int:
    return int(orjson.loads(sidecar.http("/actuator/info")[1])["configuration_subscriptions"])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it does not within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.01)


def sentinel_request(app: str, sentinel: str) -> pb.SubscribeConfigurationRequest:
    """A request watching only ``sentinel``: sent after a subscription's real requests, a push of
    the sentinel shows the sidecar has read (and registered the watches of) all of them, since
    it reads one stream's requests in order."""
    return pb.SubscribeConfigurationRequest(store_name=STORE, app_id=app, keys=[sentinel])


def await_watching(sidecar: Sidecar, app: str, sentinel: str, subscribers: list[Subscription]) -> None:
    """Save ``sentinel`` until every subscriber has had it pushed (a save before its watch was
    registered reaches no one), then once more and read each subscriber's queue up to that
    last push: afterwards every watch is registered and every queue is empty."""
    waiting, rounds, deadline = list(subscribers), 0, time.monotonic() + 10
    while waiting:
        assert time.monotonic() < deadline, f"{len(waiting)} of {len(subscribers)} subscriptions never watched"
        rounds += 1
        save(sidecar, app, pb.ConfigurationItem(key=sentinel, content=f"round-{rounds}"))
        waiting = [subscriber for subscriber in waiting if not subscriber.got(sentinel, timeout=0.5)]
    save(sidecar, app, pb.ConfigurationItem(key=sentinel, content="last"))
    for subscriber in subscribers:
        while True:
            _, push = subscriber.next(timeout=5)
            assert [item.key for item in push.items] == [sentinel], push
            if push.items[0].content == "last":
                break


def test_subscribers_get_saves_and_deletes_within_500ms(sidecar: Sidecar) -> None:
    app, k, other, sentinel = unique("app"), unique("key"), unique("key"), unique("sentinel")
    request = pb.SubscribeConfigurationRequest(store_name=STORE, app_id=app, keys=[k])
    before = subscriptions(sidecar)
    subscribers = [Subscription(sidecar, request, sentinel_request(app, sentinel)) for _ in range(3)]
    try:
        wait_for(lambda: subscriptions(sidecar) >= before + 3, "three open subscriptions in actuator/info")
        await_watching(sidecar, app, sentinel, subscribers)
        sent = time.monotonic()
        save(sidecar, app, pb.ConfigurationItem(key=k, content="v1"), pb.ConfigurationItem(key=other, content="x"))
        for subscriber in subscribers:
            at, push = subscriber.next()
            assert at - sent < 0.5, f"push took {at - sent:.3f}s"
            assert push.store_name == STORE and push.app_id == app
            assert [(i.key, i.content) for i in push.items] == [(k, "v1")]
        sent = time.monotonic()
        sidecar.stub().DeleteConfiguration(pb.DeleteConfigurationRequest(store_name=STORE, app_id=app, keys=[k]))
        for subscriber in subscribers:
            at, push = subscriber.next()
            assert at - sent < 0.5, f"push took {at - sent:.3f}s"
            assert [(i.key, i.content) for i in push.items] == [(k, "")]
    finally:
        for subscriber in subscribers:
            subscriber.close()
    # Subscribers that went away are cleaned up.
    wait_for(lambda: subscriptions(sidecar) <= before, "the closed subscriptions removed")
    assert subscriptions(sidecar) == before


def test_the_same_subscribe_request_twice_pushes_each_change_once(sidecar: Sidecar) -> None:
    app, k, sentinel = unique("app"), unique("key"), unique("sentinel")
    request = pb.SubscribeConfigurationRequest(store_name=STORE, app_id=app, keys=[k])
    before = subscriptions(sidecar)
    subscriber = Subscription(sidecar, request, request, request, sentinel_request(app, sentinel))
    try:
        wait_for(lambda: subscriptions(sidecar) >= before + 1, "the open subscription in actuator/info")
        await_watching(sidecar, app, sentinel, [subscriber])  # all three requests read
        save(sidecar, app, pb.ConfigurationItem(key=k, content="v1"))
        _, push = subscriber.next()
        assert [(i.key, i.content) for i in push.items] == [(k, "v1")]
        with pytest.raises(queue.Empty):  # not a second time, nor a third
            subscriber.next(timeout=0.3)
    finally:
        subscriber.close()


def test_a_subscription_past_its_watch_limit_ends_resource_exhausted(sidecar: Sidecar) -> None:
    keys = [f"k{index}" for index in range(MAX_WATCHED_KEYS + 1)]
    requests = iter([pb.SubscribeConfigurationRequest(store_name=STORE, app_id=unique("app"), keys=keys)])
    with pytest.raises(grpc.RpcError) as raised:
        for _ in sidecar.stub().SubscribeConfiguration(requests, timeout=5):
            pass
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert f"at most {MAX_WATCHED_KEYS} keys" in raised.value.details()  # type: ignore[attr-defined]


def test_subscribe_bad_store_ends_stream_with_invalid_argument(sidecar: Sidecar) -> None:
    requests = iter([pb.SubscribeConfigurationRequest(store_name="missing", keys=["k"])])
    with pytest.raises(grpc.RpcError) as raised:
        for _ in sidecar.stub().SubscribeConfiguration(requests, timeout=5):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "'missing'" in raised.value.details()  # type: ignore[attr-defined]


def test_get_configuration_unknown_store(sidecar: Sidecar) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        sidecar.stub().GetConfiguration(pb.GetConfigurationRequest(store_name="nope", keys=["k"]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "'nope'" in raised.value.details()  # type: ignore[attr-defined]
