"""The app's ``AppCallback`` gRPC server, dialled by the sidecar: events out, verdicts back.

Only translation lives here (runtime events to ``TopicEventRequest``, statuses to
verdicts); what to do with a verdict is the pub/sub service's.

Calls go over one HTTP/2 connection that the event loop owns: the socket is an asyncio
protocol and HTTP/2 is the native ``GrpcClientConnection`` (h2), fed the bytes as they
come. grpcio's asyncio client costs about 220 µs of CPU per call, most of a delivery,
and a client on a thread of its own pays two thread wake-ups per batch of calls. The calls
of one loop pass go out in one write; a delivery's time limit is its call's deadline, kept
by the native connection and watched by one loop timer. The end of each connection is
counted; a subscription cycle ends when the connection its listing came over is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from layotto_fast_native import NOT_SENT, GrpcClientConnection

from layotto_fast._proto import appcallback_pb2 as pb
from layotto_fast.errors import Unavailable
from layotto_fast.runtime.cloudevents import Event
from layotto_fast.runtime.pubsub import SubscriberGone, Verdict
from layotto_fast.runtime.pubsub_service import TopicSubscription

log = logging.getLogger(__name__)

SERVICE = "/spec.proto.runtime.v1.AppCallback"
ON_TOPIC_EVENT = f"{SERVICE}/OnTopicEvent"
LIST_TIMEOUT_MS = 5_000
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
# TopicEventResponse.status -> the runtime's verdict; an open enum, so other numbers arrive too.
VERDICTS: dict[int, Verdict] = {int(v): v for v in Verdict}
_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

# (token, path, encoded request, timeout in ms): one call as the native connection takes it
Call = tuple[int, str, bytes, int]
# (token, gRPC status, detail, encoded answer): one call's end as it reports it
Finished = tuple[int, int, str, bytes]
# What a caller makes of its call's end (status, detail, answer); it may raise.
Read = Callable[[int, str, bytes], Any]


class AppCallError(Unavailable):
    def __init__(self, address: str, status: int, detail: str) -> None:
        super().__init__(f"app at {address}: {_STATUS_NAMES.get(status, str(status))}: {detail}")
        self.status = status


CLOSE_GRACE_SECONDS = 1.0  # for the last frames of a connection the sidecar closes


class _AppConnection(asyncio.Protocol):
    """One socket to the app: bytes in and out of the native HTTP/2 client connection."""

    def __init__(self, channel: GrpcAppChannel, number: int) -> None:
        self.channel = channel
        self.number = number
        self.h2 = GrpcClientConnection(channel.address)
        self.transport: asyncio.Transport | None = None
        self.ended = False
        self._why: str | None = None  # set when the sidecar ends the connection itself
        self._pinger: asyncio.TimerHandle | None = None
        self._heard = True  # an answer came from the app since the last keepalive tick
        self._pinged_at: float | None = None  # when the last PING of this silent stretch went out
        self._closer: asyncio.TimerHandle | None = None  # aborts a close the app does not let finish
        self.spare = False  # dialled while another was made: closed unused, its end no loss

    def close_spare(self) -> None:
        self.spare = True
        self._why = "not needed: another connection was made meanwhile"
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = transport  # type: ignore[assignment]
        self.flush()
        if self.channel.keepalive_seconds > 0:
            self._pinger = asyncio.get_running_loop().call_later(self.channel.keepalive_seconds, self._ping)

    def data_received(self, data: bytes) -> None:
        finished = self.h2.feed(data)
        if finished:  # the app answers (a PING's answer alone does not count)
            self._heard = True
        # calls failed by the connection ending in this read (an HTTP/2 error) were not
        # refused by the app: they go back to their backend, not count as its verdicts
        self.channel.settle(finished, unanswered=self.h2.is_closed())
        self.flush()

    def eof_received(self) -> bool:
        self.channel.settle(self.h2.feed_eof(), unanswered=True)
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        # Without the transport (which holds this protocol) no cycle keeps the native connection
        # for the collector, which could run on another thread (grpcio's) and must not drop it.
        self.transport = None
        for timer in (self._pinger, self._closer):
            if timer is not None:
                timer.cancel()
        self._pinger = self._closer = None
        why = self._why or (str(exc) if exc else None) or self.h2.error() or "closed by the app"
        self.channel.settle(self.h2.lost(why), unanswered=True)
        self.channel.ended(self, why)

    def start(self, calls: list[Call]) -> None:
        self.channel.settle(self.h2.start_many(calls), unanswered=self.h2.is_closed())
        self.flush()

    def flush(self) -> None:
        output = self.h2.take_output()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if output is not None:
            transport.write(output)
        if self.h2.is_closed():  # an HTTP/2 error or GOAWAY from the app: the socket goes too
            transport.close()
            # close() waits for the app to take what is left to write: one that stopped
            # reading would keep the connection, and the subscriptions' cycle, from ending.
            if self._closer is None:
                self._closer = asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, transport.abort)

    def expire(self) -> None:
        self.channel.settle(self.h2.expire())
        self.flush()

    def _ping(self) -> None:
        """A keepalive tick: one PING per silent stretch, when deliveries are in flight and
        the app answered none for a whole interval, and another each ``ping_spacing_seconds``
        while the stretch lasts (an app that hangs after answering the first is noticed);
        unanswered by the next tick, the connection is closed. gRPC servers count PINGs
        without calls, or more often than every 5 minutes while calls stay silent, as abuse
        (grpc-go and grpc core close the connection with GOAWAY too_many_pings after 2 or 3),
        so an idle connection, or one the app answers on, is never PINGed."""
        if self.transport is None or self.ended:
            return
        if self.h2.awaiting_pong():
            self._why = f"no answer to a PING within {self.channel.keepalive_seconds * 1000:.0f} ms"
            self.transport.abort()
            return
        loop = asyncio.get_running_loop()
        heard, self._heard = self._heard, False
        if heard:
            self._pinged_at = None  # a new silent stretch may get its PING
        elif self.h2.open_calls() > 0 and (
            self._pinged_at is None or loop.time() - self._pinged_at >= self.channel.ping_spacing_seconds
        ):
            self.h2.ping()
            self._pinged_at = loop.time()
            self.flush()
        self._pinger = loop.call_later(self.channel.keepalive_seconds, self._ping)


class GrpcAppChannel:
    def __init__(
        self, host: str, port: int, keepalive_seconds: float = 0.0, ping_spacing_seconds: float = 300.0
    ) -> None:
        self.host, self.port = host, port
        # The call's :authority too: an IPv6 host goes in brackets, or every call is refused.
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.keepalive_seconds = keepalive_seconds
        self.ping_spacing_seconds = ping_spacing_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: _AppConnection | None = None
        self._dialling: asyncio.Task[None] | None = None
        self._dial_queue: list[tuple[float, Call]] = []  # calls waiting for a connection, and since when
        self._connections = itertools.count(1)
        # token -> the caller's future, how to read the call's end, and the call itself with
        # its deadline on the loop's clock (to send it again over another connection)
        self._waiting: dict[int, tuple[asyncio.Future[Any], Read | None, str, bytes, float]] = {}
        self._draining: set[_AppConnection] = set()  # sent GOAWAY: finishing the calls it took
        self._redialling: asyncio.Task[None] | None = None  # after a GOAWAY: is the app still there?
        self._tokens = itertools.count(1)
        self._outbox: list[Call] = []  # this pass's calls, not yet handed over
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_at = math.inf
        self._losses = 0  # connections ended so far
        self._listed_at = 0  # the count when the subscriptions were last asked for
        # Connections the app replaced (its GOAWAY, then a new one made): it may be a new
        # version, whose subscriptions are asked for again.
        self._replacements = 0
        self._listed_replacements = 0  # the count when the subscriptions were last asked for
        self._waiters: list[asyncio.Future[None]] = []  # woken at each loss or replacement

    def settle(self, finished: list[Finished], unanswered: bool = False) -> None:
        """Hand the calls' ends to their callers. ``unanswered``: they failed because the
        connection did (never made, or lost): a delivery among them has no verdict from the
        app, which may never have seen it, and raises SubscriberGone, so the message goes
        back to its backend instead of counting as an attempt the app refused (a few lost
        attempts in a row would send it to the dead-letter topic)."""
        waiting = self._waiting
        for token, status, detail, message in finished:
            entry = waiting.pop(token, None)
            if entry is None:
                continue
            future, read = entry[0], entry[1]
            if future.done():  # given up on by the caller
                continue
            never_taken = status == NOT_SENT
            if never_taken:
                if self._send_again(token, entry):
                    continue
                status = UNAVAILABLE  # no time left to send it again: the app never had it
            if read is None:
                future.set_result((status, detail, message))
                continue
            if (unanswered or never_taken) and status:
                future.set_exception(SubscriberGone(f"the app at {self.address} did not answer: {detail}"))
                continue
            try:
                future.set_result(read(status, detail, message))
            except Exception as exc:
                future.set_exception(exc)

    def _send_again(self, token: int, entry: tuple[asyncio.Future[Any], Read | None, str, bytes, float]) -> bool:
        """A call the app never took (GOAWAY, REFUSED_STREAM) goes out again over another
        connection with what is left of its time; False when none is left."""
        assert self._loop is not None
        left_ms = round((entry[4] - self._loop.time()) * 1000)
        if left_ms <= 0:
            return False
        self._waiting[token] = entry
        if not self._outbox:
            self._loop.call_soon(self._hand_over)
        self._outbox.append((token, entry[2], entry[3], left_ms))
        return True

    def ended(self, connection: _AppConnection, why: str) -> None:
        was_draining = connection in self._draining
        self._draining.discard(connection)
        if connection is self._connection:
            self._connection = None
        log.info("app at %s: connection %d ended: %s", self.address, connection.number, why)
        if connection.spare:
            return
        if (was_draining or connection.h2.ended_by_goaway()) and self._connection is not None:
            self._replaced()  # the app's GOAWAY, and a connection made since: nothing was lost
            return
        if connection.h2.ended_by_goaway() and self._redialling is None:
            # A server rotating its connections (grpc's max connection age) or stopping: lost
            # only if the app cannot be dialled again, so a rotation costs no new cycle.
            self._redialling = asyncio.get_running_loop().create_task(self._redial_after_goaway())
            return
        self._lose()

    def _lose(self) -> None:
        self._losses += 1
        self._wake()

    def _replaced(self) -> None:
        self._replacements += 1
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _until(self, happened: Callable[[], bool]) -> None:
        while not happened():
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def _redial_after_goaway(self) -> None:
        loop = asyncio.get_running_loop()
        number = next(self._connections)
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _AppConnection(self, number), self.host, self.port),
                LIST_TIMEOUT_MS / 1000,
            )
        except (OSError, TimeoutError) as exc:
            log.info("app at %s: not there again after its GOAWAY (%s)", self.address, exc or "no answer in time")
            self._lose()
            return
        finally:
            self._redialling = None
        if self._connection is None or self._connection.ended:
            self._connection = connection
        else:  # calls dialled one meanwhile
            connection.close_spare()
        self._replaced()

    async def _call(self, path: str, message: bytes, timeout_ms: int) -> bytes:
        future: asyncio.Future[tuple[int, str, bytes]] = self._start(path, message, timeout_ms, None)
        try:
            status, detail, answer = await future
        except asyncio.CancelledError:
            future.cancel()
            raise
        if status:
            raise AppCallError(self.address, status, detail)
        return answer

    def _start(self, path: str, message: bytes, timeout_ms: int, read: Read | None) -> asyncio.Future[Any]:
        """The call's future: ``read``'s value of the call's end, or the end itself without one."""
        token = next(self._tokens)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting[token] = (future, read, path, message, loop.time() + timeout_ms / 1000)
        if not self._outbox:
            loop.call_soon(self._hand_over)
        self._outbox.append((token, path, message, timeout_ms))
        return future

    def _hand_over(self) -> None:
        calls, self._outbox = self._outbox, []
        connection = self._connection
        if connection is not None and not connection.ended and connection.h2.is_draining():
            self._draining.add(connection)  # it finishes the calls it took; new ones go elsewhere
            self._connection = connection = None
        if connection is None or connection.ended or connection.h2.is_closed():  # closed: its socket goes next
            self._dial(calls)
            return
        connection.start(calls)
        self._arm_deadline()

    def _dial(self, calls: list[Call]) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._dial_queue.extend((now, call) for call in calls)
        if self._dialling is None:
            self._dialling = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        number = next(self._connections)
        limit = max(timeout_ms for _, (_, _, _, timeout_ms) in self._dial_queue) / 1000
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _AppConnection(self, number), self.host, self.port), limit
            )
        except (OSError, TimeoutError) as exc:
            queued, self._dial_queue = self._dial_queue, []
            detail = f"cannot connect to {self.address}: {exc or 'no answer in time'}"
            self.settle([(call[0], UNAVAILABLE, detail, b"") for _, call in queued], unanswered=True)
            return
        finally:
            self._dialling = None
        current = self._connection
        if current is not None and not current.ended and not current.h2.is_closed() and not current.h2.is_draining():
            connection.close_spare()  # the redial after a GOAWAY made one meanwhile: the calls go there
            connection = current
        else:
            self._connection = connection
        queued, self._dial_queue = self._dial_queue, []
        now = loop.time()
        # the time spent connecting counts against each call's limit
        late = [(token, path, message, max(1, timeout_ms - round((now - since) * 1000)))
                for since, (token, path, message, timeout_ms) in queued]  # fmt: skip
        connection.start(late)
        self._arm_deadline()

    def _live(self) -> list[_AppConnection]:
        """The connection in use and those finishing their calls after the app's GOAWAY."""
        live = [connection for connection in self._draining if not connection.ended]
        if self._connection is not None and not self._connection.ended:
            live.append(self._connection)
        return live

    def _arm_deadline(self) -> None:
        """One loop timer at the earliest open call's deadline; later ones wait their turn."""
        delays = [delay for connection in self._live() if (delay := connection.h2.next_deadline()) is not None]
        if not delays:
            return
        assert self._loop is not None
        when = self._loop.time() + min(delays)
        if when >= self._deadline_at:
            return
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_at = when
        self._deadline_timer = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._deadline_timer, self._deadline_at = None, math.inf
        for connection in self._live():
            connection.expire()
        self._arm_deadline()

    async def list_subscriptions(self) -> Sequence[TopicSubscription]:
        self._listed_at, self._listed_replacements = self._losses, self._replacements
        try:
            answer = await self._call(f"{SERVICE}/ListTopicSubscriptions", b"", LIST_TIMEOUT_MS)
        except AppCallError as exc:
            if exc.status == grpc.StatusCode.UNIMPLEMENTED.value[0]:
                return []  # an app that subscribes to nothing
            raise
        return [
            TopicSubscription(
                pubsub_name=s.pubsub_name,
                topic=s.topic,
                metadata=dict(s.metadata),
                dead_letter_topic=s.dead_letter_topic,
            )
            for s in pb.ListTopicSubscriptionsResponse.FromString(answer).subscriptions
        ]

    def deliver(self, event: Event, timeout: float) -> asyncio.Future[Verdict]:
        """The app's verdict on ``event``; TimeoutError when it gave none within ``timeout`` s.

        A future, not a coroutine: the call's end is read into a verdict where it arrives."""
        message = event_message(event).SerializeToString()
        return self._start(ON_TOPIC_EVENT, message, max(1, math.ceil(timeout * 1000)), self._verdict)

    def _verdict(self, status: int, detail: str, answer: bytes) -> Verdict:
        if status == DEADLINE_EXCEEDED:
            raise TimeoutError(AppCallError(self.address, status, detail).message)
        if status == UNIMPLEMENTED:
            # No handler will ever take it: retrying would hand it back forever. Layotto and
            # Dapr drop it too; here it goes to the dead-letter topic when there is one.
            log.warning("app at %s does not implement OnTopicEvent (%s): the event is dropped", self.address, detail)
            return Verdict.DROP
        if status:
            raise AppCallError(self.address, status, detail)
        if not answer:  # status SUCCESS (0) and nothing else: the usual answer, not parsed
            return Verdict.SUCCESS
        return VERDICTS.get(pb.TopicEventResponse.FromString(answer).status, Verdict.RETRY)

    async def lost(self) -> None:
        # The counts as they are now, when the cycle starts: a listing made later (see
        # replaced) must not hide a loss that came before it.
        listed_at = self._listed_at
        await self._until(lambda: self._losses > listed_at)

    async def replaced(self) -> None:
        listed_at = self._listed_replacements
        await self._until(lambda: self._replacements > listed_at)

    async def close(self) -> None:
        """Ends the connection; calls still open fail (UNAVAILABLE)."""
        for dialling in (self._dialling, self._redialling):
            if dialling is not None:
                dialling.cancel()
        queued, self._dial_queue = self._dial_queue, []
        self.settle([(call[0], UNAVAILABLE, "the sidecar is stopping", b"") for _, call in queued], unanswered=True)
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer, self._deadline_at = None, math.inf
        connections, self._connection = self._live(), None
        self._draining.clear()
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()


def event_message(event: Event) -> pb.TopicEventRequest:
    request = pb.TopicEventRequest(
        id=event.id,
        source=event.source,
        type=event.type,
        spec_version=event.spec_version,
        data_content_type=event.data_content_type,
        data=event.data,
        topic=event.topic,
        pubsub_name=event.pubsub_name,
    )
    if event.extensions:  # most events have none; an empty map given to the constructor costs 2 µs
        request.metadata.update(event.extensions)
    return request
