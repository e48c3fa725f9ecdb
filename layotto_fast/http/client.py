"""An HTTP/1.1 client for InvokeService's http channel: keep-alive connections per
upstream address, responses parsed by httptools (llhttp, already the server side's
parser), one request at a time per connection.

Chosen by measurement (``bench/http_clients.py``, one request in flight on this kind of
machine): about 80-100 µs of client CPU per call and a p50 of 140-180 µs, where aiohttp
took 190-320 µs and 245-400 µs and httpx over 1 ms of both; and no new dependency.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import httptools

from layotto_fast.runtime.timeouts import within

# Bytes of a response body accepted before the connection is given up, unless a client says less.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Bytes of a response's header lines (and trailers) accepted: llhttp sets no bound of its own.
MAX_RESPONSE_HEAD_BYTES = 1024 * 1024
# Read past that before the head has ended: a read may carry the start of the body with it.
MAX_HEAD_READ_SLACK = 256 * 1024
# An idle connection older than this is closed rather than used: a NAT or load balancer
# may have forgotten it without a word, and a request on it would wait out its timeout.
MAX_IDLE_SECONDS = 90.0
# Requests sent again on a new connection when a kept-alive one turns out closed before
# any byte of the answer came: the idempotent methods (RFC 9110, 9.2.2), and any request
# carrying an Idempotency-Key. Another POST may have been acted upon; it fails instead.
IDEMPOTENT_VERBS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class HttpError(Exception):
    """The connection failed, or the peer sent something that is not HTTP."""


class ClosedUnanswered(HttpError):
    """The connection ended before any byte of the answer came."""


class ResponseTooLarge(HttpError):
    """The answer's body is over its client's limit, or its head over MAX_RESPONSE_HEAD_BYTES."""


class ConnectionsBusy(TimeoutError):
    """The request's deadline came while every connection it may open was busy."""


class _Stray(Exception):
    """Raised in a parser callback to stop reading bytes nobody asked for."""


class _Connection(asyncio.Protocol):
    def __init__(self, max_body: int = MAX_RESPONSE_BYTES) -> None:
        self.transport: asyncio.Transport | None = None
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._response = HttpResponse(0)
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._in_head = False  # header lines come now; after the head, they are trailers
        # Bytes read since the request went out until its answer's head ended: llhttp holds a
        # header line until it ends, so the bound is kept on what is read, not on lines.
        self._head_read = 0
        self._reading_head = False
        # Bytes read after the head since the body last grew: a trailer line (or chunk-size
        # line) that never ends is held by llhttp as it grows, and counted nowhere else.
        self._unparsed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        # The parser cannot skip a HEAD answer's announced body: it is answered at its headers.
        self._head_request = False
        # Set when the answer's length is neither given nor chunked: its body ends at the
        # close, which httptools cannot be told of, so connection_lost completes it.
        self._body_until_close = False
        self.reusable = False
        self.lost = False
        self.answered = False  # some byte of the current request's answer has come
        self.idle_since = 0.0  # the loop's clock when it was last put back idle

    # -- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.answered = True
        if self._reading_head:
            self._head_read += len(data)
            if self._head_read > MAX_RESPONSE_HEAD_BYTES + MAX_HEAD_READ_SLACK:
                self._fail(ResponseTooLarge(f"the response's header lines are over {MAX_RESPONSE_HEAD_BYTES} bytes"))
                return
        else:
            self._unparsed += len(data)
            if self._unparsed > MAX_RESPONSE_HEAD_BYTES + MAX_HEAD_READ_SLACK:
                self._fail(ResponseTooLarge(f"the response's trailer lines are over {MAX_RESPONSE_HEAD_BYTES} bytes"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"the upstream sent a malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is None and self._body_until_close:
            self._finish(reusable=False)
            return
        kind = HttpError if self.answered else ClosedUnanswered
        self._fail(kind(f"the upstream closed the connection{f': {exc}' if exc else ''}"))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self._waiter is None:
            # Bytes past the answer, with nothing asked: the next request's answer would be
            # read from them. The connection is given up, not kept.
            self._fail(HttpError("the upstream sent more than its answer"))
            raise _Stray()  # stops the parser: the headers that follow are no one's
        self._response = HttpResponse(0)
        self._body, self._size, self._head_size = [], 0, 0
        self._body_until_close = False
        self._in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_RESPONSE_HEAD_BYTES:
            self._fail(ResponseTooLarge(f"the response's header lines are over {MAX_RESPONSE_HEAD_BYTES} bytes"))
            return
        if self._in_head:  # trailers do not replace the answer's headers
            self._response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(ResponseTooLarge(f"the response body is over {self._max_body} bytes"))
            return
        self._body.append(body)

    def on_headers_complete(self) -> None:
        self._in_head = False
        status = self._parser.get_status_code()
        self._response.status = status
        if 100 <= status < 200:
            return
        self._reading_head = False
        if self._head_request:
            self._finish(reusable=False)
            return
        headers = self._response.headers
        # chunked only when it is the last coding (RFC 9112, 6.1), as llhttp reads it
        chunked = headers.get("transfer-encoding", "").rsplit(",", 1)[-1].strip().lower() == "chunked"
        self._body_until_close = status not in (204, 304) and "content-length" not in headers and not chunked

    def on_message_complete(self) -> None:
        if _is_interim(self._parser.get_status_code()):
            return  # the final answer follows on the same connection, parsed as the next message
        if self._waiter is None:
            return  # answered already (at a HEAD answer's headers), or nothing was asked
        self._finish(reusable=self._parser.should_keep_alive())

    def _finish(self, reusable: bool) -> None:
        self._body_until_close = False
        self._response.body = b"".join(self._body)
        self.reusable = reusable
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self._response)

    # -- use
    def send(self, data: bytes, head_request: bool = False) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None and self._loop is not None
        self._waiter = self._loop.create_future()
        self._head_request = head_request
        self.reusable = False
        self.answered = False
        self._head_read, self._reading_head, self._unparsed = 0, True, 0
        self.transport.write(data)
        return self._waiter

    def _fail(self, error: HttpError) -> None:
        # Aborted below: never kept for another request, even if an answer came first.
        self.reusable = False
        self.lost = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Ends the connection now, with whatever it has not written: a gentle close would keep
        it open as long as an upstream that stopped reading leaves the request unsent."""
        if self.transport is not None:
            self.transport.abort()


def _is_interim(status: int) -> bool:
    # 101 is not interim: it ends HTTP on the connection (the parser reports an upgrade).
    return 100 <= status < 200 and status != 101


def _replayable(verb: str, headers: dict[str, str]) -> bool:
    return verb in IDEMPOTENT_VERBS or any(name.lower() == "idempotency-key" for name in headers)


def _expire(answer: asyncio.Future[HttpResponse]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


def _expire_turn(turn: asyncio.Future[None], busy: int, address: str) -> None:
    if not turn.done():
        turn.set_exception(ConnectionsBusy(f"all {busy} connections to {address} stayed busy"))


class HttpClient:
    """Keep-alive connections to one ``host:port``: at most ``max_connections`` open at once
    (0: no limit), one request each, the requests past that waiting in turn for one within
    their own timeout; at most ``max_idle`` kept idle. An answer's body over ``max_body``
    bytes fails its request (ResponseTooLarge) as soon as it is."""

    def __init__(
        self, address: str, max_connections: int = 0, max_idle: int = 64, max_body: int = MAX_RESPONSE_BYTES
    ) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self._host, self._port = host.strip("[]"), int(port)
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle
        self._max_body = max_body
        self._max_connections = max_connections
        # Requests holding a turn, one of max_connections when there is a limit; a connection
        # is opened only by a request holding one and finding none idle, so connections never
        # outnumber them.
        self._busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()  # requests waiting for a turn, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        # After close, a request still in flight closes its connection instead of keeping it.
        self._closed = False
        # Closes the idle connections past MAX_IDLE_SECONDS when no request comes to find
        # them: an upstream gone quiet would otherwise keep them (and the peer's) open forever.
        self._reaper: asyncio.TimerHandle | None = None

    async def request(
        self, verb: str, target: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> HttpResponse:
        """One request; raises TimeoutError after ``timeout`` seconds (ConnectionsBusy when it
        was still waiting for a turn), HttpError or OSError when the upstream cannot be reached
        or answers something that is not HTTP. An idempotent request that finds its
        kept-alive connection closed unanswered is sent once more, on a new connection, within
        the same ``timeout``."""
        head = [f"{verb} {target} HTTP/1.1", f"Host: {self.address}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop  # kept: get_running_loop() makes a getpid() system call
        deadline = loop.time() + timeout
        if self._max_connections and (self._busy >= self._max_connections or self._waiting):
            await self._wait_turn(deadline)
        else:
            self._busy += 1
        try:
            return await self._send(data, verb, headers, deadline)
        finally:
            self._end_turn()

    @property
    def in_flight(self) -> int:
        """Requests holding a turn (with no limit, every request in flight holds one)."""
        return self._busy

    async def _send(self, data: bytes, verb: str, headers: dict[str, str], deadline: float) -> HttpResponse:
        assert self._loop is not None
        loop = self._loop
        idle = self._idle_connection(loop.time())
        if idle is not None:
            try:
                return await self._exchange(idle, data, verb, deadline)
            except ClosedUnanswered:
                # The upstream closed it while idle, and its FIN crossed the request.
                if not _replayable(verb, headers):
                    raise
        # Only a new connection goes through within (it makes a Task; asyncio.timeout
        # would need the handler to run in one, and the native transport runs it in none).
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError()
        connecting = asyncio.ensure_future(loop.create_connection(self._new_connection, self._host, self._port))
        try:
            _, connection = await within(connecting, remaining)
        except BaseException:
            # the caller cancelled as the connection was made: nobody else would close it
            if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
                connecting.result()[0].close()
            raise
        return await self._exchange(connection, data, verb, deadline)

    async def _wait_turn(self, deadline: float) -> None:
        assert self._loop is not None
        turn = self._loop.create_future()
        self._waiting.append(turn)
        expiry = self._loop.call_at(deadline, _expire_turn, turn, self._max_connections, self.address)
        try:
            await turn  # handed over by _end_turn: already counted in _busy
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._end_turn()  # handed over, then cancelled before it could run: passed on
            elif turn in self._waiting:
                self._waiting.remove(turn)
            raise
        finally:
            expiry.cancel()

    def _end_turn(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy -= 1

    def _new_connection(self) -> _Connection:
        return _Connection(self._max_body)

    async def _exchange(self, connection: _Connection, data: bytes, verb: str, deadline: float) -> HttpResponse:
        assert self._loop is not None
        answer = connection.send(data, head_request=verb == "HEAD")
        # A kept-alive exchange is timed by a plain timer on the answer's future: no Task,
        # no extra loop passes between the upstream's answer and the caller's.
        expiry = self._loop.call_at(deadline, _expire, answer)
        try:
            response = await answer
        except BaseException:
            connection.abort()
            raise
        finally:
            expiry.cancel()
        if connection.reusable and not connection.lost and not self._closed and len(self._idle) < self._max_idle:
            connection.idle_since = self._loop.time()
            self._idle.append(connection)
            if self._reaper is None:
                self._reaper = self._loop.call_at(connection.idle_since + MAX_IDLE_SECONDS, self._reap)
        else:
            connection.close()
        return response

    def _idle_connection(self, now: float) -> _Connection | None:
        """The connection last put back, after closing those idle for too long."""
        while self._idle and now - self._idle[0].idle_since > MAX_IDLE_SECONDS:
            self._idle.popleft().close()
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost:
                return connection
        return None

    def _reap(self) -> None:
        assert self._loop is not None
        self._reaper = None
        now = self._loop.time()
        while self._idle and (self._idle[0].lost or now - self._idle[0].idle_since >= MAX_IDLE_SECONDS):
            self._idle.popleft().close()
        if self._idle:
            self._reaper = self._loop.call_at(self._idle[0].idle_since + MAX_IDLE_SECONDS, self._reap)

    def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        while self._idle:
            self._idle.pop().close()
