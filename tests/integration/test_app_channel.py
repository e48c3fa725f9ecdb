"""The sidecar's client of the app's AppCallback server (``GrpcAppChannel``: the loop's socket,
the native HTTP/2 connection) against a real grpcio server in this process."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Coroutine
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import uvloop

from layotto_fast._proto import appcallback_pb2_grpc
from layotto_fast.api.app_callback import GrpcAppChannel
from layotto_fast.errors import Unavailable
from layotto_fast.runtime.cloudevents import Event
from layotto_fast.runtime.pubsub import SubscriberGone, Verdict
from tests.procfs import sockets_to
from tests.pubsub.app import DROP, RETRY, SUCCESS, CallbackApp, Topic


def event(number: int) -> Event:
    return Event(
        id=f"e{number}",
        source="test",
        type="com.example",
        spec_version="1.0",
        data_content_type="text/plain",
        data=b"payload %d" % number,
        topic="orders",
        pubsub_name="ps",
        extensions={"traceparent": "00-abc-def-01"} if number == 0 else {},
    )


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_many_deliveries_at_once_each_get_their_own_verdict() -> None:
    answers = {0: SUCCESS, 1: RETRY, 2: DROP}
    with CallbackApp([Topic("ps", "orders")], verdict=lambda e: answers.get(int(e.id[1:]) % 3, SUCCESS)) as app:
        channel = GrpcAppChannel("127.0.0.1", app.port)

        async def scenario() -> list[Verdict]:
            try:
                return list(await asyncio.gather(*(channel.deliver(event(i), 5.0) for i in range(60))))
            finally:
                await channel.close()

        verdicts = run(scenario())
        assert verdicts == [[Verdict.SUCCESS, Verdict.RETRY, Verdict.DROP][i % 3] for i in range(60)]
        first = next(e for e in app.received() if e.id == "e0")
        assert (first.data, first.metadata["traceparent"], first.pubsub_name) == (b"payload 0", "00-abc-def-01", "ps")
        assert len(app.received()) == 60


def deliver_one(host: str, port: int) -> Verdict:
    """The verdict of the app at ``host``:``port`` on one event, through a channel of its own."""
    channel = GrpcAppChannel(host, port)

    async def scenario() -> Verdict:
        try:
            return await channel.deliver(event(1), 5.0)
        finally:
            await channel.close()

    return run(scenario())  # type: ignore[no-any-return]


class ListingOnly(CallbackApp):
    """An app that lists its topics but has no OnTopicEvent: grpcio answers UNIMPLEMENTED."""

    OnTopicEvent = appcallback_pb2_grpc.AppCallbackServicer.OnTopicEvent  # type: ignore[assignment]


def test_an_app_without_on_topic_event_gets_its_events_dropped_not_retried() -> None:
    """As Layotto and Dapr: UNIMPLEMENTED is DROP, or every event would come back forever."""
    with ListingOnly([Topic("ps", "orders")]) as app:
        assert deliver_one("127.0.0.1", app.port) == Verdict.DROP


def test_an_app_on_an_ipv6_address() -> None:
    """The authority was '::1:<port>', which the HTTP/2 client refused: every call failed."""
    with CallbackApp([Topic("ps", "orders")], host="::1") as app:
        assert deliver_one("::1", app.port) == Verdict.SUCCESS
        assert [e.id for e in app.received()] == ["e1"]


def test_events_larger_than_the_flow_control_windows_arrive_whole() -> None:
    """Three 1.5 MB events at once: many times HTTP/2's initial 64 KiB windows, so they go out
    as the app's WINDOW_UPDATEs arrive."""
    with CallbackApp([Topic("ps", "orders")]) as app:
        channel = GrpcAppChannel("127.0.0.1", app.port)
        events = [event(i)._replace(data=bytes([i]) * (1_500_000 + i)) for i in range(3)]

        async def scenario() -> list[Verdict]:
            try:
                return list(await asyncio.gather(*(channel.deliver(e, 10.0) for e in events)))
            finally:
                await channel.close()

        assert run(scenario()) == [Verdict.SUCCESS] * 3
        assert sorted(e.data for e in app.received()) == sorted(e.data for e in events)


def test_a_call_past_its_deadline_times_out_and_the_others_carry_on() -> None:
    def slow_for_one(e: Any) -> int:
        if e.id == "e1":
            time.sleep(0.6)
        return SUCCESS

    with CallbackApp([Topic("ps", "orders")], verdict=slow_for_one) as app:
        channel = GrpcAppChannel("127.0.0.1", app.port)

        async def scenario() -> tuple[float, list[Any]]:
            started = time.monotonic()
            try:
                outcomes = await asyncio.gather(
                    channel.deliver(event(1), 0.2), channel.deliver(event(2), 5.0), return_exceptions=True
                )
                return time.monotonic() - started, list(outcomes)
            finally:
                await channel.close()

        took, (slow, fast) = run(scenario())
        assert isinstance(slow, TimeoutError)
        assert fast == Verdict.SUCCESS
        assert took < 0.5, "the late call ended at its deadline, not at the app's answer"


def test_an_app_that_is_down_fails_the_call_and_is_dialled_again_once_up() -> None:
    app = CallbackApp([Topic("ps", "orders")])
    channel = GrpcAppChannel("127.0.0.1", app.port)

    async def scenario() -> None:
        try:
            with pytest.raises(Unavailable, match=f"cannot connect to 127.0.0.1:{app.port}"):
                await channel.deliver(event(1), 1.0)
            app.start()
            assert await channel.deliver(event(2), 5.0) == Verdict.SUCCESS
            app.stop()  # the connection ends: the next call dials again
            await asyncio.sleep(0.2)
            app.start()
            assert await channel.deliver(event(3), 5.0) == Verdict.SUCCESS
        finally:
            await channel.close()
            app.stop()

    run(scenario())
    assert [e.id for e in app.received()] == ["e2", "e3"]


def test_an_app_stopping_gracefully_answers_what_it_took() -> None:
    """The app's GOAWAY (grpcio's stop with a grace; grpc-go's GracefulStop) lets the calls it
    took finish. Before, the next delivery found the connection refusing new streams and
    closed it, failing the calls in the app's hands (delivered again: duplicates). A delivery
    after the GOAWAY goes over a new connection; with no app listening any more, it has no
    verdict (SubscriberGone: back to the backend), not a RETRY counted against it."""

    def slow(event: Any) -> int:
        time.sleep(0.5)
        return SUCCESS

    # Earlier tests' connections go now, on their thread, not in a collection the app's
    # server threads would run while this one works (the native connections are thread-bound).
    gc.collect()
    app = CallbackApp([Topic("ps", "orders")], verdict=slow).start()
    channel = GrpcAppChannel("127.0.0.1", app.port)

    async def scenario() -> tuple[list[Any], list[Any], Any]:
        try:
            taken = [channel.deliver(event(i), 5.0) for i in range(5)]
            while len(app.received()) < 5:
                await asyncio.sleep(0.01)
            assert app._server is not None
            stopping = app._server.stop(3.0)  # GOAWAY; the calls in hand may finish for 3 s
            await asyncio.sleep(0.1)  # the GOAWAY arrives
            late = [channel.deliver(event(i), 5.0) for i in range(5, 8)]
            first = await asyncio.gather(*taken, return_exceptions=True)
            second = await asyncio.gather(*late, return_exceptions=True)
            return first, second, stopping
        finally:
            await channel.close()
            await asyncio.sleep(0.1)  # the connections' ends run here, on the loop's thread

    first, second, stopping = run(scenario())
    gc.collect()  # here, not on a server thread: the native connections belong to this thread
    stopping.wait()
    assert first == [Verdict.SUCCESS] * 5
    assert all(type(outcome).__name__ == "SubscriberGone" for outcome in second), second
    assert sorted(e.id for e in app.received()) == [f"e{i}" for i in range(5)]


def test_a_delivery_dialling_while_the_channel_redials_after_a_goaway_leaves_one_connection_and_no_loss() -> None:
    """After the app's GOAWAY the channel dials again; a delivery arriving meanwhile dials too.
    Whichever connects first is kept and the other is closed unused. Before, when the delivery's
    connected first, the redial's was closed and its end counted as the app lost (every
    subscription made again); when the redial's connected first, the delivery's replaced it and
    it stayed open, unused, for good."""
    gc.collect()  # earlier tests' native connections go now, on this thread
    app = CallbackApp([Topic("ps", "orders")]).start()
    channel = GrpcAppChannel("127.0.0.1", app.port)

    async def scenario() -> tuple[Verdict, int, int]:
        try:
            redial = asyncio.ensure_future(channel._redial_after_goaway())
            channel._redialling = redial
            verdict = await channel.deliver(event(1), 5.0)  # dials too: the two connects race
            await redial
            await asyncio.sleep(0.1)  # the unused connection's end runs here
            return verdict, channel._losses, len(sockets_to(app.port))
        finally:
            await channel.close()
            await asyncio.sleep(0.1)

    try:
        verdict, losses, connections = run(scenario())
    finally:
        gc.collect()  # here, not on a server thread: the native connections belong to this thread
        app.stop()
    assert verdict == Verdict.SUCCESS
    assert (losses, connections) == (0, 1)


def test_a_delivery_never_sent_with_no_time_left_has_no_verdict() -> None:
    """A call the app never took (GOAWAY, REFUSED_STREAM) whose time ran out before it could go
    again was read as the app's refusal (status 1000): a RETRY counted against the message."""
    from layotto_fast_native import NOT_SENT

    from layotto_fast.runtime.pubsub import SubscriberGone

    async def scenario() -> BaseException | None:
        channel = GrpcAppChannel("127.0.0.1", 9)  # nothing is dialled before this settles
        try:
            delivery = channel.deliver(event(1), 0.001)
            time.sleep(0.01)  # its time is over, before the loop could hand it to a connection
            [token] = channel._waiting
            channel.settle([(token, NOT_SENT, "the app sent GOAWAY", b"")])
            outcome = delivery.exception() if delivery.done() else None
            await asyncio.sleep(0.05)  # the queued hand-over dials and finds the call settled
            return outcome
        finally:
            await channel.close()

    outcome = run(scenario())
    assert isinstance(outcome, SubscriberGone), outcome


def test_a_connection_the_app_stops_reading_is_aborted_after_the_close_grace() -> None:
    """The app sends a frame HTTP/2 forbids (DATA on stream 0) and stops reading while megabytes
    of deliveries wait to reach it. The sidecar closes the socket, and close() waits for the app
    to take what is left: without the abort CLOSE_GRACE_SECONDS later the connection (and the
    subscriptions' cycle, which waits for its end) stayed open as long as the app kept it."""
    import socket
    import threading

    from layotto_fast.api.app_callback import CLOSE_GRACE_SECONDS
    from tests.faults.raw_h2 import DATA, Frames, raw_frame

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: a small window to fill
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    misbehave, test_over = threading.Event(), threading.Event()

    def app() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)  # the preface and the sidecar's SETTINGS; nothing is read after these
            room = 2**31 - 1
            conn.sendall(Frames.settings({"initial_window_size": room}) + Frames.settings(ack=True)
                         + Frames.window_update(0, room - 65_535))  # fmt: skip
            misbehave.wait(10)
            conn.sendall(raw_frame(DATA, 0, 0, b"not on stream 0"))  # a connection error for the client
            test_over.wait(10)

    server = threading.Thread(target=app, daemon=True)
    server.start()
    channel = GrpcAppChannel("127.0.0.1", port)
    events = [event(i)._replace(data=bytes([i]) * 3_000_000) for i in range(3)]

    async def scenario() -> tuple[bool, float, list[Any]]:
        try:
            deliveries = [channel.deliver(e, 30.0) for e in events]
            for _ in range(200):  # until the connection is up and its output stuck behind the app
                await asyncio.sleep(0.01)
                connection = channel._connection
                transport = connection.transport if connection is not None else None
                if transport is not None and transport.get_write_buffer_size() > 0:
                    break
            else:
                raise AssertionError("the deliveries never filled the connection's write buffer")
            misbehave.set()
            closed_at = time.monotonic()
            while not connection.ended and time.monotonic() - closed_at < CLOSE_GRACE_SECONDS + 3:
                await asyncio.sleep(0.02)

            outcomes = await asyncio.wait_for(asyncio.gather(*deliveries, return_exceptions=True), 3)
            return connection.ended, time.monotonic() - closed_at, list(outcomes)
        finally:
            test_over.set()
            await channel.close()

    try:
        ended, took, outcomes = run(scenario())
    finally:
        test_over.set()
        server.join(5)
        listener.close()
    assert ended, "the connection was still open: the app that stopped reading kept it"
    assert took < CLOSE_GRACE_SECONDS + 2.5, took
    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    assert not any(isinstance(outcome, Verdict) for outcome in outcomes)


def test_deliveries_cut_off_by_an_http2_error_from_the_app_go_back_to_their_backend() -> None:
    """The native connection fails its open calls inside the read that carries the error; they
    were taken for the app's refusals (each an attempt, the dead-letter topic after a few)
    where a lost socket makes them SubscriberGone: back to the backend, no attempt counted."""

    async def broken_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        app = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        app.initiate_connection()
        opened = 0
        while opened < 3 and (data := await reader.read(65536)):
            opened += sum(isinstance(e, h2.events.RequestReceived) for e in app.receive_data(data))
            writer.write(app.data_to_send())
        writer.write(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")  # DATA on stream 0: a connection error
        await writer.drain()
        await reader.read()  # until the sidecar closes

    async def scenario() -> list[BaseException | Verdict]:
        server = await asyncio.start_server(broken_app, "127.0.0.1", 0)
        channel = GrpcAppChannel("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            deliveries = (channel.deliver(event(i), 5.0) for i in range(3))
            return list(await asyncio.gather(*deliveries, return_exceptions=True))
        finally:
            await channel.close()
            server.close()

    outcomes = run(scenario())
    assert all(isinstance(outcome, SubscriberGone) for outcome in outcomes), outcomes


def test_an_app_whose_server_compresses_its_answers_is_listed_and_delivered_to() -> None:
    """A grpcio server with compression on gzips its answers whatever the client accepts; the
    listing came back refused (not one uncompressed message), so such an app was never subscribed."""
    gzip_answers = [("grpc.default_compression_algorithm", 2)]  # grpc.Compression.Gzip
    verdict = {0: SUCCESS, 1: DROP}
    topics = [Topic("ps", f"orders-{i}") for i in range(30)]  # a listing gzip shrinks: sent compressed
    with CallbackApp(topics, verdict=lambda e: verdict[int(e.id[1:])], options=gzip_answers) as app:
        channel = GrpcAppChannel("127.0.0.1", app.port)

        async def scenario() -> tuple[list[tuple[str, str]], list[Verdict]]:
            try:
                listed = [(s.pubsub_name, s.topic) for s in await channel.list_subscriptions()]
                return listed, list(await asyncio.gather(*(channel.deliver(event(i), 5.0) for i in range(2))))
            finally:
                await channel.close()

        assert run(scenario()) == ([(t.pubsub_name, t.topic) for t in topics], [Verdict.SUCCESS, Verdict.DROP])


def test_a_404_from_something_that_is_no_grpc_server_reads_as_unimplemented() -> None:
    """gRPC maps HTTP 404 to UNIMPLEMENTED (the event is dropped, as for an app without
    OnTopicEvent); every status but 200 was UNAVAILABLE, retried for good."""

    async def not_grpc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        while data := await reader.read(65536):
            for e in server.receive_data(data):
                if isinstance(e, h2.events.RequestReceived):
                    server.send_headers(e.stream_id, [(":status", "404")], end_stream=True)
            writer.write(server.data_to_send())

    async def scenario() -> Verdict:
        listening = await asyncio.start_server(not_grpc, "127.0.0.1", 0)
        channel = GrpcAppChannel("127.0.0.1", listening.sockets[0].getsockname()[1])
        try:
            return await channel.deliver(event(1), 5.0)
        finally:
            await channel.close()
            listening.close()

    assert run(scenario()) == Verdict.DROP
