"""An app that hangs with its socket open: the sidecar's PINGs notice, it dials again and the
message in hand reaches the app over the new connection.

The hang is made by a loopback proxy between the sidecar and the app that stops moving bytes
on the connections open at that moment, without closing them; connections made afterwards
pass as before (the app is back).
"""

from __future__ import annotations

import collections
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from layotto_fast._proto import runtime_pb2 as pb
from tests import sidecar as sc
from tests.faults import raw_h2
from tests.pubsub.app import CallbackApp, Topic

PUBSUB = "pub_subs_demo"  # the embedded in-memory component


class FrameReader:
    """Reads the HTTP/2 frame headers out of one direction of a connection's bytes, as they are
    relayed in chunks of any size: the client's preface first when ``preface`` is set."""

    def __init__(self, preface: bool) -> None:
        self._buffer = b""
        self._skip = len(raw_h2.PREFACE) if preface else 0

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        """The (type, flags) of every frame whose header is complete after ``data``."""
        self._buffer += data
        frames: list[tuple[int, int]] = []
        while True:
            if self._skip:
                taken = min(self._skip, len(self._buffer))
                self._buffer, self._skip = self._buffer[taken:], self._skip - taken
                if self._skip:
                    return frames
            if len(self._buffer) < 9:
                return frames
            length, kind, flags = int.from_bytes(self._buffer[:3], "big"), self._buffer[3], self._buffer[4]
            frames.append((kind, flags))
            self._buffer, self._skip = self._buffer[9:], length


class FreezingProxy:
    """Relays connections to the app; reads the frame headers the sidecar sends through it."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._frozen: set[socket.socket] = set()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.sent: collections.Counter[tuple[int, int]] = collections.Counter()  # (type, flags) from the sidecar
        threading.Thread(target=self._accept, daemon=True).start()

    def pings(self) -> int:
        """PINGs the sidecar sent to the app (not its ACKs of the app's), on every connection so far."""
        with self._lock:
            return sum(
                count for (kind, flags), count in self.sent.items() if kind == raw_h2.PING and not flags & raw_h2.ACK
            )

    def freeze(self) -> None:
        """Stop moving bytes on every connection open now, leaving them open."""
        with self._lock:
            self._frozen.update(self._open)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._open:
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open += (client, upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        from_sidecar = FrameReader(preface=True)
        while not self._closed:
            if self._is_frozen(client):
                time.sleep(0.05)
                continue
            try:
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                if self._is_frozen(client):  # frozen while waiting: leave the bytes unread
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        frames = from_sidecar.feed(data)
                        with self._lock:
                            self.sent.update(frames)
                    peers[sock].sendall(data)
            except OSError:
                return

    def _is_frozen(self, client: socket.socket) -> bool:
        with self._lock:
            return client in self._frozen


def _subscriptions(sidecar: sc.Sidecar) -> int:
    """How many of the app's subscriptions the sidecar holds (``/actuator/info``)."""
    code, body = sidecar.http("/actuator/info")
    return len(json.loads(body)["app"]["subscriptions"]) if code == 200 else -1


def _wait_subscribed(sidecar: sc.Sidecar, topics: int = 1, timeout: float = 10.0) -> None:
    """Until the sidecar holds the app's ``topics`` subscriptions; fails after ``timeout`` s without."""
    deadline = time.monotonic() + timeout
    while (held := _subscriptions(sidecar)) != topics:
        assert time.monotonic() < deadline, f"the sidecar holds {held} of the app's {topics} subscriptions"
        time.sleep(0.05)


@contextmanager
def subscribed_sidecar(tmp_path: Path, app_port: int, *flags: str, topics: int = 1) -> Iterator[sc.Sidecar]:
    """A sidecar for the app at ``app_port``, once it holds the app's ``topics`` subscriptions;
    stopped after."""
    sidecar = sc.start(tmp_path, "--app-port", str(app_port), *flags)
    try:
        _wait_subscribed(sidecar, topics)
        yield sidecar
    finally:
        sidecar.stop()


def test_an_app_hung_with_its_socket_open_is_noticed_by_pings_and_dialled_again(tmp_path: Path) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    # A long deliveryTimeout: only the PINGs can end the wait on the hung connection in time.
    with CallbackApp([Topic(PUBSUB, topic, {"deliveryTimeout": "60s"})]) as app:
        proxy = FreezingProxy(app.port)
        sidecar = sc.start(tmp_path, "--app-port", str(proxy.port), "--app-keepalive-seconds", "0.3")
        try:
            _wait_subscribed(sidecar)
            stub = sidecar.stub()
            before = stub.PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"a")).message_id
            app.wait_for(lambda events: any(e.id == before for e in events), timeout=5)
            assert app.listed == 1

            proxy.freeze()
            frozen_at = time.monotonic()
            after = stub.PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"b")).message_id
            app.wait_for(lambda events: any(e.id == after for e in events), timeout=8)
            assert time.monotonic() - frozen_at < 8
            deadline = time.monotonic() + 5
            while app.listed < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert app.listed >= 2, "the sidecar dialled again and asked for the subscriptions afresh"
            assert "no answer to a PING" in sidecar.log_path.read_text()
        finally:
            sidecar.stop()
            proxy.close()


def publish(sidecar: sc.Sidecar, topic: str) -> str:
    """Publish one message to ``topic`` of the embedded pub/sub; its id."""
    request = pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"a")
    return str(sidecar.stub().PublishEvent(request).message_id)


def test_an_idle_app_connection_is_kept_and_never_pinged(tmp_path: Path) -> None:
    """A healthy app that sends nothing keeps its one connection, and no PING goes out on it
    (the frames the sidecar sends are read in the proxy between them). Before, the second PING
    found the first one's answer unread and closed the connection (every two intervals); and
    PINGs on an idle connection are what gRPC servers (this grpcio one, with its defaults)
    refuse after two, with GOAWAY too_many_pings."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    with CallbackApp([Topic(PUBSUB, topic)]) as app:
        proxy = FreezingProxy(app.port)
        try:
            with subscribed_sidecar(tmp_path, proxy.port, "--app-keepalive-seconds", "0.2") as sidecar:
                # (the listing may have been PINGed, had the app been slow to answer it: a call was open)
                pinged_before = proxy.pings()
                time.sleep(3)  # 15 keepalive intervals with nothing to deliver: the span observed
                assert proxy.pings() == pinged_before, f"the idle connection was PINGed; frames sent: {proxy.sent}"
                sent = publish(sidecar, topic)
                app.wait_for(lambda events: any(e.id == sent for e in events), timeout=5)
                log = sidecar.log_path.read_text()
                assert app.listed == 1, log
                assert "no answer to a PING" not in log and "ended:" not in log and "lost the app" not in log, log
                # the frames were read indeed: the listing's and the delivery's request headers
                assert sum(n for (kind, _), n in proxy.sent.items() if kind == raw_h2.HEADERS) >= 2, proxy.sent
        finally:
            proxy.close()


class CuttingProxy(FreezingProxy):
    def cut(self) -> None:
        """Close every connection open now, as a crash of the app's host would end them; new
        connections pass."""
        with self._lock:
            opened, self._open = self._open, []
        for sock in opened:
            sock.close()


def test_a_delivery_cut_off_by_a_lost_connection_goes_back_to_the_backend_not_to_the_dead_letters(
    tmp_path: Path,
) -> None:
    """The app never answered: no verdict. Before, the loss counted as the app answering RETRY,
    and with retryAttempts 1 (or after a few quick redials refused) the message went to the
    dead-letter topic without the app ever having refused it."""
    topic, dead = f"t-{uuid.uuid4().hex[:8]}", f"dead-{uuid.uuid4().hex[:8]}"
    release = threading.Event()
    first = threading.Event()

    def verdict(event: pb.TopicEventRequest) -> int:
        if event.topic == topic and not first.is_set():
            first.set()
            release.wait(10)  # its answer goes nowhere: the connection is cut meanwhile
        return 0

    subscriptions = [Topic(PUBSUB, topic, {"retryAttempts": "1"}, dead_letter_topic=dead), Topic(PUBSUB, dead)]
    with CallbackApp(subscriptions, verdict) as app:
        proxy = CuttingProxy(app.port)
        try:
            with subscribed_sidecar(tmp_path, proxy.port, topics=len(subscriptions)) as sidecar:
                sent = publish(sidecar, topic)
                assert first.wait(5)
                proxy.cut()
                release.set()
                app.wait_for(lambda events: [e.id for e in events if e.topic == topic].count(sent) >= 2, timeout=10)
                time.sleep(1.0)
                assert app.received(dead) == [], sidecar.log_path.read_text()
        finally:
            release.set()
            proxy.close()


def test_a_long_silent_delivery_is_pinged_once_not_into_too_many_pings(tmp_path: Path) -> None:
    """A delivery the app takes seconds over, with nothing sent meanwhile: one PING shows the
    app alive. Before, every other tick PINGed again, and the app's gRPC server (grpcio here,
    grpc-go alike) closed the connection with GOAWAY too_many_pings: the delivery failed."""
    topic = f"t-{uuid.uuid4().hex[:8]}"

    def slow(event: pb.TopicEventRequest) -> int:
        time.sleep(3)
        return 0

    with (
        CallbackApp([Topic(PUBSUB, topic, {"deliveryTimeout": "30s"})], slow) as app,
        subscribed_sidecar(tmp_path, app.port, "--app-keepalive-seconds", "0.2") as sidecar,
    ):
        sent = publish(sidecar, topic)
        app.wait_for(lambda events: any(e.id == sent for e in events), timeout=5)
        time.sleep(3.5)  # the handler's 3 s, at 15 keepalive ticks
        log = sidecar.log_path.read_text()
        assert "too_many_pings" not in log and "ended:" not in log, log
        assert app.listed == 1 and [e.id for e in app.received(topic)] == [sent], log


def test_an_app_that_hangs_after_answering_a_ping_is_pinged_again_after_the_spacing(tmp_path: Path) -> None:
    """A delivery the app keeps silent: its first PING is answered, then the app hangs. Before,
    no PING followed while the stretch lasted, so the hang went unnoticed until the delivery's
    deadline (60 s here), and much longer for an app whose calls never end; now another PING
    goes out after ``--app-ping-spacing-seconds``, unanswered, and the sidecar dials again."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    first = threading.Event()

    def slow_once(event: pb.TopicEventRequest) -> int:
        if not first.is_set():
            first.set()
            time.sleep(3)  # silent meanwhile: the answer goes into the frozen proxy
        return 0

    with CallbackApp([Topic(PUBSUB, topic, {"deliveryTimeout": "60s"})], slow_once) as app:
        proxy = FreezingProxy(app.port)
        flags = ("--app-keepalive-seconds", "0.2", "--app-ping-spacing-seconds", "1")
        try:
            with subscribed_sidecar(tmp_path, proxy.port, *flags) as sidecar:
                sent = publish(sidecar, topic)
                assert first.wait(5)
                deadline = time.monotonic() + 5
                while proxy.pings() == 0:
                    assert time.monotonic() < deadline, "the silent delivery was never PINGed"
                    time.sleep(0.02)
                time.sleep(0.3)  # the app's HTTP/2 layer answers it at once
                proxy.freeze()
                frozen_at = time.monotonic()
                app.wait_for(lambda events: [e.id for e in events].count(sent) >= 2, timeout=6)
                assert time.monotonic() - frozen_at < 6
                log = sidecar.log_path.read_text()
                assert "no answer to a PING" in log and app.listed >= 2, log
        finally:
            proxy.close()


def test_an_app_rotating_its_connections_keeps_its_subscriptions(tmp_path: Path) -> None:
    """A gRPC server closing connections at a maximum age (GOAWAY, then the close) is still
    there: the sidecar dials again and keeps its subscriptions. Before, each rotation counted as
    losing the app: every subscription stopped, drained and was asked for afresh."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    rotating = [("grpc.max_connection_age_ms", 700), ("grpc.max_connection_age_grace_ms", 300)]
    with (
        CallbackApp([Topic(PUBSUB, topic)], options=rotating) as app,
        subscribed_sidecar(tmp_path, app.port) as sidecar,
    ):
        time.sleep(3)  # several rotations
        sent = publish(sidecar, topic)
        app.wait_for(lambda events: any(e.id == sent for e in events), timeout=5)
        log = sidecar.log_path.read_text()
        assert "after its GOAWAY" in log, log  # rotated indeed
        # asked again at each new connection, but the same answer keeps the subscriptions
        assert app.listed >= 2 and "lost the app" not in log and "subscribing afresh" not in log, log


def test_an_app_restarted_in_place_with_other_topics_is_asked_again(tmp_path: Path) -> None:
    """A new version behind the same port (a graceful GOAWAY, then a new connection, as a
    rotation looks) asks for other topics: they are subscribed, and the old one stopped.
    Before, the sidecar kept the first version's subscriptions until a connection was lost."""
    old_topic, new_topic = f"old-{uuid.uuid4().hex[:8]}", f"new-{uuid.uuid4().hex[:8]}"
    rotating = [("grpc.max_connection_age_ms", 700), ("grpc.max_connection_age_grace_ms", 300)]
    with (
        CallbackApp([Topic(PUBSUB, old_topic)], options=rotating) as app,
        subscribed_sidecar(tmp_path, app.port) as sidecar,
    ):
        app.topics = [Topic(PUBSUB, new_topic)]
        deadline = time.monotonic() + 10
        while json.loads(sidecar.http("/actuator/info")[1])["app"]["subscriptions"] != [f"{PUBSUB}/{new_topic}"]:
            assert time.monotonic() < deadline, sidecar.log_path.read_text()
            time.sleep(0.1)
        sent = publish(sidecar, new_topic)
        app.wait_for(lambda events: any(e.id == sent for e in events), timeout=5)
        assert "lost the app" not in sidecar.log_path.read_text()
