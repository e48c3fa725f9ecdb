"""The native gRPC transport: HTTP/2 in Rust (h2), handlers on this event loop.

Why HTTP/2 is driven from the loop's own thread: the issue's measurements of a
tokio-thread prototype put the cross-thread hand-off (eventfd -> loop, and back) at
60-90 µs of added p50 at one call in flight (258-311 µs p50 for GetState) and ~7 µs
of bookkeeping per call under load. Here uvloop hands socket bytes to a Rust
``GrpcConnection`` (h2 state machine), which returns whole requests; a handler that
completes without suspending (every in-memory component) is finished in the same
pass with no Task at all, and its response leaves in the same ``write``. A unary
handler that suspends (a network store) is carried on by a ``SuspendedCall``
(``suspended.pyx``), which drives its coroutine as a Task would, for less; only
streaming calls get a Task. That per-call path (decode, run, encode, respond,
count) is compiled, in ``native_calls.pyx``; this module keeps the rest.

Measured with ``make bench`` on 2 cores (ghz, GetState, one run): about 160 µs p50
at one call in flight (grpc.aio about 530 µs; the Rust-only floor of this design about
145 µs) and 13-14 µs of server CPU per call at 64 in flight (grpc.aio about 490 µs;
floor 9.5-10 µs). The same run serves the same handlers with every unary call in a
Task (``inline_unary=False``): about 80 µs more p50 at one call in flight and more
than twice the CPU per call at 64, which is why same-pass completion is the default.
It also serves them behind HTTP/2 on a tokio thread that hands calls to this loop in
batches (``layotto_fast_native.HandoffServer``, the issue's prototype design, with
this module's compiled call path): about 35-40 µs more p50 at one call in flight and
7-8 µs more CPU per call at 64. The loop-driven design wins on both counts the issue
sets, so it is the one the sidecar uses.

Handlers are the same objects the grpcio transport serves: methods named after
the rpcs, taking a request message (or an async iterator of them) and returning a
response (or an async iterator), raising domain errors that become status codes here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from layotto_fast_native import GrpcConnection, GrpcServerConfig

from layotto_fast.api.call import CURRENT, Call
from layotto_fast.api.codecs import codec_of
from layotto_fast.api.limits import limit_size
from layotto_fast.api.native_calls import Method, dispatch, flush, now, receive
from layotto_fast.api.stats import UNKNOWN_METHOD, CallStats, MethodStats
from layotto_fast.api.status import grpc_code
from layotto_fast.api.suspended import SuspendedCall
from layotto_fast.errors import InvalidArgument, ResourceExhausted, RuntimeApiError

log = logging.getLogger(__name__)

UNARY, OPEN, MESSAGE, HALF_CLOSE, CANCELLED, WRITABLE, REFUSED = range(7)
UNKNOWN_METHOD_INDEX = 2**32 - 1  # the method of a REFUSED event for a path not served

CODES = {status.name: status.value[0] for status in grpc.StatusCode}
CODE_NAMES = {value: name for name, value in CODES.items()}
LINGER_SECONDS = 1.0
# A client gives up at its deadline, counted from before its request left it, and the
# server's from when the request arrived: a client's reset this close to the server's
# deadline is that deadline passing, and is counted as DEADLINE_EXCEEDED.
DEADLINE_SLACK_SECONDS = 0.05
LINGER_BYTES = 64 * 1024


def failure_status(exc: BaseException, name: str) -> tuple[str, str]:
    if isinstance(exc, RuntimeApiError):
        return grpc_code(exc), exc.message
    # Logged as text: a handler that keeps the record (a queue, a test's log capture)
    # would otherwise keep the traceback, and through its frames the connection, alive
    # and drop it later, maybe on another thread. The lines stay, the objects go.
    log.error("%s failed\n%s", name, "".join(traceback.format_exception(exc)).rstrip())
    traceback.clear_frames(exc.__traceback__)
    return "INTERNAL", f"internal error in {name}: {type(exc).__name__}"


def _trailers(call: Call) -> list[tuple[str, str]] | None:
    """Trailers to send; initial metadata not sent yet rides along (trailers-only or unary)."""
    headers = call.take_headers()
    if headers:
        return [*headers, *(call.pending_trailers() or ())]
    return call.pending_trailers()


class _Inbox:
    """The request stream of a client-streaming call, fed by the connection's events."""

    def __init__(self, connection: GrpcProtocol, key: int, decode: Callable[[bytes], Any]) -> None:
        self._connection, self._key, self._decode = connection, key, decode
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(self, message: bytes | None) -> None:
        self._queue.put_nowait(message)

    def __aiter__(self) -> _Inbox:
        return self

    async def __anext__(self) -> Any:
        message = await self._queue.get()
        if message is None:
            raise StopAsyncIteration
        self._connection.consumed(self._key, len(message) + 5)
        try:
            return self._decode(message)
        except DecodeError as exc:
            raise _BadRequest(str(exc)) from None


class _BadRequest(InvalidArgument):
    pass


class _Busy(ResourceExhausted):
    pass


class GrpcProtocol(asyncio.Protocol):
    """One client connection: bytes in, events out, handlers run on the loop."""

    def __init__(self, server: NativeGrpcServer, unix_socket: bool = False) -> None:
        self._server = server
        self._methods = server.methods
        self._loop = asyncio.get_running_loop()
        # grpc-core clients send the socket path as :authority on a Unix socket.
        self._connection = GrpcConnection(server.config, repair_authority=unix_socket)
        self._transport: asyncio.Transport | None = None
        # Calls whose handler awaited: Tasks (streams) and SuspendedCalls (unary), by stream key.
        self._tasks: dict[int, asyncio.Task[Any] | SuspendedCall] = {}
        self._inboxes: dict[int, _Inbox] = {}
        self._writable: dict[int, asyncio.Future[None]] = {}
        self._deadlines: dict[int, float] = {}  # of the calls in Tasks that have one, on the loop's clock
        self._flush_scheduled = False
        self._suspended_calls = 0  # SuspendedCalls not yet ended
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._greeting_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None  # set once the connection has ended
        self._linger_budget = LINGER_BYTES

    # -- transport callbacks ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport subclasses.
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self._flush()
        if self._server.keepalive_seconds > 0:
            self._keepalive_timer = self._loop.call_later(self._server.keepalive_seconds, self._keepalive)
        if self._server.handshake_timeout_seconds > 0:
            self._greeting_timer = self._loop.call_later(self._server.handshake_timeout_seconds, self._greeting_due)

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None:
            # The HTTP/2 connection has ended: a little more input is read and dropped,
            # a peer that keeps sending is cut off.
            self._linger_budget -= len(data)
            if self._linger_budget < 0 and self._transport is not None:
                self._transport.close()
            return
        receive(self, self._connection, self._transport, self._methods, data)

    def eof_received(self) -> bool:
        if self._linger_timer is not None:
            return False  # the peer saw our GOAWAY and FIN and closed: close too
        events = self._connection.feed_eof()
        if events:
            dispatch(self, self._connection, self._methods, events)
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._greeting_timer is not None:
            self._greeting_timer.cancel()
        # Calls still open end CANCELLED: counted, and their handlers stopped (below).
        for event in self._connection.lost():
            if event[0] in (CANCELLED, REFUSED):
                self._event(event)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self._deadlines.clear()
        for waiter in self._writable.values():
            if not waiter.done():
                waiter.cancel()
        self._transport = None

    def pause_writing(self) -> None:
        # A peer that does not read: stop taking its requests until it catches up.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    # -- the server's view -------------------------------------------------------
    @property
    def open_streams(self) -> int:
        return int(self._connection.open_streams)

    def shutdown(self) -> None:
        self._connection.graceful_shutdown()
        self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _greeting_due(self) -> None:
        """A peer that has not sent the HTTP/2 preface and its SETTINGS by now is dropped."""
        self._greeting_timer = None
        if self._transport is not None and not self._connection.greeted:
            log.debug("closing a connection that sent no HTTP/2 preface and SETTINGS in time")
            self._transport.abort()

    def _keepalive(self) -> None:
        """PING the peer; one left unanswered for a whole interval means it is gone."""
        if self._transport is None:
            return
        if not self._connection.ping():
            log.info("closing a gRPC connection whose peer did not answer a keepalive PING")
            self._transport.abort()
            return
        self._flush()
        self._keepalive_timer = self._loop.call_later(self._server.keepalive_seconds, self._keepalive)

    def suspended_calls(self) -> list[SuspendedCall]:
        return [call for call in self._tasks.values() if isinstance(call, SuspendedCall)]

    def expire(self, key: int, method: Method, started: float) -> None:
        """The call's deadline passed: DEADLINE_EXCEEDED, and its handler is cancelled."""
        self._expire(key, method, started)

    def consumed(self, key: int, size: int) -> None:
        self._connection.consumed(key, size)
        self._schedule_flush()

    # -- output ------------------------------------------------------------------
    def _flush(self) -> None:
        flush(self, self._connection, self._transport, self._methods)

    def _close_transport(self) -> None:
        """The HTTP/2 connection ended (GOAWAY sent, or the peer broke the protocol).

        Closing a socket whose input was not all read makes the kernel send a RST,
        which can reach the peer before the GOAWAY just written; so the write side is
        shut first (FIN after the GOAWAY) and the socket closes when the peer closes
        its side, after ``LINGER_SECONDS`` or once it sent ``LINGER_BYTES`` more.
        """
        transport = self._transport
        if transport is None or self._linger_timer is not None:
            return
        if self._connection.error:
            log.debug("closing gRPC connection: %s", self._connection.error)
        if transport.can_write_eof():
            transport.write_eof()
            self._linger_timer = self._loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        if self._flush_scheduled:  # not already flushed by a call that ended since
            self._flush()

    # -- events --------------------------------------------------------------------
    # Unary calls that finish without suspending never come here: native_calls.dispatch
    # serves them. It hands over everything else through the methods below.
    def _event(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == OPEN:
            self._start_streaming(event[1], self._methods[event[2]], event[3], event[4])
        elif kind == MESSAGE:
            inbox = self._inboxes.get(event[1])
            if inbox is not None:
                inbox.put(event[2])
        elif kind == HALF_CLOSE:
            inbox = self._inboxes.get(event[1])
            if inbox is not None:
                inbox.put(None)
        elif kind == CANCELLED:
            # The call ended with the status the transport sent (the client reset it, the
            # connection ended, or its request broke a limit): count it, stop the handler.
            task = self._tasks.pop(event[1], None)
            self._inboxes.pop(event[1], None)
            deadline = self._deadlines.pop(event[1], 0.0)
            if isinstance(task, SuspendedCall):
                deadline = task.deadline
            if task is not None and task.cancel():  # False: it had ended, and was counted then
                code = CODE_NAMES.get(event[3], "UNKNOWN")
                if code == "CANCELLED" and 0 < deadline <= self._loop.time() + DEADLINE_SLACK_SECONDS:
                    code = "DEADLINE_EXCEEDED"
                self._methods[event[2]].stats.count(code)
        elif kind == REFUSED:
            self._server.refused(event[1], event[3]).count(CODE_NAMES.get(event[2], "UNKNOWN"))
        elif kind == WRITABLE:
            waiter = self._writable.pop(event[1], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        else:
            raise AssertionError(f"unexpected gRPC connection event {event!r}")

    def _undecodable(self, key: int, method: Method, exc: DecodeError, started: float) -> None:
        self._fail(key, method, _BadRequest(f"request is not a valid {method.name} message: {exc}"), started)

    def _start_in_task(
        self,
        key: int,
        method: Method,
        request: Any,
        started: float,
        timeout_us: int,
        metadata: list[tuple[str, bytes]] | None,
    ) -> None:
        """Run the handler in a Task: streaming calls, and unary ones when ``inline`` is off.

        ``request`` is the decoded message, or the ``_Inbox`` of a client-streaming call.
        """
        call = Call(metadata)
        token = CURRENT.set(call)
        try:
            try:
                result = method.handler(request)  # a handler may check its request before it awaits
            except Exception as exc:
                self._fail(key, method, exc, started, call)
                return
            if method.server_streaming:
                body = self._stream_out(key, method, result, call)
            else:
                body = self._unary_out(key, method, result, call)
            self._spawn(key, method, body, started, timeout_us, call)
        finally:
            CURRENT.reset(token)

    def _start_streaming(
        self, key: int, method: Method, timeout_us: int, metadata: list[tuple[str, bytes]] | None
    ) -> None:
        inbox = _Inbox(self, key, method.decode)
        self._inboxes[key] = inbox
        self._start_in_task(key, method, inbox, now(), timeout_us, metadata)

    def _spawn(
        self,
        key: int,
        method: Method,
        body: Coroutine[Any, Any, None],
        started: float,
        timeout_us: int,
        call: Call,
    ) -> None:
        # The task's context is copied while CURRENT holds this call.
        server = self._server
        if server.in_flight >= server.max_in_flight:
            body.close()
            self._fail(
                key, method, _Busy(f"{server.in_flight} calls in flight: the server is at its limit"), started, call
            )
            return
        server.in_flight += 1
        task = self._loop.create_task(body)
        self._tasks[key] = task
        timer = None
        if timeout_us >= 0:
            timer = self._loop.call_later(timeout_us / 1e6, self._expire, key, method, started)
            self._deadlines[key] = timer.when()
        task.add_done_callback(lambda done: self._done(key, method, done, started, timer, call))

    async def _unary_out(self, key: int, method: Method, result: Any, call: Call) -> None:
        response = await result
        self._connection.respond(key, method.encode(response), call.pending_trailers(), call.take_headers())

    async def _stream_out(self, key: int, method: Method, responses: AsyncIterator[Any], call: Call) -> None:
        connection = self._connection
        async for response in responses:
            headers = call.take_headers()
            if not connection.send(key, method.encode(response), headers):
                waiter = self._loop.create_future()
                self._writable[key] = waiter
                self._schedule_flush()
                await waiter
            self._schedule_flush()
        connection.finish(key, 0, "", _trailers(call))

    def _done(self, key: int, method: Method, task: asyncio.Task[Any], started: float, timer: Any, call: Call) -> None:
        self._server.in_flight -= 1
        if timer is not None:
            timer.cancel()
        ours = self._tasks.pop(key, None) is task  # not yet ended by a deadline, a reset or a lost connection
        self._deadlines.pop(key, None)
        self._inboxes.pop(key, None)
        self._writable.pop(key, None)
        if task.cancelled():
            if ours:  # something below the handler was cancelled, not the call: answer, never go silent
                self._fail(key, method, asyncio.CancelledError(), started, call)
            self._schedule_flush()
            return
        exc = task.exception()
        if exc is not None:
            self._fail(key, method, exc, started, call)
            # Logged: drop the traceback, which holds the task in a cycle (task, exception,
            # traceback, frame) that only the collector would free, at some later time.
            exc.__traceback__ = None
        else:
            method.stats.record_ok(now() - started)
        self._schedule_flush()

    def _expire(self, key: int, method: Method, started: float) -> None:
        task = self._tasks.pop(key, None)
        self._deadlines.pop(key, None)
        if task is None or not task.cancel():  # it ended just now: its own outcome is counted
            return
        self._connection.finish(key, CODES["DEADLINE_EXCEEDED"], "deadline exceeded")
        method.stats.record("DEADLINE_EXCEEDED", now() - started)
        self._schedule_flush()

    def _fail(self, key: int, method: Method, exc: BaseException, started: float, call: Call | None = None) -> None:
        code, message = failure_status(exc, method.name)
        self._connection.finish(key, CODES[code], message, _trailers(call) if call is not None else None)
        method.stats.record(code, now() - started)
        self._schedule_flush()


class NativeGrpcServer:
    def __init__(
        self,
        services: list[tuple[ServiceDescriptor, object]],
        max_message_bytes: int = 4 * 1024 * 1024,
        max_concurrent_streams: int = 1024,
        stats: CallStats | None = None,
        fixed_replies: dict[str, bytes] | None = None,
        max_in_flight: int = 10_000,
        keepalive_seconds: float = 60.0,
        inline_unary: bool = True,
        handshake_timeout_seconds: float = 10.0,
    ) -> None:
        """``fixed_replies`` maps rpc paths to bytes answered in Rust alone (benchmark floors);
        ``inline_unary=False`` gives every unary call a Task (the design this one is measured against).

        ``max_message_bytes`` bounds requests (refused in Rust from their length prefix) and
        answers (refused before they are sent), both RESOURCE_EXHAUSTED. A connection that has
        not sent the HTTP/2 preface and its SETTINGS ``handshake_timeout_seconds`` after it
        was accepted is closed (0: never)."""

        self.methods: list[Method] = []
        stats = stats if stats is not None else CallStats()
        self.stats = stats
        # Labels of the calls refused for an unknown path: the rpc's name when the service
        # declares it (answered UNIMPLEMENTED all the same), one shared label otherwise.
        self.declared: dict[str, str] = {}
        paths: list[tuple[str, bool]] = []
        for descriptor, handlers in services:
            for rpc in descriptor.methods:
                self.declared[f"/{descriptor.full_name}/{rpc.name}"] = rpc.name
                handler = getattr(handlers, rpc.name, None)
                if handler is None:
                    continue  # unknown paths are answered UNIMPLEMENTED in Rust
                decode, encode = codec_of(handlers, rpc)
                self.methods.append(
                    Method(
                        name=rpc.name,
                        handler=handler,
                        decode=decode,
                        encode=limit_size(encode, max_message_bytes),
                        client_streaming=rpc.client_streaming,
                        server_streaming=rpc.server_streaming,
                        stats=stats.method(rpc.name),
                        inline=inline_unary,
                    )
                )
                paths.append((f"/{descriptor.full_name}/{rpc.name}", rpc.client_streaming))
        self.config = GrpcServerConfig(
            paths,
            max_message_bytes=max_message_bytes,
            max_concurrent_streams=max_concurrent_streams,
            fixed_replies=fixed_replies,
        )
        # Calls whose handler suspended (a Task for a stream, a SuspendedCall for a unary
        # call); beyond the limit new ones get RESOURCE_EXHAUSTED instead of queueing without bound.
        self.max_in_flight = max_in_flight
        self.keepalive_seconds = keepalive_seconds
        self.handshake_timeout_seconds = handshake_timeout_seconds
        self.in_flight = 0
        self.connections: set[GrpcProtocol] = set()
        self._listeners: list[asyncio.Server] = []
        # One timer for the deadlines of every suspended unary call, due at the earliest.
        self.deadline_at = math.inf
        self._deadline_timer: asyncio.TimerHandle | None = None

    def watch_deadline(self, deadline: float) -> None:
        """Have the deadline sweep run by ``deadline`` (the loop's clock) at the latest."""
        if deadline >= self.deadline_at:
            return
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self.deadline_at = deadline
        self._deadline_timer = asyncio.get_running_loop().call_at(deadline, self._sweep_deadlines)

    def _sweep_deadlines(self) -> None:
        """End the suspended calls whose deadline has passed; wait for the next one due.

        Most calls end long before their deadline, so the sweep runs about once per
        deadline's length, over the calls in flight then: no timer is made per call.
        """
        self._deadline_timer, self.deadline_at = None, math.inf
        # The loop's clock counts whole milliseconds: a timer may fire up to one early.
        now = asyncio.get_running_loop().time() + 0.001
        for connection in list(self.connections):
            for call in [c for c in connection.suspended_calls() if c.deadline > 0]:
                if call.deadline <= now:
                    connection.expire(call.key, call.method, call.started)
                else:
                    self.watch_deadline(call.deadline)

    def refused(self, index: int, path: str | None) -> MethodStats:
        """The counters of a call that ended before reaching its handler."""
        if index != UNKNOWN_METHOD_INDEX:
            return self.methods[index].stats
        return self.stats.method(self.declared.get(path or "", UNKNOWN_METHOD))

    async def start(self, addresses: list[str]) -> None:
        loop = asyncio.get_running_loop()
        for address in addresses:
            if address.startswith("unix:"):
                path = address.removeprefix("unix:")
                listener = await loop.create_unix_server(lambda: GrpcProtocol(self, unix_socket=True), path)
            else:
                host, _, port = address.rpartition(":")
                host = host.removeprefix("[").removesuffix("]")  # an IPv6 host, as grpc writes it
                listener = await loop.create_server(lambda: GrpcProtocol(self), host, int(port), reuse_address=True)
            self._listeners.append(listener)

    def tcp_port(self) -> int | None:
        """The port of the first TCP listener: the one chosen when port 0 was asked for."""
        for listener in self._listeners:
            for sock in listener.sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    return int(sock.getsockname()[1])
        return None

    async def stop(self, grace: float) -> None:
        """GOAWAY to every client, let open calls finish for up to ``grace`` seconds, then close.

        A connection is waited for until it is gone, not only until its calls have
        answered: an answer handed to HTTP/2 may still wait for the client's flow-control
        window, and a request already on its way is still read (the first GOAWAY admits
        it). Each closes itself once HTTP/2 is done with it (FIN after the last GOAWAY).
        """
        for listener in self._listeners:
            listener.close()
        for connection in list(self.connections):
            connection.shutdown()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.abort()
        for listener in self._listeners:
            await listener.wait_closed()
