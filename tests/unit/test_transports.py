"""Both gRPC transports, in-process, on every rpc shape: the same handler object behind each.

Handlers here are written for the test (Runtime's file rpcs give the streaming
shapes); what is checked is the transport: messages, status codes, metadata both
ways, deadlines, cancellation reaching the handler, backpressure bookkeeping.
"""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast._proto import runtime_pb2_grpc
from layotto_fast.api.call import current_call
from layotto_fast.errors import InvalidArgument, NotFound
from tests.faults import raw_h2
from tests.inprocess import KINDS, InProcessServer


class Handlers:
    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.hold_reads: threading.Event | None = None  # PutFile waits on it before reading

    async def SayHello(self, request: pb.SayHelloRequest) -> pb.SayHelloResponse:
        # Completes without suspending: the native transport answers it in the same pass.
        call = current_call()
        if request.name == "bad":
            call.trailers.append(("why", "bad name"))
            raise InvalidArgument("name is 'bad'")
        if request.name.startswith("bad-metadata"):
            call.trailers.append(("x-after", "a\nb"))  # a line break: no header value can carry it
            if request.name == "bad-metadata-and-error":
                raise InvalidArgument("name is bad too")
        call.headers.append(("x-served-by", "test"))
        call.trailers.append(("x-echo", str(call.metadata.get("x-request", ""))))
        if request.name == "wrong-type":
            return "not a message"  # type: ignore[return-value]  # the transport cannot encode it
        return pb.SayHelloResponse(hello=f"hi {request.name}")

    async def GetState(self, request: pb.GetStateRequest) -> pb.GetStateResponse:
        # Suspends: the call moves to a Task.
        if request.key == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        await asyncio.sleep(0.5 if request.key == "half-second" else 0.001)
        if request.key == "bad-metadata":
            current_call().trailers.append(("x-after", "a\nb"))
        if request.key == "missing":
            raise NotFound("key 'missing' not found")
        return pb.GetStateResponse(data=request.key.encode(), etag=str(current_call().metadata.get("x-request", "")))

    def DeleteState(self, request: pb.DeleteStateRequest) -> Awaitable[empty_pb2.Empty]:
        # A plain function handing back an awaitable, as Runtime's GetState and SaveState
        # are: it may refuse its request before there is anything to await.
        if not request.key:
            raise InvalidArgument("key is empty")
        return self._deleted()

    async def _deleted(self) -> empty_pb2.Empty:
        await asyncio.sleep(0)
        return empty_pb2.Empty()

    async def GetFile(self, request: pb.GetFileRequest) -> AsyncIterator[pb.GetFileResponse]:
        current_call().headers.append(("x-file", request.name))
        for index in range(int(request.metadata.get("chunks", "3"))):
            yield pb.GetFileResponse(data=f"{request.name}:{index}".encode() * 1000)
            await asyncio.sleep(0)

    async def PutFile(self, requests: AsyncIterator[pb.PutFileRequest]) -> empty_pb2.Empty:
        total = 0
        if self.hold_reads is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.hold_reads.wait)
        async for request in requests:
            total += len(request.data)
        current_call().trailers.append(("x-total", str(total)))
        return empty_pb2.Empty()

    async def SubscribeConfiguration(
        self, requests: AsyncIterator[pb.SubscribeConfigurationRequest]
    ) -> AsyncIterator[pb.SubscribeConfigurationResponse]:
        async for request in requests:
            yield pb.SubscribeConfigurationResponse(store_name=request.store_name, app_id=f"echo:{len(request.keys)}")


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[InProcessServer]:
    running = InProcessServer(request.param, Handlers())
    yield running
    running.close()


@pytest.fixture
def stub(server: InProcessServer) -> Iterator[runtime_pb2_grpc.RuntimeStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield runtime_pb2_grpc.RuntimeStub(channel)


def test_unary_with_metadata_both_ways(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    reply, call = stub.SayHello.with_call(pb.SayHelloRequest(name="x"), metadata=[("x-request", "r1")])
    assert reply.hello == "hi x"
    assert ("x-served-by", "test") in call.initial_metadata()
    assert ("x-echo", "r1") in call.trailing_metadata()


def test_metadata_of_one_call_never_reaches_the_next(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    # Without request metadata the handler's current_call() is made on demand while it
    # runs; a second call must start from an empty one, not inherit the first's.
    for _ in range(3):
        _, call = stub.SayHello.with_call(pb.SayHelloRequest(name="x"))
        assert [pair for pair in call.initial_metadata() if pair[0] == "x-served-by"] == [("x-served-by", "test")]
        assert [pair for pair in call.trailing_metadata() if pair[0] == "x-echo"] == [("x-echo", "")]


def test_a_response_that_cannot_be_encoded_is_internal(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.SayHello(pb.SayHelloRequest(name="wrong-type"))
    # grpc.aio reports its serializer's failure as UNKNOWN; the native transport says INTERNAL.
    assert raised.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)  # type: ignore[attr-defined]
    assert stub.SayHello(pb.SayHelloRequest(name="after")).hello == "hi after"


def test_error_status_with_trailers(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.SayHello(pb.SayHelloRequest(name="bad"))
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details() == "name is 'bad'"
    assert ("why", "bad name") in error.trailing_metadata()


def test_a_handler_that_refuses_before_returning_an_awaitable(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.DeleteState(pb.DeleteStateRequest(store_name="s"))
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details() == "key is empty"
    assert stub.DeleteState(pb.DeleteStateRequest(store_name="s", key="k")) == empty_pb2.Empty()


def test_suspending_handler_and_not_found(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    reply = stub.GetState(pb.GetStateRequest(key="k"), metadata=[("x-request", "through-a-task")])
    assert reply.data == b"k" and reply.etag == "through-a-task"
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetState(pb.GetStateRequest(key="missing"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_many_concurrent_calls(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    futures = [stub.GetState.future(pb.GetStateRequest(key=f"k{i}")) for i in range(200)]
    assert [f.result().data for f in futures] == [f"k{i}".encode() for i in range(200)]


def test_server_streaming(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    call = stub.GetFile(pb.GetFileRequest(name="f", metadata={"chunks": "50"}))
    chunks = [r.data for r in call]
    assert chunks == [f"f:{i}".encode() * 1000 for i in range(50)]
    assert ("x-file", "f") in call.initial_metadata()


def test_client_streaming(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    requests = (pb.PutFileRequest(data=b"x" * 10_000) for _ in range(100))
    _, call = stub.PutFile.with_call(requests)
    assert ("x-total", "1000000") in call.trailing_metadata()


def _data_for(message_bytes: int) -> int:
    """The data length whose PutFileRequest is exactly ``message_bytes`` long."""
    size = message_bytes
    while len(pb.PutFileRequest(data=b"x" * size).SerializeToString()) > message_bytes:
        size -= 1
    assert len(pb.PutFileRequest(data=b"x" * size).SerializeToString()) == message_bytes
    return size


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("message_bytes", [3 * 1024 * 1024, 4 * 1024 * 1024], ids=["3MiB", "at-the-limit"])
def test_a_streamed_message_larger_than_the_window(kind: str, message_bytes: int) -> None:
    """One client-streamed message bigger than a stream's flow-control window (1 MiB), up to
    the message limit (4 MiB, the defaults), arrives whole: neither the window nor the bound on
    unconsumed bytes is held shut by the bytes of a message the handler cannot have yet."""
    size = _data_for(message_bytes)
    running = InProcessServer(kind, Handlers(), max_message_bytes=4 * 1024 * 1024)
    try:
        with grpc.insecure_channel(running.target, options=[("grpc.max_send_message_length", -1)]) as channel:
            requests = iter([pb.PutFileRequest(data=b"x" * size), pb.PutFileRequest(data=b"y" * 10)])
            _, call = runtime_pb2_grpc.RuntimeStub(channel).PutFile.with_call(requests, timeout=10)
        assert ("x-total", str(size + 10)) in call.trailing_metadata()
    finally:
        running.close()


def test_a_streamed_message_at_the_limit_sent_in_full_frames() -> None:
    """A 4 MiB message (the limit) in 16 KiB DATA frames: after 256 frames the front had read
    4 MiB, its bound on bytes the handler has not consumed, with the message's last 5 bytes
    still to come; reading stopped, nothing was handed over, and the call hung."""
    from tests.faults.raw_h2 import H2Client, grpc_frame

    size = _data_for(4 * 1024 * 1024)
    running = InProcessServer("native", Handlers(), max_message_bytes=4 * 1024 * 1024)
    try:
        with H2Client(running.port, timeout=10) as client:
            deadline = time.monotonic() + 10
            stream_id = client.start(None, path="/spec.proto.runtime.v1.Runtime/PutFile", end_stream=False)
            # The server's SETTINGS and window first: then every frame is a full 16 KiB one.
            while client.conn.local_flow_control_window(stream_id) < 1024 * 1024:
                assert client.receive(1.0) or time.monotonic() < deadline
            payload = memoryview(grpc_frame(pb.PutFileRequest(data=b"x" * size).SerializeToString()))
            while payload:
                room = min(client.conn.local_flow_control_window(stream_id), 16_384, len(payload))
                if room == 0:
                    assert time.monotonic() < deadline, f"{len(payload)} bytes left unsent: no window"
                    client.receive(0.1)
                    continue
                client.conn.send_data(stream_id, bytes(payload[:room]))
                client.flush()
                payload = payload[room:]
            client.conn.end_stream(stream_id)
            client.flush()
            client.wait([stream_id])
            response = client.responses[stream_id]
            assert response.grpc_status == 0 and response.trailers.get("x-total") == str(size)
    finally:
        running.close()


def test_bidirectional_streaming(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    requests = [pb.SubscribeConfigurationRequest(store_name=f"s{i}", keys=["a"] * i) for i in range(20)]
    replies = list(stub.SubscribeConfiguration(iter(requests)))
    assert [(r.store_name, r.app_id) for r in replies] == [(f"s{i}", f"echo:{i}") for i in range(20)]


def test_deadline_exceeded_cancels_the_handler(server: InProcessServer, stub: runtime_pb2_grpc.RuntimeStub) -> None:
    server.handlers.cancelled.clear()
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetState(pb.GetStateRequest(key="slow"), timeout=0.2)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert server.handlers.cancelled.wait(5)


def test_client_cancel_reaches_the_handler(server: InProcessServer, stub: runtime_pb2_grpc.RuntimeStub) -> None:
    server.handlers.cancelled.clear()
    future = stub.GetState.future(pb.GetStateRequest(key="slow"))
    threading.Event().wait(0.2)
    future.cancel()
    assert server.handlers.cancelled.wait(5)
    assert stub.GetState(pb.GetStateRequest(key="after")).data == b"after"


def test_message_over_the_limit(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetState(pb.GetStateRequest(key="x" * 100_000))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert stub.GetState(pb.GetStateRequest(key="ok")).data == b"ok"


def test_unknown_method_is_unimplemented(server: InProcessServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary("/spec.proto.runtime.v1.Runtime/NoSuchRpc")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"")
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_native_in_flight_limit_answers_resource_exhausted() -> None:
    running = InProcessServer("native", Handlers(), max_in_flight=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            slow = [stub.GetState.future(pb.GetStateRequest(key="slow"), timeout=3) for _ in range(5)]
            codes = sorted(str(f.exception().code()) for f in slow)  # type: ignore[union-attr]
            assert codes.count("StatusCode.RESOURCE_EXHAUSTED") == 3, codes
            assert codes.count("StatusCode.DEADLINE_EXCEEDED") == 2, codes
            # Calls that never suspend do not count against the limit.
            assert stub.SayHello(pb.SayHelloRequest(name="x")).hello == "hi x"
    finally:
        running.close()


def test_native_keepalive_drops_a_peer_that_never_answers_pings() -> None:
    import socket
    import time

    running = InProcessServer("native", Handlers(), keepalive_seconds=0.2)
    try:
        with socket.create_connection(("127.0.0.1", running.port)) as silent:
            # Preface and an empty SETTINGS, then nothing: no SETTINGS ack, no PING ack.
            silent.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            silent.settimeout(5)
            started = time.monotonic()
            while silent.recv(65536):
                pass  # SETTINGS, then PINGs, until the server gives up
            assert time.monotonic() - started < 3
        # A client that answers PINGs keeps its connection across several intervals.
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            assert stub.SayHello(pb.SayHelloRequest(name="a")).hello == "hi a"
            time.sleep(1.0)
            assert stub.SayHello(pb.SayHelloRequest(name="b")).hello == "hi b"
    finally:
        running.close()


@pytest.mark.parametrize("kind", ["native", "grpcio"])
def test_graceful_stop_lets_calls_in_flight_finish(kind: str) -> None:
    running = InProcessServer(kind, Handlers())
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)
        assert stub.SayHello(pb.SayHelloRequest(name="warm")).hello == "hi warm"
        in_flight = stub.GetState.future(pb.GetStateRequest(key="half-second"))
        threading.Event().wait(0.1)
        running.close()  # returns once the server has stopped
        assert in_flight.result(timeout=5).data == b"half-second"
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel, pytest.raises(grpc.RpcError) as raised:
        runtime_pb2_grpc.RuntimeStub(channel).SayHello(pb.SayHelloRequest(name="late"), timeout=2)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_metadata_a_handler_cannot_send_fails_its_call_not_the_connection() -> None:
    running = InProcessServer("native", Handlers())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            calls = [
                lambda: stub.SayHello(pb.SayHelloRequest(name="bad-metadata"), timeout=5),  # answered at once
                lambda: stub.GetState(pb.GetStateRequest(key="bad-metadata"), timeout=5),  # after suspending
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as raised:
                    call()
                assert raised.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
                assert "response metadata" in raised.value.details()  # type: ignore[attr-defined]
            with pytest.raises(grpc.RpcError) as raised:
                stub.SayHello(pb.SayHelloRequest(name="bad-metadata-and-error"), timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert "trailers not sent" in raised.value.details()  # type: ignore[attr-defined]
            assert stub.SayHello(pb.SayHelloRequest(name="after"), timeout=5).hello == "hi after"
    finally:
        running.close()


def test_graceful_stop_waits_for_an_answer_held_back_by_flow_control() -> None:
    """The answer is handed over, but the client's window holds its bytes back when the
    server stops: they still go out once the client opens its window, within the grace."""
    from hyperframe.frame import DataFrame, HeadersFrame

    from tests.faults.raw_h2 import RawConnection, grpc_messages

    running = InProcessServer("native", Handlers())
    name = "n" * 10_000  # one DATA frame each way (16 KiB frames)
    with RawConnection(running.port, settings={"initial_window_size": 0}) as raw:
        raw.send(raw.frames.grpc_request(1, pb.SayHelloRequest(name=name).SerializeToString()))
        assert raw.wait_for(lambda f: isinstance(f, HeadersFrame))  # the data waits for the window
        stopping = threading.Thread(target=running.close)
        stopping.start()
        time.sleep(0.3)
        raw.send(raw.frames.window_update(1, 65_535))
        assert raw.wait_ended([1])
        stopping.join(5)
        body = b"".join(f.data for f in raw.received if isinstance(f, DataFrame) and f.stream_id == 1)
    assert raw.grpc_status(1) == 0
    assert pb.SayHelloResponse.FromString(grpc_messages(body)[0]).hello == f"hi {name}"


class HeldUpload:
    """A PutFile of a thousand ``chunk`` messages on a thread, to a handler that reads nothing
    until ``release``; ``sent`` counts the bytes the client has handed to its channel."""

    def __init__(self, server: InProcessServer, chunk: bytes, compression: grpc.Compression | None = None) -> None:
        self.server, self.chunk, self.compression = server, chunk, compression
        self.sent = 0
        self.trailers: Any = None
        server.handlers.hold_reads = threading.Event()
        self._thread = threading.Thread(target=self._upload, daemon=True)
        self._thread.start()

    def _requests(self) -> Iterator[pb.PutFileRequest]:
        for _ in range(1000):
            self.sent += len(self.chunk)
            yield pb.PutFileRequest(data=self.chunk)

    def _upload(self) -> None:
        target = f"127.0.0.1:{self.server.port}"
        with grpc.insecure_channel(target, compression=self.compression) as channel:
            _, call = runtime_pb2_grpc.RuntimeStub(channel).PutFile.with_call(self._requests(), timeout=60)
            self.trailers = call.trailing_metadata()

    def uploading(self) -> bool:
        return self._thread.is_alive()

    def release(self) -> None:
        """Let the handler read; then every byte must have reached it."""
        assert self.server.handlers.hold_reads is not None
        self.server.handlers.hold_reads.set()
        self._thread.join(60)
        self.server.handlers.hold_reads = None
        assert ("x-total", str(1000 * len(self.chunk))) in self.trailers


def test_slow_consumer_pushes_back_through_flow_control(server: InProcessServer) -> None:
    """A handler that does not read makes the client's sends stall; nothing is buffered without bound."""
    upload = HeldUpload(server, b"x" * 60_000)  # under the 64 KiB message limit of these servers: 60 MB in all
    try:
        threading.Event().wait(1.5)
        stalled_at = upload.sent
        assert upload.uploading()
        assert stalled_at < 16 * 1024 * 1024, f"{stalled_at} bytes accepted while the handler read nothing"
        threading.Event().wait(0.5)
        assert upload.sent == stalled_at, "the client kept sending while the handler read nothing"
    finally:
        upload.release()


def test_gzip_messages_count_as_they_decompress_when_the_handler_does_not_read(server: InProcessServer) -> None:
    """Reading pauses at a bound of bytes the handler has not consumed; counted on the wire, a
    stream of gzip messages of zeros queued a thousand times that for the handler."""
    if server.kind == "grpcio":
        pytest.skip("grpc-core reads a message off the wire only when the handler asks for it")
    # The messages handed over wait as bytes objects, which tracemalloc counts; the client's
    # sends do not show it: a window holds all thousand of these messages gzipped.
    tracemalloc.start()
    upload = HeldUpload(server, bytes(60_000), grpc.Compression.Gzip)  # about 100 bytes gzipped: 60 MB unzipped
    try:
        threading.Event().wait(1.5)
        assert upload.uploading() and upload.sent == 1000 * len(upload.chunk)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 16 * 1024 * 1024, f"{peak} bytes held while the handler read nothing"
    finally:
        tracemalloc.stop()
        upload.release()


def test_small_messages_a_handler_does_not_read_push_back_without_closing_the_connection(
    server: InProcessServer,
) -> None:
    """One DATA frame per small message, as grpc-go and grpc-java send them: left unread in h2,
    each spent its budget for small frames, and a window of them closed the whole connection
    (GOAWAY ENHANCE_YOUR_CALM) where the client should only have waited for window."""
    if server.kind == "grpcio":
        pytest.skip("h2's small-frame budget is the native front's: grpc-core reads these a message at a time")
    server.handlers.hold_reads = threading.Event()
    message = raw_h2.grpc_frame(pb.PutFileRequest(data=b"x" * 10).SerializeToString())
    sent = 0
    try:
        # the last message's window comes once the handler has read the thousands before it
        with raw_h2.H2Client(server.port, timeout=30) as client:
            stream_id = client.start(None, path="/spec.proto.runtime.v1.Runtime/PutFile", end_stream=False)
            deadline = time.monotonic() + 20  # a window of 26-byte frames from Python
            while time.monotonic() < deadline and client.terminated is None and not client.closed:
                if client.conn.local_flow_control_window(stream_id) < len(message):
                    client.receive(0.2)  # window updates, if any come
                    if client.conn.local_flow_control_window(stream_id) < len(message):
                        break  # pushed back
                    continue
                client.conn.send_data(stream_id, message)
                client.flush()
                sent += 1
                if sent % 500 == 0:
                    client.receive(0)
            client.receive(0.3)
            assert client.terminated is None and not client.closed, client.terminated
            assert time.monotonic() < deadline, f"{sent} messages and the client was never pushed back"
            server.handlers.hold_reads.set()
            assert client.send_body(stream_id, message, end_stream=True)
            client.wait([stream_id], timeout=60)
            response = client.responses[stream_id]
            assert response.grpc_status == 0, response.grpc_message
            assert response.trailers.get("x-total") == str(10 * (sent + 1))
    finally:
        server.handlers.hold_reads.set()
        server.handlers.hold_reads = None


def test_a_malformed_request_is_invalid_argument_on_every_transport(server: InProcessServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        raw = channel.unary_unary("/spec.proto.runtime.v1.Runtime/SayHello")
        with pytest.raises(grpc.RpcError) as raised:
            raw(b"\xff\xff\xff")
        error: Any = raised.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert "not a valid SayHello message" in error.details()
        stream = channel.unary_stream("/spec.proto.runtime.v1.Runtime/GetFile")
        with pytest.raises(grpc.RpcError) as raised:
            list(stream(b"\x0a\x05"))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
