"""InvokeService through the real sidecar: the http channel to a plain HTTP server (the
standard library's), the bolt channel to anthunder's provider, the dubbo channel to
dubbo-py's, with filters, Layotto's request headers, and every failure's status (a Dubbo
error status from a provider double that answers only that status)."""

from __future__ import annotations

import io
import json
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.wrappers_pb2 import StringValue

from layotto_fast._proto import runtime_pb2 as pb
from tests import sidecar as sidecar_process
from tests.faults.raw_h2 import H2Client, Response
from tests.http_upstream import serving
from tests.mesh import bolt_peers, dubbo_peers
from tests.mesh.fault_upstream import fault_upstream, wait_for

# What /slow takes: far past every timeout the tests give it, so that each can be told apart.
SLOW_SECONDS = 3.0
REGION, CITY = "华东", "杭州"  # header values past Latin-1
REGION_FILTER = {"name": "headers", "set": {"x-region": REGION}}
INVOKE_PATH = "/spec.proto.runtime.v1.Runtime/InvokeService"


class Upstream(BaseHTTPRequestHandler):
    """Answers with what it received, as JSON; /slow waits, /status/N answers N."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/slow"):
            time.sleep(SLOW_SECONDS)
        status = int(self.path.split("/status/")[1]) if "/status/" in self.path else 200
        answer = json.dumps(
            {"verb": self.command, "path": self.path, "body": body.decode(), "headers": dict(self.headers)}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815  (http.server's names)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_upstream() -> Iterator[str]:
    with serving(Upstream) as address:
        yield address


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[str, str]]:
    with bolt_peers.start_echo_provider() as bolt, dubbo_peers.start_echo_provider() as dubbo:
        yield f"{bolt.address[0]}:{bolt.address[1]}", f"{dubbo.address[0]}:{dubbo.address[1]}"


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory, http_upstream: str, providers: tuple[str, str]
) -> Iterator[sidecar_process.Sidecar]:
    tmp = tmp_path_factory.mktemp("invoke")
    bolt_address, dubbo_address = providers
    config = {
        "mesh": {
            "clusters": [
                {"name": "bolt-echo", "protocol": "bolt", "hosts": [bolt_address]},
                {"name": "dubbo-echo", "protocol": "dubbo", "hosts": [dubbo_address]},
            ]
        },
        "invoke": {
            "targets": [
                {"id": "web", "channel": "http", "address": http_upstream, "timeout_ms": 400,
                 "before_invoke": [{"name": "headers", "set": {"x-from": "sidecar"}, "remove": ["x-secret"]}]},
                {"id": "web-fast", "channel": "http", "address": http_upstream,
                 "before_invoke": [{"name": "timeout", "timeout_ms": 150}]},
                # Layotto's dubbo_json_rpc demo: dubbo-go's JSON-RPC server behind the http channel
                {"id": "com.ikurento.user.UserProvider", "channel": "http", "address": http_upstream,
                 "before_invoke": [{"name": "dubbo_json_rpc"}]},
                {"id": "nowhere", "channel": "http", "address": f"127.0.0.1:{sidecar_process.free_port()}"},
                {"id": "echo-bolt", "channel": "bolt", "cluster": "bolt-echo",
                 "service": bolt_peers.INTERFACE, "codec": "protobuf"},
                {"id": "echo-bolt-direct", "channel": "bolt", "address": bolt_address,
                 "service": bolt_peers.INTERFACE, "codec": "protobuf"},
                {"id": "echo-dubbo", "channel": "dubbo", "cluster": "dubbo-echo", "service": dubbo_peers.SERVICE,
                 "version": "1.0"},
                # a header value past Latin-1, from a filter, on each channel
                {"id": "web-region", "channel": "http", "address": http_upstream, "before_invoke": [REGION_FILTER]},
                {"id": "bolt-region", "channel": "bolt", "address": bolt_address, "service": bolt_peers.INTERFACE,
                 "codec": "protobuf", "before_invoke": [REGION_FILTER]},
                {"id": "dubbo-region", "channel": "dubbo", "cluster": "dubbo-echo", "service": dubbo_peers.SERVICE,
                 "before_invoke": [REGION_FILTER, {"name": "dubbo_json_rpc"}]},
            ]
        },
    }  # fmt: skip
    process = sidecar_process.start_with_config(tmp, config)
    yield process
    process.stop()


def invoke(
    sidecar: sidecar_process.Sidecar,
    target: str,
    method: str,
    data: bytes = b"",
    metadata: tuple[tuple[str, str | bytes], ...] = (),
    verb: int = 0,
    query: str = "",
) -> pb.InvokeResponse:
    request = pb.InvokeServiceRequest(
        id=target,
        message=pb.CommonInvokeRequest(
            method=method,
            data=any_pb2.Any(value=data),
            content_type="text/plain",
            http_extension=pb.HTTPExtension(verb=verb, querystring=query),
        ),
    )
    response: pb.InvokeResponse = sidecar.stub().InvokeService(request, metadata=metadata, timeout=10)
    return response


def error(sidecar: sidecar_process.Sidecar, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        invoke(sidecar, *args, **kwargs)
    return caught.value


def test_http_channel_sends_verb_path_query_body_and_headers(sidecar: sidecar_process.Sidecar) -> None:
    response = invoke(
        sidecar, "web", "orders/7", b"hello", verb=pb.HTTPExtension.PUT, query="a=1&b=2",
        metadata=(("x-trace", "abc"), ("x-secret", "s"), ("x-tag", "a"), ("x-tag", "b"), ("t-bin", b"\x01")),
    )  # fmt: skip
    seen = json.loads(response.data.value)
    assert (seen["verb"], seen["path"], seen["body"]) == ("PUT", "/orders/7?a=1&b=2", "hello")
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["x-trace"] == "abc", "call metadata goes out as headers"
    assert headers["x-tag"] == "a,b", "a repeated key's values joined, as Layotto joins them (the last alone before)"
    assert "t-bin" not in headers
    assert headers["x-from"] == "sidecar" and "x-secret" not in headers, "the header filter ran"
    assert headers["content-type"] == "text/plain"
    assert response.content_type == "application/json"
    # Layotto's http channel sends GET when the call has no http_extension (its Java SDK never sets one)
    assert json.loads(invoke(sidecar, "web", "x").data.value)["verb"] == "GET", "GET without a verb"


def test_layottos_dubbo_json_rpc_config_on_an_http_target_works_as_in_layotto(sidecar: sidecar_process.Sidecar) -> None:
    body = b'{"jsonrpc":"2.0","method":"GetUser","params":["A003"],"id":9527}'
    response = invoke(sidecar, "com.ikurento.user.UserProvider", "GetUser", body, verb=pb.HTTPExtension.POST)
    seen = json.loads(response.data.value)
    assert (seen["verb"], seen["path"], seen["body"]) == ("POST", "/com.ikurento.user.UserProvider", body.decode())
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["x-services"] == headers["id"] == "com.ikurento.user.UserProvider"
    assert headers["x-method"] == "GetUser"
    assert headers["content-type"] == headers["accept"] == "application/json"


# Every status the http channel's table gives a meaning, and other non-2xx ones (INTERNAL).
HTTP_STATUS_CODES = [
    (400, grpc.StatusCode.INVALID_ARGUMENT),
    (401, grpc.StatusCode.UNAUTHENTICATED),
    (403, grpc.StatusCode.PERMISSION_DENIED),
    (404, grpc.StatusCode.NOT_FOUND),
    (408, grpc.StatusCode.DEADLINE_EXCEEDED),
    (409, grpc.StatusCode.ABORTED),
    (412, grpc.StatusCode.FAILED_PRECONDITION),
    (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (501, grpc.StatusCode.UNIMPLEMENTED),
    (502, grpc.StatusCode.UNAVAILABLE),
    (503, grpc.StatusCode.UNAVAILABLE),
    (504, grpc.StatusCode.DEADLINE_EXCEEDED),
    (500, grpc.StatusCode.INTERNAL),
    (418, grpc.StatusCode.INTERNAL),
    (302, grpc.StatusCode.INTERNAL),
]


@pytest.mark.parametrize(("status", "code"), HTTP_STATUS_CODES, ids=[str(s) for s, _ in HTTP_STATUS_CODES])
def test_an_http_error_status_maps_to_its_grpc_code(
    sidecar: sidecar_process.Sidecar, http_upstream: str, status: int, code: grpc.StatusCode
) -> None:
    """The caller learns what the upstream answered: its status, and the start of its body."""
    failed = error(sidecar, "web", f"status/{status}")
    assert failed.code() == code, failed
    details = failed.details() or ""
    assert details.startswith(f"http://{http_upstream}/status/{status} answered {status}: "), details
    answered_body = json.loads(details.split(": ", 1)[1])
    assert (answered_body["verb"], answered_body["path"]) == ("GET", f"/status/{status}"), "the upstream's own body"


def test_an_unreachable_http_upstream_is_unavailable(sidecar: sidecar_process.Sidecar) -> None:
    assert error(sidecar, "nowhere", "x").code() == grpc.StatusCode.UNAVAILABLE


def test_timeouts_from_the_target_the_header_and_the_filter(sidecar: sidecar_process.Sidecar) -> None:
    """The upstream takes 3 s; each timeout is told apart from the others by a second or so:
    the target's 400 ms, the header's 1.2 s instead of it, the header's 6 s (the answer
    comes), the filter's 150 ms instead of the header's 2 s."""
    started = time.monotonic()
    assert error(sidecar, "web", "slow").code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.35 < time.monotonic() - started < 2.0, "the target's 400 ms"
    started = time.monotonic()
    late = error(sidecar, "web", "slow", metadata=(("rpc_request_timeout", "1200"),))
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 1.15 < time.monotonic() - started < 2.2, "the header's 1.2 s, not the target's 400 ms"
    started = time.monotonic()
    assert invoke(sidecar, "web", "slow", metadata=(("rpc_request_timeout", "6000"),)).data.value
    assert time.monotonic() - started >= SLOW_SECONDS - 0.05
    started = time.monotonic()
    assert error(sidecar, "web-fast", "slow", metadata=(("rpc_request_timeout", "2000"),)).code() == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert time.monotonic() - started < 1.0, "the timeout filter's 150 ms overrides the header's 2 s"
    bad = error(sidecar, "web", "x", metadata=(("rpc_request_timeout", "soon"),))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "rpc_request_timeout" in (bad.details() or "")


def test_what_a_channel_cannot_carry_is_invalid_argument_naming_the_field(sidecar: sidecar_process.Sidecar) -> None:
    """Before, both were INTERNAL ("UnicodeEncodeError", "ValueError"), naming nothing."""
    request = pb.InvokeServiceRequest(
        id="web", message=pb.CommonInvokeRequest(method="x", content_type="text/plain; unit=\u20ac")
    )
    with pytest.raises(grpc.RpcError) as caught:
        sidecar.stub().InvokeService(request, timeout=10)
    euro = caught.value
    assert euro.code() == grpc.StatusCode.INVALID_ARGUMENT, euro
    assert (euro.details() or "").startswith("message.content_type: "), euro.details()
    long_method = error(sidecar, "echo-bolt", "m" * 40_000)
    assert long_method.code() == grpc.StatusCode.INVALID_ARGUMENT, long_method
    assert "method 'mmm" in (long_method.details() or ""), long_method.details()


def test_rpc_target_address_dials_that_address(sidecar: sidecar_process.Sidecar, http_upstream: str) -> None:
    response = invoke(sidecar, "nowhere", "direct", metadata=(("rpc_target_address", http_upstream),))
    assert json.loads(response.data.value)["path"] == "/direct"


def test_unknown_and_empty_targets(sidecar: sidecar_process.Sidecar) -> None:
    missing = error(sidecar, "no-such-app", "x")
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "web" in (missing.details() or "")
    empty = error(sidecar, "", "x")
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (empty.details() or "").startswith("id: "), f"the details name the field: {empty.details()!r}"


def test_bolt_channel_reaches_the_anthunder_provider(sidecar: sidecar_process.Sidecar) -> None:
    payload = StringValue(value="through the bolt channel").SerializeToString()
    for target in ("echo-bolt", "echo-bolt-direct"):
        response = invoke(sidecar, target, "echo", payload)
        assert StringValue.FromString(response.data.value).value == "through the bolt channel"
    failed = error(sidecar, "echo-bolt", "fail", payload)
    assert failed.code() == grpc.StatusCode.INTERNAL and "0x0003" in (failed.details() or "")
    unknown = error(sidecar, "echo-bolt", "nope", payload)
    assert unknown.code() == grpc.StatusCode.UNIMPLEMENTED, "the provider's NO_PROCESSOR"


def test_dubbo_channel_passes_a_hessian_body_to_the_dubbo_py_provider(sidecar: sidecar_process.Sidecar) -> None:
    # The body an app would send, made with dubbo-py's own Hessian encoder (not ours).
    from dubbo.codec.hessian2 import DubboRequest  # type: ignore[import-untyped]

    request = DubboRequest(0, True, "2.0.2", dubbo_peers.SERVICE, "echo", ["via the dubbo channel"], "1.0", {})
    body = request.encode()[16:]
    response = invoke(sidecar, "echo-dubbo", "echo", body)
    # dubbo-py's answer body: RESPONSE_VALUE (0x91) and the string, in Hessian2.
    assert response.data.value == b"\x91" + bytes([len("via the dubbo channel")]) + b"via the dubbo channel"


def test_dubbo_channel_passes_a_whole_frame_as_layotto_takes_it(sidecar: sidecar_process.Sidecar) -> None:
    """Layotto's dubbo channel takes the whole request frame, header included, and answers
    the response body: the same frame goes out here (its id the mesh's); a frame whose
    length or flag is wrong is INVALID_ARGUMENT naming message.data."""
    from dubbo.codec.hessian2 import DubboRequest

    frame = DubboRequest(7, True, "2.0.2", dubbo_peers.SERVICE, "echo", ["a whole frame"], "1.0", {}).encode()
    response = invoke(sidecar, "echo-dubbo", "echo", frame)
    assert response.data.value == b"\x91" + bytes([len("a whole frame")]) + b"a whole frame"
    cut = error(sidecar, "echo-dubbo", "echo", frame[:-1])
    assert cut.code() == grpc.StatusCode.INVALID_ARGUMENT and "message.data" in (cut.details() or ""), cut
    one_way = frame[:2] + bytes([frame[2] & ~0x40]) + frame[3:]
    refused = error(sidecar, "echo-dubbo", "echo", one_way)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and "no two-way request" in (refused.details() or "")


DUBBO_HESSIAN2, DUBBO_EVENT, DUBBO_TWO_WAY = 0x02, 0x20, 0x40


def dubbo_error_answer(request_id: int, status: int, message: str) -> bytes:
    """A Dubbo response with a non-OK status: its body is the message as a Hessian2 string
    (here a compact one, under 32 bytes), as a provider reports a failure."""
    text = message.encode()
    assert len(text) < 32, "a compact Hessian2 string"
    body = bytes([len(text)]) + text
    return b"\xda\xbb" + bytes([DUBBO_HESSIAN2, status]) + struct.pack(">qi", request_id, len(body)) + body


class DubboStatusServer(socketserver.ThreadingTCPServer):
    """Test double: a Dubbo provider that answers each two-way call with one error status
    (``dubbo_error_answer``); dubbo-py's provider cannot be told to answer a chosen status."""

    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status = status
        self.connections: list[socket.socket] = []
        self.requests: list[bytes] = []  # each two-way request frame, whole
        super().__init__(("127.0.0.1", 0), DubboStatusHandler)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class DubboStatusHandler(socketserver.BaseRequestHandler):
    server: DubboStatusServer
    request: socket.socket

    def handle(self) -> None:
        self.server.connections.append(self.request)
        while len(head := self.request.recv(16, socket.MSG_WAITALL)) == 16:
            length = struct.unpack(">i", head[12:16])[0]
            body = self.request.recv(length, socket.MSG_WAITALL) if length else b""
            if len(body) < length:
                return
            flag, request_id = head[2], struct.unpack(">q", head[4:12])[0]
            if flag & DUBBO_TWO_WAY and not flag & DUBBO_EVENT:
                self.server.requests.append(head + body)
                status = self.server.status
                self.request.sendall(dubbo_error_answer(request_id, status, f"provider says {status}"))


@contextmanager
def dubbo_status_server(status: int) -> Iterator[DubboStatusServer]:
    """A ``DubboStatusServer`` answering ``status``, served on a thread."""
    server = DubboStatusServer(status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        for connection in server.connections:
            connection.close()
        thread.join(5)


@contextmanager
def dubbo_status_provider(status: int) -> Iterator[str]:
    """The address of a ``DubboStatusServer`` answering ``status``."""
    with dubbo_status_server(status) as server:
        yield server.address


# Every status the dubbo channel's table gives a meaning, and one it does not (INTERNAL).
DUBBO_STATUS_CODES = [
    (30, grpc.StatusCode.DEADLINE_EXCEEDED),  # CLIENT_TIMEOUT
    (31, grpc.StatusCode.DEADLINE_EXCEEDED),  # SERVER_TIMEOUT
    (35, grpc.StatusCode.UNAVAILABLE),  # CHANNEL_INACTIVE
    (40, grpc.StatusCode.INVALID_ARGUMENT),  # BAD_REQUEST
    (60, grpc.StatusCode.UNIMPLEMENTED),  # SERVICE_NOT_FOUND
    (70, grpc.StatusCode.UNKNOWN),  # SERVICE_ERROR
    (100, grpc.StatusCode.RESOURCE_EXHAUSTED),  # SERVER_THREADPOOL_EXHAUSTED
    (80, grpc.StatusCode.INTERNAL),  # SERVER_ERROR: no meaning of its own
]


@pytest.mark.parametrize(("status", "code"), DUBBO_STATUS_CODES, ids=[str(s) for s, _ in DUBBO_STATUS_CODES])
def test_a_dubbo_error_status_maps_to_its_grpc_code(
    sidecar: sidecar_process.Sidecar, status: int, code: grpc.StatusCode
) -> None:
    """The provider's status reaches the caller as its gRPC code, with the status and the
    provider's message in the details (through the mesh's cluster for that address)."""
    with dubbo_status_provider(status) as address:
        failed = error(sidecar, "echo-dubbo", "echo", b"", metadata=(("rpc_target_address", address),))
    assert failed.code() == code, failed
    assert failed.details() == (
        f"dubbo service {dubbo_peers.SERVICE!r} method 'echo' answered status {status}: provider says {status}"
    )


@pytest.mark.parametrize("target", ["echo-bolt", "echo-dubbo"])
def test_mesh_channels_map_silence_and_absence_to_grpc_codes(
    sidecar: sidecar_process.Sidecar, providers: tuple[str, str], target: str
) -> None:
    """rpc_target_address over the bolt and dubbo channels: the named address is dialled (the
    real provider answers there), one that accepts and never answers or never completes the
    connect is DEADLINE_EXCEEDED within rpc_request_timeout, one nobody listens on is
    UNAVAILABLE, and one that is no host:port INVALID_ARGUMENT."""
    import socket

    provider = providers[0] if target == "echo-bolt" else providers[1]
    if target == "echo-bolt":
        payload = StringValue(value="redirected").SerializeToString()
        answer = invoke(sidecar, target, "echo", payload, metadata=(("rpc_target_address", provider),))
        assert StringValue.FromString(answer.data.value).value == "redirected"
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never reads or answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        late = error(
            sidecar, target, "echo", b"", metadata=(("rpc_target_address", address), ("rpc_request_timeout", "300"))
        )
        assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED, late
        assert 0.25 < time.monotonic() - started < 2.0
    with socket.create_server(("127.0.0.1", 0), backlog=0) as stuck:
        filler = socket.create_connection(stuck.getsockname())  # fills the accept queue: connects hang
        try:
            address = f"127.0.0.1:{stuck.getsockname()[1]}"
            started = time.monotonic()
            late = error(
                sidecar, target, "echo", b"", metadata=(("rpc_target_address", address), ("rpc_request_timeout", "300"))
            )
            # the connect wait is part of rpc_request_timeout, not 1 s of connect timeout per try
            assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED, late
            assert time.monotonic() - started < 0.9
        finally:
            filler.close()
    closed = f"127.0.0.1:{sidecar_process.free_port()}"
    gone = error(sidecar, target, "echo", b"", metadata=(("rpc_target_address", closed),))
    assert gone.code() == grpc.StatusCode.UNAVAILABLE and closed in (gone.details() or ""), gone
    malformed = error(sidecar, target, "echo", b"", metadata=(("rpc_target_address", "127.0.0.1"),))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT, malformed
    assert malformed.details() == "rpc_target_address: must be host:port, got '127.0.0.1'"


def raw_invoke(sidecar: sidecar_process.Sidecar, target: str, data: bytes, metadata: list[tuple[str, str]]) -> Response:
    """InvokeService sent with h2, whose text metadata may hold any UTF-8 (grpcio's client
    refuses a value past ASCII; grpc-go's older clients and others send one)."""
    request = pb.InvokeServiceRequest(
        id=target, message=pb.CommonInvokeRequest(method="echo", data=any_pb2.Any(value=data))
    )
    with H2Client(sidecar.grpc_port) as client:
        return client.call(request.SerializeToString(), path=INVOKE_PATH, extra_headers=metadata)


def test_header_values_past_ascii_reach_each_channel_as_the_text_sent(sidecar: sidecar_process.Sidecar) -> None:
    """A filter's value and a client's metadata (its UTF-8 bytes) arrive as that text: as
    UTF-8 bytes in an HTTP header, as the string itself in Bolt's header map and in Dubbo's
    attachments (read back here by anthunder-free decoders: Bolt's map by the test's own
    upstream, Dubbo's by dubbo-py)."""
    answer = json.loads(invoke(sidecar, "web-region", "r").data.value)
    # http.server reads header bytes as Latin-1
    assert answer["headers"]["x-region"].encode("latin-1").decode("utf-8") == REGION
    with fault_upstream() as upstream:
        sent = raw_invoke(sidecar, "bolt-region", b"x", [("rpc_target_address", upstream.address), ("x-city", CITY)])
        assert sent.grpc_status == 0, sent.grpc_message
        assert upstream.request_headers[-1]["x-city"] == CITY
        assert upstream.request_headers[-1]["x-region"] == REGION
    from dubbo.codec.hessian2 import Decoder

    with dubbo_status_server(70) as provider:
        metadata = [("rpc_target_address", provider.address), ("x-city", CITY)]
        failed = raw_invoke(sidecar, "dubbo-region", b'["hi"]', metadata)
        assert failed.grpc_status == grpc.StatusCode.UNKNOWN.value[0], failed.grpc_message
        request = Decoder(io.BytesIO(provider.requests[-1])).decode()
        assert request.attachment["x-city"] == CITY and request.attachment["x-region"] == REGION


def test_a_oneway_bolt_call_is_answered_once_sent(sidecar: sidecar_process.Sidecar) -> None:
    """Layotto's ``rpc_request_type: oneway``: the bolt channel sends a oneway frame and the
    call is answered as soon as it is sent (the provider here never answers anything)."""
    with fault_upstream() as upstream:
        upstream.mode = "silent"
        metadata = (("rpc_target_address", upstream.address), ("rpc_request_type", "oneway"))
        started = time.monotonic()
        answer = invoke(sidecar, "echo-bolt", "echo", b"fire", metadata=metadata)
        assert answer.data.value == b"" and time.monotonic() - started < 1.0
        wait_for(lambda: upstream.request_types == [2])
        two_way = error(sidecar, "echo-bolt", "echo", b"", metadata=(metadata[0], ("rpc_request_timeout", "200")))
        assert two_way.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "without the header it waits for an answer"


def test_a_bolt_provider_that_drops_the_call_or_answers_another_id_is_unavailable(
    sidecar: sidecar_process.Sidecar,
) -> None:
    """The issue's upstream faults, through InvokeService: a provider that closes its
    connection on the request, and one that answers an id it was never sent (the mesh closes
    that connection: the answer owed can no longer be told apart), are UNAVAILABLE at once,
    not left to the timeout; the next call over a sound provider goes through."""
    with fault_upstream() as upstream:
        metadata = (("rpc_target_address", upstream.address), ("rpc_request_timeout", "5000"))
        for mode in ("close", "unknown"):
            upstream.mode = mode
            started = time.monotonic()
            failed = error(sidecar, "echo-bolt", "echo", b"x", metadata=metadata)
            assert failed.code() == grpc.StatusCode.UNAVAILABLE, (mode, failed)
            assert time.monotonic() - started < 2.0, mode
        upstream.mode = "echo"
        assert invoke(sidecar, "echo-bolt", "echo", b"again", metadata=metadata).data.value == b"again"
        # on /metrics under the address the calls named: they go through no configured cluster
        _, body = sidecar.http("/metrics")
        series = f'layotto_fast_mesh_direct_requests_total{{address="{upstream.address}",outcome="%s",protocol="bolt"}}'
        lines = body.decode().splitlines()
        assert f"{series % 'answered'} 1.0" in lines and f"{series % 'unavailable'} 2.0" in lines, [
            line for line in lines if "direct_requests" in line
        ]


def test_a_call_its_caller_gave_up_on_leaves_the_cluster(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A gRPC deadline shorter than rpc_request_timeout: the mesh held the call, and its place
    in max_requests, until rpc_request_timeout, so a cluster whose provider hung refused every
    later call RESOURCE_EXHAUSTED meanwhile. It now lets the call go once its caller has."""
    tmp = tmp_path_factory.mktemp("gave-up")
    with fault_upstream() as upstream:
        upstream.mode = "mute"
        cluster = {"name": "tight", "protocol": "bolt", "hosts": [upstream.address],
                   "circuit_breaker": {"max_requests": 2}}  # fmt: skip
        target = {"id": "hung", "channel": "bolt", "cluster": "tight", "service": "com.example.Hung"}
        sidecar = sidecar_process.start_with_config(
            tmp, {"mesh": {"clusters": [cluster]}, "invoke": {"targets": [target]}}
        )
        try:
            stub = sidecar.stub()
            request = pb.InvokeServiceRequest(id="hung", message=pb.CommonInvokeRequest(method="m"))
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as gave_up:
                    stub.InvokeService(request, metadata=(("rpc_request_timeout", "60000"),), timeout=0.2)
                assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.1)
            with pytest.raises(grpc.RpcError) as third:
                stub.InvokeService(request, metadata=(("rpc_request_timeout", "300"),), timeout=5)
            assert third.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, third.value.details()
            _, body = sidecar.http("/metrics")
            assert b'layotto_fast_mesh_cluster_requests_total{cluster="tight",outcome="cancelled"} 2.0' in body
        finally:
            sidecar.stop()
