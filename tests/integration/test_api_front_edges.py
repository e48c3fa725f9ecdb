"""The API front, on both transports: an upstream's answer headers come back as response
metadata; request metadata a grpcio client could not send reaches the handler as on the
native transport; a streaming subscriber's stray answers do not end its stream."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.api.call import current_call
from tests import sidecar as sc
from tests.faults.raw_h2 import H2Client, grpc_frame, say_hello
from tests.http_upstream import serving
from tests.inprocess import InProcessServer
from tests.pubsub.app import RETRY, SUCCESS
from tests.topic_events import TopicEventStream, subscription

TRANSPORTS = ["native", "grpcio"]
PUBSUB = "pub_subs_demo"  # the embedded in-memory component

# What the upstream answers beyond its body: what may come back, and what may not.
RETURNED = [("X-Custom", "Hello There"), ("x-trace_id.2", "a-1")]
NOT_RETURNED = [
    ("Keep-Alive", "timeout=5"),
    ("Upgrade", "h2c"),
    ("Te", "trailers"),
    ("Host", "upstream.example"),
    ("Proxy-Connection", "close"),
    ("Grpc-Status", "5"),
    ("Grpc-Message", "not from the upstream"),
    ("X-Latin", "caf\u00e9"),  # sent as latin-1: no gRPC text value carries it
    ("X-Weird!", "v"),  # a token in HTTP/1, not a gRPC metadata key
    ("X-Data-Bin", "not base64"),
]


class Upstream(BaseHTTPRequestHandler):
    """Answers every request with a body and the headers above."""

    def do_GET(self) -> None:  # InvokeService's verb when the call names none
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = b"answered"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        for name, value in [*RETURNED, *NOT_RETURNED]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_upstream() -> Iterator[str]:
    with serving(Upstream) as address:
        yield address


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invoke_service_returns_the_upstream_s_headers_as_response_metadata(
    tmp_path: Path, http_upstream: str, transport: str
) -> None:
    """As Layotto's grpc.SetHeader: lower-cased, in the initial metadata; the headers no gRPC
    answer can carry (connection ones, the transport's, gRPC's, non-ASCII) are left out,
    and the call still succeeds."""
    config = {"invoke": {"targets": [{"id": "web", "channel": "http", "address": http_upstream}]}}
    sidecar = sc.start_with_config(tmp_path, config, "--grpc-transport", transport)
    try:
        request = pb.InvokeServiceRequest(
            id="web",
            message=pb.CommonInvokeRequest(method="m", data=any_pb2.Any(value=b"x"), content_type="text/plain"),
        )
        response, call = sidecar.stub().InvokeService.with_call(request, timeout=10)
        assert response.data.value == b"answered" and response.content_type == "text/plain"
        headers = dict(call.initial_metadata())
        for name, value in RETURNED:
            assert headers.get(name.lower()) == value, headers
        for name, _ in NOT_RETURNED:
            assert name.lower() not in headers, headers
        assert "content-length" not in headers, headers
    finally:
        sidecar.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_long_status_message_is_cut_on_either_transport(tmp_path: Path, transport: str) -> None:
    """A provider's error may carry a whole Java stack trace (Dubbo's status 70 does): cut to
    1 KiB, saying how long it was, on grpcio as on the native front, whose trailers grpc-java
    and grpc-core refuse past 8 KiB."""
    sidecar = sc.start(tmp_path, "--grpc-transport", transport)
    try:
        key = "é" * 10_000 + "||x"
        with pytest.raises(grpc.RpcError) as raised:
            sidecar.stub().SaveState(
                pb.SaveStateRequest(store_name="in-memory", states=[pb.StateItem(key=key, value=b"v")]), timeout=10
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
        details = raised.value.details() or ""
        assert len(details.encode()) < 1200 and "bytes in all)" in details, details[-200:]
    finally:
        sidecar.stop()


# -- request metadata a grpcio client could not send -------------------------------------------------------
class Recorder:
    """Keeps the request metadata each call's handler saw."""

    def __init__(self) -> None:
        self.seen: queue.Queue[list[tuple[str, bytes]]] = queue.Queue()

    async def SayHello(self, request: pb.SayHelloRequest) -> pb.SayHelloResponse:
        self.seen.put(list(current_call().raw_metadata or ()))
        return pb.SayHelloResponse(hello=f"hi {request.name}")

    async def GetState(self, request: pb.GetStateRequest) -> pb.GetStateResponse:
        self.seen.put(list(current_call().raw_metadata or ()))
        return pb.GetStateResponse(data=request.key.encode())


CALLS = [
    ("SayHello", say_hello("x")),
    ("GetState", pb.GetStateRequest(store_name="s", key="k").SerializeToString()),  # suspends on native
]


def _metadata_seen(kind: str, sent: list[tuple[str, str]]) -> dict[str, list[tuple[str, bytes]]]:
    """What the handler of each rpc saw of the metadata ``sent`` by a raw HTTP/2 client (as
    UTF-8); each call answered and counted OK."""
    recorder = Recorder()
    server = InProcessServer(kind, recorder)
    seen: dict[str, list[tuple[str, bytes]]] = {}
    try:
        with H2Client(server.port) as client:
            for rpc, message in CALLS:
                path = f"/spec.proto.runtime.v1.Runtime/{rpc}"
                response = client.call(None, path=path, extra_headers=sent, body=grpc_frame(message))
                assert response.grpc_status == 0, (kind, rpc, response)
                seen[rpc] = [pair for pair in recorder.seen.get(timeout=5) if pair[0].startswith("x-")]
                stats = server.stats.method(rpc)
                assert (stats.ok, stats.failures) == (1, {}), (kind, rpc)
    finally:
        server.close()
    return seen


@pytest.mark.parametrize("value", ["\u4e2d", "caf\u00e9"], ids=["not-latin-1", "latin-1"])
def test_request_metadata_reaches_the_handler_as_wire_bytes_on_both_transports(value: str) -> None:
    """grpcio hands the handler the wire's bytes, as the native transport does: a value no
    latin-1 can encode is served (and counted) OK, and one it can reads the same on both."""
    sent = [("x-name", value), ("x-plain", "p")]
    wire = [(name, text.encode("utf-8")) for name, text in sent]
    native, grpcio = _metadata_seen("native", sent), _metadata_seen("grpcio", sent)
    assert native == {rpc: wire for rpc, _ in CALLS}
    assert grpcio == native


def test_binary_metadata_reaches_the_handler_decoded_on_both_transports() -> None:
    """A ``-bin`` value is base64 on the wire, padded or not; grpcio hands the handler the
    bytes, and so does the native transport."""
    sent = [("x-trace-bin", "AP8Q"), ("x-tags-bin", "AQ=="), ("x-tags-bin", "Ag")]
    wire = [("x-trace-bin", b"\x00\xff\x10"), ("x-tags-bin", b"\x01"), ("x-tags-bin", b"\x02")]
    native, grpcio = _metadata_seen("native", sent), _metadata_seen("grpcio", sent)
    assert native == {rpc: wire for rpc, _ in CALLS}
    assert grpcio == native


@pytest.mark.parametrize("value", ["not base64!", "AQ==,Ag=="], ids=["not-base64", "comma-joined"])
def test_binary_metadata_that_is_not_base64_fails_the_call_naming_the_header(value: str) -> None:
    """INVALID_ARGUMENT naming the header (grpc-go and grpc core answer INTERNAL), and the
    connection serves on."""
    server = InProcessServer("native", Recorder())
    try:
        with H2Client(server.port) as client:
            response = client.call(
                None,
                path="/spec.proto.runtime.v1.Runtime/SayHello",
                extra_headers=[("x-trace-bin", value)],
                body=grpc_frame(say_hello("x")),
            )
            assert response.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0], response
            assert "x-trace-bin" in response.grpc_message and "base64" in response.grpc_message
            ok = client.call(None, path="/spec.proto.runtime.v1.Runtime/SayHello", body=grpc_frame(say_hello("y")))
            assert ok.grpc_status == 0, ok
    finally:
        server.close()


# -- SubscribeTopicEvents: stray answers ----------------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_answers_for_no_awaited_event_are_ignored_and_an_unknown_status_is_retried(
    tmp_path: Path, transport: str
) -> None:
    """As Layotto: an answer naming an id no delivery awaits (empty, unknown, answered
    already) is logged and ignored, and a status the enum lacks is a RETRY; the stream
    goes on either way. A first request that is not a subscription is still refused."""
    sidecar = sc.start(tmp_path, "--app-port", "0", "--grpc-transport", transport)
    topic = f"t-{uuid.uuid4().hex[:8]}"
    stub = sidecar.stub()
    try:
        retries = {"retryAttempts": "3", "retryInitialInterval": "10ms"}
        stream = TopicEventStream.subscribed(sidecar, subscription(PUBSUB, topic, metadata=retries))
        first = stub.PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"1"))
        event = stream.next()
        assert event.id == first.message_id
        stream.answer("", SUCCESS)  # no id
        stream.answer("no-such-event", SUCCESS)
        stream.answer(event.id, 7)  # not SUCCESS, RETRY or DROP: delivered again
        again = stream.next()
        assert (again.id, again.data) == (first.message_id, b"1")
        stream.answer(again.id, SUCCESS)
        stream.answer(again.id, RETRY)  # answered twice: the second answer awaits nothing

        second = stub.PublishEvent(pb.PublishEventRequest(pubsub_name=PUBSUB, topic=topic, data=b"2"))
        event = stream.next()
        assert (event.id, event.data) == (second.message_id, b"2"), "the first event came a third time"
        stream.answer(event.id, SUCCESS)
        stream.close()

        not_initial = TopicEventStream(
            sidecar,
            pb.SubscribeTopicEventsRequest(event_processed=pb.SubscribeTopicEventsRequestProcessed(id="x")),
        )
        error = not_initial.received.get(timeout=10)
        not_initial.close()
        assert isinstance(error, grpc.RpcError), error
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.details().startswith("initial_request"), error.details()
    finally:
        sidecar.stop()
