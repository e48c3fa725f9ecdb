"""HTTP/1.1 server protocol: llhttp (httptools) parses, a Router picks the handler.

One instance per connection::

    await loop.create_server(lambda: HttpProtocol(router, limits), host, port)

* Requests may be split across reads at any byte or pipelined many to a read;
  answers go out in request order even when an async handler finishes late, and
  the answers to one read are joined into one write.
* Keep-alive by default for HTTP/1.1; ``Connection: close``, HTTP/1.0 without
  keep-alive, and an Upgrade or CONNECT request close after their answer.
* Refusals close the connection after everything queued before them: malformed
  input 400 (as soon as llhttp reports it; an HTTP/1.1 request without a Host header
  and any request with two too), head over ``max_head`` 431, body over
  ``max_body`` 413, HTTP major version other than 1 505, head not complete within
  ``head_timeout`` or a body with no byte for ``body_timeout`` 408. An idle
  connection is closed after ``idle_timeout``, and one whose client has read none
  of its answers for that long is aborted, with what it did not read.
* Unknown path 404, known path with another method 405 with ``Allow``. A handler
  that raises, or returns something that is not a valid Response, answers 500 and
  is logged once; the connection carries on.
* Reading pauses while the transport's write buffer is full or ``max_pipelined``
  answers are waiting, and input already read is kept until it resumes.
* At most ``_RUNS_PER_PASS`` handlers run per loop pass: one read can hold hundreds of
  small pipelined requests (llhttp parses a slice whole), and running them all at once
  would hold the loop, and every gRPC call on it, for as long as they take. The rest
  wait in order, as queued answers, for the next passes (and for a client that reads).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import cast

from layotto_fast.http._parser import ParserError, ParserUpgrade, request_parser, split_target
from layotto_fast.http.messages import CLOSE, CONTINUE, KEEP_ALIVE, TEXT, Headers, Request, Response, encode, plain
from layotto_fast.http.router import Handler, Router

__all__ = ["HttpProtocol", "Limits"]

log = logging.getLogger("layotto_fast.http")


@dataclass(frozen=True, slots=True)
class Limits:
    max_head: int = 16 * 1024  # request line + headers, bytes
    max_body: int = 4 * 1024 * 1024  # Dapr's default request body limit
    head_timeout: float = 10.0  # seconds from a request's first byte to the end of its head
    body_timeout: float = 10.0  # seconds a request's body may go without a byte arriving
    idle_timeout: float = 60.0  # seconds with no request in progress and nothing to answer
    max_pipelined: int = 32  # answers waiting to be written before reading pauses

    def __post_init__(self) -> None:
        for limit in fields(self):
            if not getattr(self, limit.name) > 0:
                raise ValueError(f"Limits.{limit.name} must be positive, got {getattr(self, limit.name)!r}")


# Input is parsed in slices of this size so that a pause takes effect within one:
# llhttp cannot stop in the middle of a buffer and go on later.
_SLICE = 16 * 1024
_RUNS_PER_PASS = 16
_FRAMING_NAME_SIZES = frozenset(len(n) for n in (b"content-length", b"transfer-encoding", b"expect", b"host"))
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_SERVER_ERROR = plain(500)
_NOT_FOUND = plain(404)
_METHOD_NOT_ALLOWED = plain(405)
_refusals: dict[int, bytes] = {}


def _refusal(status: int) -> bytes:
    data = _refusals.get(status)
    if data is None:
        data = _refusals[status] = encode(plain(status), False, CLOSE)
    return data


class _Reject(Exception):
    """Raised from a parser callback to refuse the request: llhttp stops where it is."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Slot:
    """An answer's place in the write order; ``data`` is None until it is ready."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data


class HttpProtocol(asyncio.Protocol):
    def __init__(self, router: Router, limits: Limits | None = None) -> None:
        self._router = router
        self._limits = limits or Limits()
        self._parser = request_parser(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        # the request being parsed
        self._in_message = False
        self._in_head = False
        self._heads = 0  # heads parsed so far: tells whether a slice held nothing but head
        self._head_size = 0  # from the callbacks; llhttp keeps no count
        self._head_slices = 0  # bytes of slices that fell entirely inside the current head
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._length = 0  # Content-Length, for the 413 and 100-continue decisions
        self._chunked = False
        self._expect = False  # Expect: 100-continue
        self._hosts = 0  # Host header lines: exactly one in HTTP/1.1 (RFC 9112, 3.2)
        self._body: list[bytes] = []
        self._body_size = 0
        self._method = ""
        self._http10 = False
        # the answers
        self._queue: deque[_Slot] = deque()  # behind an answer still being computed
        self._out: list[bytes] = []  # ready, in order, for the next write
        self._tasks: set[asyncio.Future[Response]] = set()
        self._runs_left = _RUNS_PER_PASS  # handlers this loop pass may still run
        # parsed requests whose handlers wait for a later pass, each with its queued slot
        self._waiting: deque[tuple[Handler, Request, bytes, _Slot]] = deque()
        self._run_scheduled = False
        self._finishing = False  # no more requests: close once the queue is written
        self._eof = False
        self._held = b""  # input read but not parsed while reading is paused
        self._write_paused = False
        self._reading_paused = False
        # Timers are armed once and moved forward when they fire, not re-armed per request.
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._active = True  # a request began since the idle clock was last set
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_since = 0.0
        self._timed_head = -1  # the head (by count) the head clock is running for
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_input = 0.0  # when bytes last came, for the body clock
        self._write_timer: asyncio.TimerHandle | None = None  # runs while the client reads nothing

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # create_server gives a stream transport
        self._loop = asyncio.get_running_loop()
        self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._finishing = True
        self._queue.clear()
        self._waiting.clear()
        self._held = b""
        for timer in (self._idle_timer, self._head_timer, self._body_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        for task in self._tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._finishing:
            return
        assert self._loop is not None
        self._last_input = self._loop.time()
        self._runs_left = _RUNS_PER_PASS
        if self._held or self._blocked():
            self._held += data
        else:
            self._feed(data)
        self._settle()

    def eof_received(self) -> bool:
        if not self._queue and not self._held:
            return False  # the transport closes once what is written has gone
        self._eof = True  # answer what was asked, then close
        self._settle()
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        self._set_reading_paused(True)
        if self._write_timer is None and self._loop is not None:
            self._write_timer = self._loop.call_later(self._limits.idle_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._settle()

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = self._in_head = self._active = True
        self._head_size = self._head_slices = self._body_size = 0
        self._target = b""
        self._headers = []
        self._body = []
        self._length = 0
        self._chunked = self._expect = False
        self._hosts = 0

    def on_url(self, url: bytes) -> None:
        self._target += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._limits.max_head:
            self._stop(431)
        self._headers.append((name, value))
        if len(name) in _FRAMING_NAME_SIZES:
            self._note_framing(name.lower(), value)

    def _note_framing(self, name: bytes, value: bytes) -> None:
        # llhttp frames the body itself; these only decide 413 before it arrives and 100-continue
        if name == b"content-length":
            try:
                self._length = int(value)
            except ValueError:
                self._stop(400)  # llhttp checks the digits; this is only if it did not
        elif name == b"transfer-encoding":
            self._chunked = True
        elif name == b"expect":
            self._expect = value.lower() == b"100-continue"
        elif name == b"host":
            self._hosts += 1

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        parser = self._parser
        raw_method = parser.get_method()
        self._method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        self._count_head(len(raw_method) + 14)  # spaces, version, blank line
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._stop(505)
        self._http10 = version == "1.0"
        if self._hosts > 1 or (self._hosts == 0 and not self._http10):
            self._stop(400)  # RFC 9112, 3.2: an HTTP/1.1 request has one Host, any request at most one
        if self._length > self._limits.max_body:
            self._stop(413)  # before the client spends time sending it
        if self._expect and (self._length or self._chunked) and not self._http10:
            self._push(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body:
            self._stop(413)
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._finishing:
            return
        # an upgrade hands the rest of the stream to another protocol: not ours to read
        keep_alive = self._parser.should_keep_alive() and not self._parser.should_upgrade()
        if not keep_alive:
            self._finishing = True
            connection = CLOSE
        else:
            connection = KEEP_ALIVE if self._http10 else b""
        raw_path, raw_query = split_target(self._target)
        path, method = raw_path.decode("latin-1"), self._method
        match = self._router.match(method, path)
        if match.handler is None:
            if match.allowed:
                refusal = Response(405, TEXT, _METHOD_NOT_ALLOWED.body, (("Allow", ", ".join(match.allowed)),))
            else:
                refusal = _NOT_FOUND
            self._push(encode(refusal, method == "HEAD", connection))
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(method, path, match.params, raw_query.decode("latin-1"), Headers(self._headers), body)
        if self._runs_left > 0 and not self._waiting:
            self._runs_left -= 1
            self._run(match.handler, request, connection, None)
        else:  # in order, behind the others: run on a later pass
            slot = _Slot()
            self._queue.append(slot)
            self._waiting.append((match.handler, request, connection, slot))

    def _run(self, handler: Handler, request: Request, connection: bytes, slot: _Slot | None) -> None:
        """Run a request's handler; its answer fills ``slot`` (a queued place), or is pushed."""
        try:
            result = handler(request)
        except Exception:
            log.exception("%s %s: the handler raised", request.method, request.path)
            result = _SERVER_ERROR
        if isinstance(result, Response) or not inspect.isawaitable(result):
            data = _encode(result, request, connection)
            if slot is None:
                self._push(data)
            else:
                slot.data = data
            return
        if slot is None:
            slot = _Slot()
            self._queue.append(slot)
        # a future of its own, so that cancelling it on connection loss closes the coroutine
        pending = asyncio.ensure_future(result, loop=self._loop)
        pending.add_done_callback(functools.partial(self._answered, slot, request, connection))
        self._tasks.add(pending)

    def _run_waiting(self) -> None:
        self._run_scheduled = False
        if self._transport is None or self._write_paused:
            return  # resume_writing settles, which schedules this again
        waiting = self._waiting
        for _ in range(min(_RUNS_PER_PASS, len(waiting))):
            self._run(*waiting.popleft())
        self._runs_left = 0  # this pass has had its share: a read in it queues behind
        self._take_ready()
        self._settle()

    # -- parsing -----------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        size = len(data)
        view = memoryview(data) if size > _SLICE else None
        for start in range(0, size, _SLICE):
            if self._finishing:
                return
            if self._blocked():
                self._held = bytes(data[start:])
                return
            self._parse(data if view is None else view[start : start + _SLICE])
            self._flush()

    def _parse(self, piece: bytes | memoryview) -> None:
        in_head, heads = self._in_head, self._heads
        try:
            self._parser.feed_data(piece)
        except ParserUpgrade:
            return  # the upgrade request was answered with Connection: close
        except ParserError as error:
            # httptools chains what a callback raised; nothing chained: the input is malformed
            cause = error.__context__
            if cause is None:
                self._refuse(400)
            elif isinstance(cause, _Reject):
                self._refuse(cause.status)
            elif isinstance(cause, Exception):
                log.error("a parser callback failed", exc_info=cause)
                self._refuse(500)
            else:
                raise cause from error  # KeyboardInterrupt and the like are not the client's doing
            return
        if in_head and self._in_head and heads == self._heads:
            # the callbacks only see a header once it is complete; this catches one
            # that never ends
            self._head_slices += len(piece)
            if self._head_slices > self._limits.max_head:
                self._refuse(431)

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._limits.max_head:
            self._stop(431)

    def _stop(self, status: int) -> None:
        raise _Reject(status)

    # -- answering ---------------------------------------------------------------------------

    def _answered(self, slot: _Slot, request: Request, connection: bytes, done: asyncio.Future[Response]) -> None:
        self._tasks.discard(done)
        if done.cancelled():
            return  # the connection is gone
        error = done.exception()
        if error is not None:
            log.error("%s %s: the handler raised", request.method, request.path, exc_info=error)
        slot.data = _encode(_SERVER_ERROR if error is not None else done.result(), request, connection)
        self._take_ready()
        self._settle()

    def _take_ready(self) -> None:
        """Move the answers at the head of the queue that are ready to the next write."""
        queue = self._queue
        while queue:
            ready = queue[0].data
            if ready is None:
                break
            queue.popleft()
            self._out.append(ready)

    def _push(self, data: bytes) -> None:
        if self._queue:
            self._queue.append(_Slot(data))
        else:
            self._out.append(data)

    def _refuse(self, status: int) -> None:
        if not self._finishing:
            self._finishing = True
            self._push(_refusal(status))

    def _flush(self) -> None:
        out = self._out
        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _settle(self) -> None:
        """After any event: write what is ready, then decide on closing, reading and timers."""
        transport = self._transport
        if transport is None:
            return
        self._flush()
        if self._waiting and not self._run_scheduled and not self._write_paused:
            self._run_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._run_waiting)
        while self._held and not self._finishing and not self._blocked():
            held, self._held = self._held, b""
            self._feed(held)
        if self._eof and not self._held:
            self._finishing = True
        if self._finishing:
            if not self._queue:
                transport.close()
            else:
                self._set_reading_paused(True)
            return
        self._set_reading_paused(self._blocked())
        assert self._loop is not None
        if self._in_head:  # only a head that spans reads: one that ends in its first read costs nothing
            if self._timed_head != self._heads:
                self._timed_head = self._heads
                self._head_since = self._loop.time()
            if self._head_timer is None:
                self._head_timer = self._loop.call_later(self._limits.head_timeout, self._head_timed_out)
        elif self._in_message:  # in the body: the head is complete
            if self._body_timer is None:
                self._body_timer = self._loop.call_later(self._limits.body_timeout, self._body_timed_out)
        elif not self._queue:
            if self._active:  # bytes that start no request (blank lines) do not count
                self._active = False
                self._idle_since = self._loop.time()
            if self._idle_timer is None:
                self._idle_timer = self._loop.call_later(self._limits.idle_timeout, self._idle_timed_out)

    def _blocked(self) -> bool:
        return self._write_paused or len(self._queue) >= self._limits.max_pipelined

    def _set_reading_paused(self, paused: bool) -> None:
        transport = self._transport
        if paused == self._reading_paused or transport is None or transport.is_closing():
            return
        self._reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._transport is not None and self._in_head:  # else _settle arms it for the next head
            self._head_timer = self._expire(self._head_since, self._limits.head_timeout, self._head_timed_out)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._transport is not None and self._in_message and not self._in_head:  # else as for the head
            self._body_timer = self._expire(self._last_input, self._limits.body_timeout, self._body_timed_out)

    def _expire(self, since: float, timeout: float, again: Callable[[], None]) -> asyncio.TimerHandle | None:
        """A request's clock, started at ``since``: a timer calling ``again`` when time is left,
        else the 408 (None). While our own paused reading holds the rest back, it waits."""
        assert self._loop is not None
        left = since + timeout - self._loop.time()
        if self._blocked():  # the rest may be waiting in our own buffer, not the client's
            left = max(left, timeout)
        if left > 0:
            return self._loop.call_later(left, again)
        self._refuse(408)
        self._settle()
        return None

    def _write_stalled(self) -> None:
        self._write_timer = None
        if self._transport is not None and self._write_paused:
            # closing would wait for the client to read what is buffered: it may never do
            self._finishing = True
            self._transport.abort()

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        if self._transport is None or self._in_message or self._queue:
            return  # busy: _settle arms it again once idle
        assert self._loop is not None
        left = self._idle_since + self._limits.idle_timeout - self._loop.time()
        if left > 0:
            self._idle_timer = self._loop.call_later(left, self._idle_timed_out)
            return
        self._finishing = True
        if self._transport.get_write_buffer_size():  # the client has stopped reading as well
            self._transport.abort()
        else:
            self._transport.close()


def _encode(response: object, request: Request, connection: bytes) -> bytes:
    head_only = request.method == "HEAD"
    try:
        if not isinstance(response, Response):
            raise TypeError(f"the handler returned {type(response).__name__}, not a Response")
        return encode(response, head_only, connection)
    except (TypeError, ValueError):
        log.exception("%s %s: the answer cannot be sent", request.method, request.path)
        return encode(_SERVER_ERROR, head_only, connection)
