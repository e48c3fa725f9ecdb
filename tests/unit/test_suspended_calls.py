"""Unary handlers that await, on every transport: what asyncio promises a coroutine under a
Task must hold whatever drives it (the native transport drives them without a Task).

Each case is a way real client libraries await: a timeout scope after the first
suspension (redis-py's own client does that), bare yields, a cancellation that is not
the call's own, an awaitable a Task refuses, and many calls resuming in one pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast._proto import runtime_pb2_grpc
from layotto_fast.api.call import current_call
from tests.faults.raw_h2 import PING, Frames, RawConnection, grpc_frame, grpc_headers
from tests.inprocess import KINDS, InProcessServer


class _BadYield:
    """An awaitable yielding something that is not a future: a Task throws RuntimeError into it."""

    def __await__(self) -> Any:
        yield "not a future"


class Handlers:
    def __init__(self) -> None:
        self.cancelled_at: dict[str, float] = {}  # by key, time.monotonic()
        self.gates: dict[str, asyncio.Future[None]] = {}  # by key: calls waiting to be let go

    async def GetState(self, request: pb.GetStateRequest) -> pb.GetStateResponse:
        if request.key == "cancelled-at-once":  # before the handler's first suspension
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            await cancelled
        if request.key.startswith("gated"):
            if request.key == "gated-backend":
                # Work queued for a backend before the handler waits on it (a pipeline's write).
                asyncio.get_running_loop().call_soon(time.sleep, 0.5)
            gate = self.gates[request.key] = asyncio.get_running_loop().create_future()
            await gate
            return pb.GetStateResponse(data=request.key.encode())
        await asyncio.sleep(0.001)  # suspended from here on
        if request.key.startswith("slow"):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled_at[request.key] = time.monotonic()
                raise
        task = asyncio.current_task()
        if request.key == "timeout-inside":
            # asyncio.timeout cancels its task and takes the cancellation back on exit.
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(10)
            except TimeoutError:
                return pb.GetStateResponse(data=b"timed out inside", etag=str(task is not None))
        if request.key == "bare-yields":
            for _ in range(5):
                await asyncio.sleep(0)
        if request.key == "cancelled-below":
            waiter = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.01, waiter.cancel)
            await waiter
        if request.key == "bad-yield":
            await _BadYield()
        current_call().trailers.append(("x-after", request.key))
        return pb.GetStateResponse(data=request.key.encode(), etag=str(task is not None))


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[InProcessServer]:
    running = InProcessServer(request.param, Handlers())
    yield running
    running.close()


@pytest.fixture
def stub(server: InProcessServer) -> Iterator[runtime_pb2_grpc.RuntimeStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield runtime_pb2_grpc.RuntimeStub(channel)


def test_the_handler_has_a_current_task_after_suspending(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    reply, call = stub.GetState.with_call(pb.GetStateRequest(key="plain"), timeout=5)
    assert (reply.data, reply.etag) == (b"plain", "True")
    assert ("x-after", "plain") in call.trailing_metadata()


def test_a_timeout_scope_inside_the_handler_fires_and_the_call_still_answers(
    stub: runtime_pb2_grpc.RuntimeStub,
) -> None:
    reply = stub.GetState(pb.GetStateRequest(key="timeout-inside"), timeout=5)
    assert (reply.data, reply.etag) == (b"timed out inside", "True")


def test_bare_yields_resume(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    assert stub.GetState(pb.GetStateRequest(key="bare-yields"), timeout=5).data == b"bare-yields"


def test_a_cancellation_below_the_handler_answers_an_error_not_silence(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetState(pb.GetStateRequest(key="cancelled-below"), timeout=5)
    code = raised.value.code()  # type: ignore[attr-defined]
    assert code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN), code
    assert stub.GetState(pb.GetStateRequest(key="after"), timeout=5).data == b"after"


# The cancelled Task is left in a reference cycle with the connection, as the refused yield
# below leaves it: the collector may free it on this thread (see there).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_cancellation_before_the_first_suspension_fails_only_its_call(
    server: InProcessServer, stub: runtime_pb2_grpc.RuntimeStub
) -> None:
    """The native transport runs a handler inline up to its first suspension; a CancelledError
    there escaped the protocol and closed the connection, with every call on it."""
    gated = stub.GetState.future(pb.GetStateRequest(key="gated-neighbour"), timeout=10)
    deadline = time.monotonic() + 5
    while "gated-neighbour" not in server.handlers.gates and time.monotonic() < deadline:
        time.sleep(0.005)
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetState(pb.GetStateRequest(key="cancelled-at-once"), timeout=5)
    code = raised.value.code()  # type: ignore[attr-defined]
    assert code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN), code
    server.loop.call_soon_threadsafe(server.handlers.gates["gated-neighbour"].set_result, None)
    assert gated.result(5).data == b"gated-neighbour"


# The refused yield leaves the Task of the native-task server in a reference cycle that
# the collector may free on this thread, not the server's: PyO3 then reports (it cannot
# raise) that the connection was dropped off its thread. Harmless here, impossible in the
# sidecar, which has one thread.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_awaitable_a_task_refuses_is_an_error_and_the_server_carries_on(
    stub: runtime_pb2_grpc.RuntimeStub,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetState(pb.GetStateRequest(key="bad-yield"), timeout=5)
    assert raised.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)  # type: ignore[attr-defined]
    assert stub.GetState(pb.GetStateRequest(key="after"), timeout=5).data == b"after"


def test_many_calls_resume_in_one_pass(stub: runtime_pb2_grpc.RuntimeStub) -> None:
    futures = [stub.GetState.future(pb.GetStateRequest(key=f"k{i}"), timeout=10) for i in range(300)]
    assert [f.result().data for f in futures] == [f"k{i}".encode() for i in range(300)]


def test_each_deadline_cancels_its_handler_on_time_whatever_the_order(
    server: InProcessServer, stub: runtime_pb2_grpc.RuntimeStub
) -> None:
    # Later calls with earlier deadlines: one sweep timer must be brought forward each time.
    timeouts = {"slow-a": 0.9, "slow-b": 0.6, "slow-c": 0.3}
    started = time.monotonic()
    futures = {key: stub.GetState.future(pb.GetStateRequest(key=key), timeout=t) for key, t in timeouts.items()}
    for future in futures.values():
        assert future.exception(5).code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while len(server.handlers.cancelled_at) < len(timeouts) and time.monotonic() < deadline:
        time.sleep(0.01)
    for key, timeout in timeouts.items():
        took = server.handlers.cancelled_at[key] - started
        assert timeout - 0.05 <= took <= timeout + 0.3, (key, took)
    assert stub.GetState(pb.GetStateRequest(key="after"), timeout=5).data == b"after"


def test_a_lone_call_is_answered_in_the_pass_it_ends_not_after_what_the_pass_queued(
    server: InProcessServer, stub: runtime_pb2_grpc.RuntimeStub
) -> None:
    # The call's store reply and other work (a delivery of the message just published)
    # come in the same pass; the answer must not wait for that work. Here the work is a
    # callback that blocks the loop for a second, queued just after the call's wake-up.
    if server.kind != "native":
        pytest.skip("same-pass answers are the native transport's inline design")
    future = stub.GetState.future(pb.GetStateRequest(key="gated-lone"), timeout=10)
    deadline = time.monotonic() + 5
    while "gated-lone" not in server.handlers.gates and time.monotonic() < deadline:
        time.sleep(0.005)
    gate = server.handlers.gates["gated-lone"]

    def let_go() -> None:
        gate.set_result(None)
        asyncio.get_running_loop().call_soon(time.sleep, 1.0)

    let_go_at = time.monotonic()
    server.loop.call_soon_threadsafe(let_go)
    assert future.result(5).data == b"gated-lone"
    assert time.monotonic() - let_go_at < 0.7


def test_what_a_suspended_handler_queued_leaves_before_the_connections_own_output(
    server: InProcessServer,
) -> None:
    # grpc-go sends a PING with its calls: its ACK, written at once, cost a publish a system
    # call that woke the client before the XADD the handler had just queued was written.
    # Here the queued work blocks the loop for 0.5 s: the ACK must come after it.
    if server.kind != "native":
        pytest.skip("the native transport's own write order")
    connection = RawConnection(server.port)
    connection.read(lambda frame: frame.type == 0x4 and "ACK" not in frame.flags)  # the server's SETTINGS
    request = pb.GetStateRequest(key="gated-backend").SerializeToString()
    frames = connection.frames
    sent_at = time.monotonic()
    connection.send(
        frames.headers(1, grpc_headers("/spec.proto.runtime.v1.Runtime/GetState"))
        + frames.data(1, grpc_frame(request), end_stream=True)
        + Frames.ping(b"backend1")
    )
    acked = connection.read(lambda frame: frame.type == PING and "ACK" in frame.flags)
    assert acked and acked[-1].type == PING, acked
    assert time.monotonic() - sent_at >= 0.4
    server.loop.call_soon_threadsafe(server.handlers.gates["gated-backend"].set_result, None)
    answered = connection.read(lambda frame: 1 in connection.ended)
    assert any(frame.type == 0x0 and frame.stream_id == 1 for frame in answered)
