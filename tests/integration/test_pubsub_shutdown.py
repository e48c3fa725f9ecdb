"""A sidecar's stop and the deliveries to the app it has in flight: SIGTERM gives them what the
shutdown grace allows (``--shutdown-grace-seconds``), not a fixed while.

A real ``layotto-fast serve``, the app's callback server, and redis-server or nats-server: a
delivery the app needs longer than the component's old fixed drain to answer (1.5 s over
Redis, 5.5 s over JetStream), on a stop with a longer grace, is answered and acknowledged in
the backend before the sidecar exits; with a 0.3 s grace the stop ends by then, and the
message stays unacknowledged in the backend, to be handed out again.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest
import redis as redis_client

from layotto_fast._proto import appcallback_pb2
from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.components.pubsub.jetstream import safe_name
from layotto_fast.server import FINISH_SECONDS
from tests import sidecar as sc
from tests.backends.servers import RedisServer
from tests.pubsub.app import SUCCESS, CallbackApp, Topic

PUBSUB = "ps"
APP_ID = "shutdown-app"  # the consumer group (Redis) or durable consumer (JetStream)
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO layotto_fast: (stopping|stopped)\b", re.M)


class SlowApp(CallbackApp):
    """An app whose handler answers SUCCESS after ``seconds``, or once released."""

    def __init__(self, topic: str, seconds: float) -> None:
        super().__init__([Topic(PUBSUB, topic)], self._slowly)
        self.seconds = seconds
        self.started = threading.Event()
        self.release = threading.Event()

    def _slowly(self, event: appcallback_pb2.TopicEventRequest) -> int:
        self.started.set()
        self.release.wait(self.seconds)
        return SUCCESS


@pytest.fixture(params=["redis", "jetstream"])
def backend(request: pytest.FixtureRequest) -> tuple[str, Any]:
    kind = str(request.param)
    return kind, request.getfixturevalue("redis_server" if kind == "redis" else "nats_server")


def _components(tmp: Path, backend: tuple[str, Any]) -> Path:
    kind, server = backend
    if kind == "redis":
        type_, meta = "pubsub.redis", {"redisHost": server.address}
    else:
        type_, meta = "pubsub.jetstream", {"natsURL": server.url, "ackWait": "1s"}
    folder = tmp / "components"
    folder.mkdir(exist_ok=True)
    items = "".join(f'    - name: {key}\n      value: "{value}"\n' for key, value in meta.items())
    (folder / "pubsub.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n"
        f"  name: {PUBSUB}\nspec:\n  type: {type_}\n  version: v1\n  metadata:\n{items}"
    )
    return folder


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _acknowledged(backend: tuple[str, Any], topic: str) -> bool:
    """Whether the group's one message of ``topic`` is acknowledged in the backend (it must
    have been delivered: a message never read counts as neither)."""
    kind, server = backend
    if kind == "redis":
        direct = redis_client.Redis.from_url(f"redis://{server.address}")
        try:
            [group] = direct.xinfo_groups(topic)
            assert group["last-delivered-id"] != b"0-0", "never read"
            return int(group["pending"]) == 0
        finally:
            direct.close()

    async def ack_floor() -> int:
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().consumer_info(safe_name(topic), APP_ID)
            assert info.delivered is not None and (info.delivered.consumer_seq or 0) >= 1, "never read"
            assert info.ack_floor is not None
            return info.ack_floor.stream_seq or 0
        finally:
            await nc.close()

    return asyncio.run(ack_floor()) == 1


def _stop_took(sidecar: sc.Sidecar) -> float:
    """Seconds between the sidecar's "stopping" and "stopped" log lines."""
    stamps = {what: datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f") for when, what in _LOG_TIME.findall(sidecar.log())}
    assert set(stamps) == {"stopping", "stopped"}, sidecar.log()
    return (stamps["stopped"] - stamps["stopping"]).total_seconds()


@pytest.fixture
def app_for(topic: str) -> Iterator[list[SlowApp]]:
    apps: list[SlowApp] = []
    yield apps
    for app in apps:
        app.release.set()
        app.stop()


def _run_until_delivering(tmp: Path, backend: tuple[str, Any], app: SlowApp, topic: str, grace: float) -> sc.Sidecar:
    """A sidecar for ``app`` stopping with ``grace``, once the app is handling one message."""
    folder = _components(tmp, backend)
    sidecar = sc.start(
        tmp, "--app-port", str(app.port), "--app-id", APP_ID, "--resources-path", str(folder),
        "--shutdown-grace-seconds", f"{grace:g}",
    )  # fmt: skip
    try:
        sidecar.stub().PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"slow"))
        assert app.started.wait(10), f"the app got nothing:\n{sidecar.log()}"
    except BaseException:
        sidecar.stop()
        raise
    return sidecar


# The app's time on the message, and the grace: longer than the fixed drain the component
# had (1 s for Redis Streams, 5 s for JetStream), shorter than the grace.
SLOW = {"redis": (1.5, 3.0), "jetstream": (5.5, 7.5)}


def test_a_stop_lets_a_delivery_in_flight_finish_within_the_grace(
    tmp_path: Path, backend: tuple[str, Any], topic: str, app_for: list[SlowApp]
) -> None:
    seconds, grace = SLOW[backend[0]]
    app = SlowApp(topic, seconds).start()
    app_for.append(app)
    sidecar = _run_until_delivering(tmp_path, backend, app, topic, grace)
    assert sidecar.stop() == 0, sidecar.log()
    assert len(app.received()) == 1
    assert _acknowledged(backend, topic), f"the app's SUCCESS was not acknowledged:\n{sidecar.log()}"
    took = _stop_took(sidecar)
    assert seconds - 0.5 <= took < grace, f"the stop took {took:.2f}s"


def test_a_stop_ends_within_a_grace_shorter_than_the_delivery(
    tmp_path: Path, backend: tuple[str, Any], topic: str, app_for: list[SlowApp]
) -> None:
    """The stop, as the sidecar logs it, takes the grace and at most the FINISH_SECONDS its
    last steps may add (the components' old fixed drain was 1 s over Redis, 5 s over
    JetStream; the app holds the message for 30 s); the process, whose start-up and exit a
    busy machine slows, exits within a few seconds more."""
    grace = 0.3
    app = SlowApp(topic, seconds=30.0).start()
    app_for.append(app)
    sidecar = _run_until_delivering(tmp_path, backend, app, topic, grace)
    began = time.monotonic()
    assert sidecar.stop() == 0, sidecar.log()
    exited = time.monotonic() - began
    took = _stop_took(sidecar)
    assert took < grace + FINISH_SECONDS, (
        f"the stop took {took:.2f}s with a grace of {grace:g}s (the process exited after {exited:.2f}s)"
    )
    assert exited < grace + 3.0, f"exited {exited:.2f}s after SIGTERM with a grace of {grace:g}s:\n{sidecar.log()}"
    assert not _acknowledged(backend, topic), "a message the app never answered was acknowledged"


def test_a_stop_ends_within_the_grace_when_redis_stops_answering(
    tmp_path: Path, topic: str, app_for: list[SlowApp]
) -> None:
    """Redis frozen (SIGSTOP) while the app handles a message: before, each reader waited up to
    Redis' read timeout for its XACK, then as long to leave its group, then the components
    closed: with a 1 s grace the sidecar exited about 7 s after SIGTERM. Now nothing waits on
    Redis past the grace (and a fraction of a second to acknowledge and close): the stop as
    the sidecar logs it is bounded tightly, the process's exit (which a busy machine slows)
    loosely, both well short of the 7 s."""
    grace = 1.0
    app = SlowApp(topic, seconds=0.3).start()
    app_for.append(app)
    with RedisServer(tmp_path / "redis") as server:
        server.start()
        sidecar = _run_until_delivering(tmp_path, ("redis", server), app, topic, grace)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            sidecar.process.send_signal(signal.SIGTERM)
            try:
                code = sidecar.process.wait(grace + 10)
            except subprocess.TimeoutExpired:
                code = None
            exited = time.monotonic() - began
            assert code == 0, sidecar.log()
            took = _stop_took(sidecar)
            assert took < grace + 1.0, f"the stop took {took:.2f}s with a grace of {grace:g}s:\n{sidecar.log()}"
            assert exited < grace + 3.0, (
                f"exited {exited:.2f}s after SIGTERM with a grace of {grace:g}s:\n{sidecar.log()}"
            )
        finally:
            os.kill(server.pid, signal.SIGCONT)
            sidecar.stop()


def test_a_second_signal_during_a_stop_exits_at_once(
    tmp_path: Path, redis_server: RedisServer, topic: str, app_for: list[SlowApp]
) -> None:
    """A delivery the app holds for 30 s, a 30 s grace: the first SIGTERM drains, a second one
    (an operator's second Ctrl-C) ends the process at once, with 143 (128 + SIGTERM) as a shell
    reports it. Before, the second signal was ignored and the stop took the whole grace."""
    app = SlowApp(topic, seconds=30.0).start()
    app_for.append(app)
    sidecar = _run_until_delivering(tmp_path, ("redis", redis_server), app, topic, grace=30.0)
    try:
        sidecar.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "INFO layotto_fast: stopping" not in sidecar.log():
            assert time.monotonic() < deadline, sidecar.log()
            time.sleep(0.02)
        began = time.monotonic()
        sidecar.process.send_signal(signal.SIGTERM)
        try:
            code = sidecar.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 128 + signal.SIGTERM, sidecar.log()
        assert time.monotonic() - began < 1.0
        assert "SIGTERM during the stop: exiting now" in sidecar.log()
    finally:
        sidecar.stop()
