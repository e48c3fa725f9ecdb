"""Limits both gRPC transports must apply alike, and the calls /metrics must count on both.

* Message size: one setting (``--max-message-bytes``, default 4 MiB) bounds requests and
  answers on either transport; an answer over it ends the call RESOURCE_EXHAUSTED (as
  grpc does for a message over its send limit), the connection and process carry on.
* Counting: every call that reached the server is in ``layotto_fast_grpc_requests_total``
  once, with the status the client got: calls refused for size, calls to a path the
  server does not serve (UNIMPLEMENTED, under one bounded label), streams that ended.
* Handshake timeout: a connection that has not sent the HTTP/2 preface and its SETTINGS
  within ``--grpc-handshake-timeout-seconds`` is closed.

Each test runs once per transport, the same assertions on both: against the real
``layotto-fast serve`` process where the sidecar's handlers can produce the case, in
process (both transports' servers over the test handlers of ``test_transports``)
where only a test handler can (a streamed answer over the limit).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from layotto_fast import cli
from layotto_fast import settings as settings_module
from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast._proto import runtime_pb2_grpc
from layotto_fast.api.stats import UNKNOWN_METHOD
from tests import sidecar as sidecar_process
from tests.faults import raw_h2
from tests.faults.support import MIB, stop_cleanly
from tests.inprocess import KINDS, InProcessServer
from tests.unit.test_transports import Handlers

TRANSPORTS = ("native", "grpcio")
HANDSHAKE_TIMEOUT = 0.5
# Set by flag, below the 4 MiB default: what is refused here would go through by default.
MESSAGE_LIMIT = 2 * 1024 * 1024
RUNTIME = "/spec.proto.runtime.v1.Runtime"
# A client that takes and sends any size: what is refused is refused by the server.
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


# -- the sidecar, once per transport ---------------------------------------------------------------
@pytest.fixture(scope="module", params=TRANSPORTS)
def sidecar(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Both limits set by flag: the message limit, and a short handshake timeout (not 10 s)."""
    running = sidecar_process.start(
        tmp_path_factory.mktemp("limits"),
        "--grpc-transport",
        request.param,
        "--max-message-bytes",
        str(MESSAGE_LIMIT),
        "--grpc-handshake-timeout-seconds",
        str(HANDSHAKE_TIMEOUT),
    )
    yield running
    stop_cleanly(running)


@pytest.fixture
def channel(sidecar: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(sidecar.target, options=UNLIMITED) as opened:
        yield opened


REQUESTS = re.compile(r'^layotto_fast_grpc_requests_total\{code="([^"]+)",method="([^"]+)"\} (\S+)$', re.M)


def counts(running: Any) -> dict[tuple[str, str], int]:
    """``layotto_fast_grpc_requests_total`` by (method, code)."""
    status, body = running.http("/metrics")
    assert status == 200
    return {(method, code): int(float(value)) for code, method, value in REQUESTS.findall(body.decode())}


def wait_counted(
    read: Callable[[], dict[tuple[str, str], int]],
    before: dict[tuple[str, str], int],
    expected: dict[tuple[str, str], int],
    timeout: float = 5.0,
) -> dict[tuple[str, str], int]:
    """Wait until the counts grew by exactly ``expected`` (and nothing else), then make sure they stay."""
    deadline = time.monotonic() + timeout
    while True:
        now = read()
        grown = {key: now[key] - before.get(key, 0) for key in now if now[key] != before.get(key, 0)}
        if grown == expected:
            break
        assert time.monotonic() < deadline, f"counted {grown}, want {expected}"
        time.sleep(0.05)
    time.sleep(0.3)  # and each call once: nothing more comes later
    again = read()
    assert again == now, f"counted again later: {now} -> {again}"
    return grown


def assert_alive(running: Any, channel: grpc.Channel) -> None:
    """The process runs and the same channel (connection) is still served."""
    assert running.process.poll() is None, running.log()[-4000:]
    stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
    reply = stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="still"), timeout=5)
    assert reply.hello == "greetings, still"


def code_of(error: BaseException) -> grpc.StatusCode:
    assert isinstance(error, grpc.RpcError), error
    return error.code()  # type: ignore[attr-defined,no-any-return]


# -- defect 1: one size limit for both transports, requests and answers ---------------------------------
@pytest.mark.time_limit(60)
def test_an_answer_over_the_limit_is_resource_exhausted(sidecar: Any, channel: grpc.Channel) -> None:
    """Two 1.5 MiB values are each under the 2 MiB limit; their 3 MiB GetBulkState answer is not."""
    stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
    keys = [f"big-{i}" for i in range(2)]
    size = 3 * MESSAGE_LIMIT // 4
    for key in keys:
        item = pb.StateItem(key=key, value=key.encode() * (size // len(key)))
        stub.SaveState(pb.SaveStateRequest(store_name="in-memory", states=[item]), timeout=10)
    one = stub.GetState(pb.GetStateRequest(store_name="in-memory", key=keys[0]), timeout=10)
    assert len(one.data) > size - 8  # an answer under the limit goes out
    before = counts(sidecar)

    with pytest.raises(grpc.RpcError) as raised:
        stub.GetBulkState(pb.GetBulkStateRequest(store_name="in-memory", keys=keys), timeout=10)
    assert code_of(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = raised.value.details()  # type: ignore[attr-defined]
    assert re.fullmatch(rf"response message is \d+ bytes, over the limit of {MESSAGE_LIMIT}", details), details

    wait_counted(lambda: counts(sidecar), before, {("GetBulkState", "RESOURCE_EXHAUSTED"): 1})
    assert_alive(sidecar, channel)


@pytest.mark.time_limit(60)
def test_a_request_over_the_limit_is_resource_exhausted_and_counted(sidecar: Any, channel: grpc.Channel) -> None:
    stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
    before = counts(sidecar)
    item = pb.StateItem(key="too-big", value=b"v" * (3 * MIB))  # under the default limit, over ours
    with pytest.raises(grpc.RpcError) as raised:
        stub.SaveState(pb.SaveStateRequest(store_name="in-memory", states=[item]), timeout=10)
    assert code_of(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Nothing was stored, and the call is counted once, with its code.
    assert stub.GetState(pb.GetStateRequest(store_name="in-memory", key="too-big"), timeout=5).data == b""
    wait_counted(lambda: counts(sidecar), before, {("SaveState", "RESOURCE_EXHAUSTED"): 1, ("GetState", "OK"): 1})
    assert_alive(sidecar, channel)


# -- defect 2: every call that reached the server is counted ------------------------------------------
def test_unknown_methods_are_counted_unimplemented_under_a_bounded_label(sidecar: Any, channel: grpc.Channel) -> None:
    before = counts(sidecar)
    paths = [f"{RUNTIME}/NoSuchMethod{i}" for i in range(10)] + [f"/some.Other/Method{i}" for i in range(10)]
    for path in [*paths, f"{RUNTIME}/InvokeBinding"]:  # the last one is declared, not implemented
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(path)(b"", timeout=5)
        assert code_of(raised.value) == grpc.StatusCode.UNIMPLEMENTED, path
        assert path in raised.value.details()  # type: ignore[attr-defined]
    # A client-streaming caller of an unknown path is answered at once as well.
    with pytest.raises(grpc.RpcError) as raised:
        next(channel.stream_stream(f"{RUNTIME}/NoSuchStream")(iter([b"x"]), timeout=5))
    assert code_of(raised.value) == grpc.StatusCode.UNIMPLEMENTED
    wait_counted(
        lambda: counts(sidecar),
        before,
        {(UNKNOWN_METHOD, "UNIMPLEMENTED"): len(paths) + 1, ("InvokeBinding", "UNIMPLEMENTED"): 1},
    )


def test_a_subscription_the_client_cancels_is_counted_once(sidecar: Any, channel: grpc.Channel) -> None:
    stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
    before = counts(sidecar)
    requests_done = threading.Event()

    def requests() -> Iterator[pb.SubscribeConfigurationRequest]:
        yield pb.SubscribeConfigurationRequest(store_name="config_demo", app_id="limits", keys=["k"])
        requests_done.wait(10)  # keep the request side open: the server holds the stream

    # A deadline far off: a reset long before it is the client's choice, counted CANCELLED.
    call = stub.SubscribeConfiguration(requests(), timeout=60)
    deadline = time.monotonic() + 5
    while b"layotto_fast_configuration_subscriptions 1.0" not in sidecar.http("/metrics")[1]:
        assert time.monotonic() < deadline, "the subscription never opened"
        time.sleep(0.02)
    call.cancel()
    requests_done.set()
    wait_counted(lambda: counts(sidecar), before, {("SubscribeConfiguration", "CANCELLED"): 1})


def test_a_subscription_the_server_ends_is_counted_once(sidecar: Any, channel: grpc.Channel) -> None:
    """Half-closed with nothing to watch: the server ends the stream, OK."""
    stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
    before = counts(sidecar)
    assert list(stub.SubscribeConfiguration(iter([]), timeout=5)) == []
    wait_counted(lambda: counts(sidecar), before, {("SubscribeConfiguration", "OK"): 1})


def test_a_call_past_its_deadline_is_counted_once(sidecar: Any, channel: grpc.Channel) -> None:
    stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
    before = counts(sidecar)
    request = pb.SubscribeConfigurationRequest(store_name="config_demo", app_id="limits", keys=["k"])
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.SubscribeConfiguration(iter([request]), timeout=0.3))
    assert code_of(raised.value) == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_counted(lambda: counts(sidecar), before, {("SubscribeConfiguration", "DEADLINE_EXCEEDED"): 1})


# -- defect 3: connections that never finish the HTTP/2 greeting are closed ----------------------------------
def open_fds(running: Any) -> int:
    return len(os.listdir(f"/proc/{running.process.pid}/fd"))


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the server closed the socket (FIN or RST); False while it is open."""
    try:
        while True:
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return False
        raise


@pytest.mark.time_limit(60)
def test_connections_that_never_send_the_preface_are_closed(sidecar: Any, channel: grpc.Channel) -> None:
    assert_alive(sidecar, channel)  # the channel's connection is up before the baseline
    fds = open_fds(sidecar)
    greetings = {
        "silent": b"",
        "half-a-preface": raw_h2.PREFACE[:12],
        "preface-only": raw_h2.PREFACE,
        "settings-cut-short": raw_h2.PREFACE + raw_h2.raw_frame(raw_h2.SETTINGS, 0, 0, b"\0\3", length=6),
    }
    sockets: list[tuple[str, socket.socket]] = []
    complete: list[socket.socket] = []
    try:
        for kind, data in greetings.items():
            for _ in range(50 if kind == "silent" else 10):
                sock = socket.create_connection(("127.0.0.1", sidecar.grpc_port))
                if data:
                    sock.sendall(data)
                sockets.append((kind, sock))
        for _ in range(3):  # the whole greeting, then idle: such a client stays connected
            sock = socket.create_connection(("127.0.0.1", sidecar.grpc_port))
            sock.sendall(raw_h2.PREFACE + raw_h2.Frames.settings())
            complete.append(sock)
        opened = time.monotonic()
        deadline = opened + HANDSHAKE_TIMEOUT + 3.0
        still_open = sockets
        while still_open and time.monotonic() < deadline:
            time.sleep(0.05)
            still_open = [(kind, sock) for kind, sock in still_open if not closed_by_peer(sock)]
        assert not still_open, (
            f"still open after {time.monotonic() - opened:.1f} s: {sorted({k for k, _ in still_open})}"
        )
        assert time.monotonic() - opened >= HANDSHAKE_TIMEOUT - 0.1, "closed before the timeout"
        assert not any(closed_by_peer(sock) for sock in complete), "a client that sent the greeting was dropped"
        # The descriptors went with them (a few may come and go on their own).
        allowed = fds + len(complete) + 5
        deadline = time.monotonic() + 3
        while open_fds(sidecar) > allowed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_fds(sidecar) <= allowed, f"{open_fds(sidecar)} descriptors, {fds} before {len(sockets)} sockets"
    finally:
        for _, sock in sockets:
            sock.close()
        for sock in complete:
            sock.close()
    assert_alive(sidecar, channel)
    with grpc.insecure_channel(sidecar.target) as fresh:
        stub = runtime_pb2_grpc.RuntimeStub(fresh)  # type: ignore[no-untyped-call]
        assert stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="new"), timeout=5).hello


# -- in process: answers only a test handler can make -----------------------------------------------
LIMIT = 64 * 1024


class Serving(InProcessServer):
    """One transport's server over ``test_transports.Handlers``, with its CallStats at hand."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind, Handlers(), LIMIT)

    def counts(self) -> dict[tuple[str, str], int]:
        result = {}
        for method, stats in list(self.stats.methods.items()):
            if stats.ok:
                result[method, "OK"] = stats.ok
            for code, count in list(stats.failures.items()):
                result[method, code] = count
        return result


@pytest.fixture(scope="module", params=KINDS)
def serving(request: pytest.FixtureRequest) -> Iterator[Serving]:
    """``native-task``: the native transport with every unary call in a Task."""
    running = Serving(request.param)
    yield running
    running.close()


@pytest.fixture
def stub(serving: Serving) -> Iterator[runtime_pb2_grpc.RuntimeStub]:
    with grpc.insecure_channel(f"127.0.0.1:{serving.port}", options=UNLIMITED) as opened:
        yield runtime_pb2_grpc.RuntimeStub(opened)  # type: ignore[no-untyped-call]


def refused_answer(stub: runtime_pb2_grpc.RuntimeStub, call: Callable[[], Any]) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert code_of(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    details: str = raised.value.details()  # type: ignore[attr-defined]
    assert stub.SayHello(pb.SayHelloRequest(name="after")).hello == "hi after"  # the connection carries on
    return details


def test_an_answer_over_the_limit_on_every_call_path(serving: Serving, stub: runtime_pb2_grpc.RuntimeStub) -> None:
    """A request just under the limit whose answer is just over it: the handler that completes at
    once (SayHello), the one that suspends (GetState), a streamed answer (GetFile)."""
    name = "n" * LIMIT
    while len(pb.SayHelloRequest(name=name).SerializeToString()) > LIMIT:
        name = name[:-1]
    assert len(pb.SayHelloResponse(hello=f"hi {name}").SerializeToString()) > LIMIT
    answer = len(pb.SayHelloResponse(hello=f"hi {name}").SerializeToString())
    before = serving.counts()
    details = refused_answer(stub, lambda: stub.SayHello(pb.SayHelloRequest(name=name), timeout=5))
    assert details == f"response message is {answer} bytes, over the limit of {LIMIT}"
    refused_answer(
        stub,
        lambda: stub.GetState(pb.GetStateRequest(key="k" * (LIMIT - 100)), metadata=[("x-request", "e" * 200)]),
    )
    # GetFile streams 1 000 copies of "<name>:<index>": 82 000 bytes a message with this name.
    refused_answer(stub, lambda: list(stub.GetFile(pb.GetFileRequest(name="f" * 80), timeout=5)))
    expected = {("SayHello", "RESOURCE_EXHAUSTED"): 1, ("GetState", "RESOURCE_EXHAUSTED"): 1}
    expected[("GetFile", "RESOURCE_EXHAUSTED")] = 1
    expected[("SayHello", "OK")] = 3  # the calls after each
    wait_counted(serving.counts, before, expected)


# The native transport may cancel the call's Task before its first step, leaving the handler's
# coroutine never awaited; pytest would keep that warning's coroutine (and through it the
# connection) alive past the server's thread.
@pytest.mark.filterwarnings("ignore:coroutine 'Handlers.PutFile' was never awaited")
def test_a_streamed_request_over_the_limit(serving: Serving, stub: runtime_pb2_grpc.RuntimeStub) -> None:
    """The client gets RESOURCE_EXHAUSTED from either transport; the call is counted once.

    Its code in the count differs: grpc core refuses the message and grpc.aio only shows
    the handler a request stream that ends and a call that is cancelled, so the grpcio
    transport counts it CANCELLED (the limitation its module documents)."""
    before = serving.counts()
    chunks = iter([pb.PutFileRequest(data=b"x" * 1000), pb.PutFileRequest(data=b"x" * (LIMIT + 1))])
    with pytest.raises(grpc.RpcError) as raised:
        stub.PutFile(chunks, timeout=5)
    assert code_of(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    counted = "CANCELLED" if serving.kind == "grpcio" else "RESOURCE_EXHAUSTED"
    wait_counted(serving.counts, before, {("PutFile", counted): 1})


def test_transports_refuse_with_the_same_codes_in_process(serving: Serving, stub: runtime_pb2_grpc.RuntimeStub) -> None:
    """A unary request over the limit, and a path not served: the codes and the counts."""
    before = serving.counts()
    with pytest.raises(grpc.RpcError) as raised:
        stub.SayHello(pb.SayHelloRequest(name="x" * (LIMIT + 1)), timeout=5)
    assert code_of(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    with grpc.insecure_channel(f"127.0.0.1:{serving.port}") as other:
        with pytest.raises(grpc.RpcError) as raised:
            other.unary_unary("/not.This/Service")(b"", timeout=5)
        assert code_of(raised.value) == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as raised:
            other.unary_unary(f"{RUNTIME}/ListFile")(b"", timeout=5)  # declared, no handler here
        assert code_of(raised.value) == grpc.StatusCode.UNIMPLEMENTED
    expected = {
        ("SayHello", "RESOURCE_EXHAUSTED"): 1,
        (UNKNOWN_METHOD, "UNIMPLEMENTED"): 1,
        ("ListFile", "UNIMPLEMENTED"): 1,
    }
    wait_counted(serving.counts, before, expected)


def test_native_handshake_timeout_in_process() -> None:
    """The native server's own setting (the sidecar's flag is tested above on both transports)."""
    server = InProcessServer("native", Handlers(), handshake_timeout_seconds=0.2)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as silent:
            silent.settimeout(3)
            started = time.monotonic()
            while silent.recv(65536):  # the server's SETTINGS, then the close
                pass
            assert 0.15 < time.monotonic() - started < 2
    finally:
        server.close()


# -- the settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--max-message-bytes", "1000"], "--max-message-bytes: must be from 1024 to 2147483647, got 1000"),
        (["--max-message-bytes", str(2**31)], "--max-message-bytes: must be from 1024 to 2147483647"),
        (["--grpc-handshake-timeout-seconds", "0"], "--grpc-handshake-timeout-seconds: must be more than 0"),
        (["--grpc-handshake-timeout-seconds", "-1"], "--grpc-handshake-timeout-seconds: must be a non-negative"),
    ],
)
def test_a_bad_limit_stops_start_up(flags: list[str], problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", *flags, "--resources-path", str(sidecar_process.REPO / "components")]) == 2
    assert problem in capsys.readouterr().err


def test_the_limits_default_and_come_from_the_config_file(tmp_path: Any) -> None:
    defaults = settings_module.load(None, {})
    assert (defaults.max_message_bytes, defaults.grpc_handshake_timeout_seconds) == (4 * MIB, 10.0)
    config = tmp_path / "limits.yaml"
    config.write_text("max-message-bytes: 65536\ngrpc_handshake_timeout_seconds: 2\n")
    loaded = settings_module.load(str(config), {"max_message_bytes": 131072})
    assert (loaded.max_message_bytes, loaded.grpc_handshake_timeout_seconds) == (131072, 2.0)  # the flag wins
