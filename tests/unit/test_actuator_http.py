"""The HTTP/1.1 protocol the actuator is served with (layotto_fast.http): parsing by
llhttp, routing, ordering, limits and timeouts, on a fake transport and on real sockets."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, ParamSpec

import orjson
import pytest
import uvloop

from layotto_fast.http import TEXT, HttpProtocol, Limits, Request, Response, Router

P = ParamSpec("P")
JSON = "application/json"
HEALTH = b'{"status":"UP"}'
GET = b"GET /actuator/health HTTP/1.1\r\nHost: localhost:34999\r\nUser-Agent: test/1.0\r\nAccept: */*\r\n\r\n"
HEAD = GET.replace(b"GET", b"HEAD", 1)
CLOSE = b"Connection: close\r\n"
# Timeouts short enough for a test, long enough for a loaded machine to keep within them.
SHORT = 0.2


def on_loop(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test body on uvloop (the protocol takes its loop from the running one)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        uvloop.run(test(*args, **kwargs))

    return run


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading_paused = False
        self.buffered = 0  # what the client has not read yet, as get_write_buffer_size tells

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        assert not self.reading_paused
        self.reading_paused = True

    def resume_reading(self) -> None:
        assert self.reading_paused
        self.reading_paused = False

    @property
    def output(self) -> bytes:
        return b"".join(self.writes)


class App:
    """The routes the tests talk to; ``calls`` records what reached a handler."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.router = Router()
        add = self.router.add
        add(("GET", "HEAD"), "/actuator/health", self.health)
        add("GET", "/boom", self.boom)
        add("GET", "/bad-return", lambda request: (200, JSON, HEALTH))  # type: ignore[arg-type, return-value]
        add("GET", "/big", lambda request: Response(200, TEXT, b"x" * 100_000))
        add(("POST", "PUT", "PATCH", "DELETE"), "/echo", self.echo)
        add(("GET", "POST", "DELETE"), "/v1.0/state/{storeName}/{key}", self.state)
        add("GET", "/inspect", self.inspect)
        add("GET", "/slow/{seconds}", self.slow)
        add("GET", "/slow-boom", self.slow_boom)
        add("GET", "/gate/{n}", self.gated)

    def health(self, request: Request) -> Response:
        self.calls.append((request.method, request.path))
        return Response(200, JSON, HEALTH)

    def boom(self, request: Request) -> Response:
        self.calls.append((request.method, request.path))
        raise RuntimeError("boom")

    def echo(self, request: Request) -> Response:
        return Response(200, "application/octet-stream", request.method.encode() + b" " + request.body)

    def state(self, request: Request) -> Response:
        return Response(200, JSON, orjson.dumps({"method": request.method, **request.params}))

    def inspect(self, request: Request) -> Response:
        document = {
            "query": request.query,
            "params": request.query_params(),
            "headers": dict(request.headers),
            "X-TWO": request.headers.get("X-TWO"),  # names in any case
        }
        return Response(200, JSON, orjson.dumps(document))

    async def slow(self, request: Request) -> Response:
        await asyncio.sleep(float(request.params["seconds"]))
        return Response(200, TEXT, request.params["seconds"].encode())

    async def slow_boom(self, request: Request) -> Response:
        await asyncio.sleep(0)
        raise RuntimeError("slow boom")

    async def gated(self, request: Request) -> Response:
        await self.gate.wait()
        return Response(200, TEXT, request.params["n"].encode())


def make(limits: Limits | None = None, app: App | None = None) -> tuple[HttpProtocol, FakeTransport, App]:
    app = app or App()
    proto = HttpProtocol(app.router, limits)
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, app


def feed(*chunks: bytes, limits: Limits | None = None) -> tuple[FakeTransport, App]:
    proto, transport, app = make(limits)
    for chunk in chunks:
        proto.data_received(chunk)
    return transport, app


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.005)


def ok(body: bytes = HEALTH, ctype: str = JSON, extra: bytes = b"", head: bool = False) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        ctype.encode(),
        len(body),
        extra,
        b"" if head else body,
    )


def refusal(status: int, reason: str) -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n%s\n" % (
        status,
        reason.encode(),
        len(reason) + 1,
        CLOSE,
        reason.encode(),
    )


# -- requests and answers ----------------------------------------------------------------------


@on_loop
async def test_simple_get() -> None:
    t, app = feed(GET)
    assert t.writes == [ok()]
    assert not t.closed
    assert app.calls == [("GET", "/actuator/health")]


@on_loop
async def test_query_headers_and_trailing_slash() -> None:
    t, _ = feed(b"GET /inspect/?a=1&b=&a=x%20y#frag HTTP/1.1\r\nX-Two: 1\r\nx-two: 2\r\nHost: h\r\n\r\n")
    document = orjson.loads(t.output.split(b"\r\n\r\n", 1)[1])
    assert document["query"] == "a=1&b=&a=x%20y"
    assert document["params"] == {"a": ["1", "x y"], "b": [""]}
    assert document["headers"] == {"x-two": "1, 2", "host": "h"}
    assert document["X-TWO"] == "1, 2"


@on_loop
async def test_path_parameters() -> None:
    t, _ = feed(
        b"GET /v1.0/state/redis/order%2F42%20a HTTP/1.1\r\nHost: h\r\n\r\n"
        b"DELETE /v1.0/state/mem/k HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /v1.0/state/redis HTTP/1.1\r\nHost: h\r\n\r\n"  # one segment short
        b"GET /v1.0/state//k HTTP/1.1\r\nHost: h\r\n\r\n"  # a parameter is never empty
    )
    answers = t.output.split(b"HTTP/1.1 ")[1:]
    assert orjson.loads(answers[0].split(b"\r\n\r\n")[1]) == {
        "method": "GET",
        "storeName": "redis",
        "key": "order/42 a",
    }
    assert orjson.loads(answers[1].split(b"\r\n\r\n")[1]) == {"method": "DELETE", "storeName": "mem", "key": "k"}
    assert answers[2].startswith(b"404 Not Found\r\n") and answers[3].startswith(b"404 Not Found\r\n")
    assert not t.closed


@on_loop
async def test_404_and_405() -> None:
    t, app = feed(
        b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
        b"PUT /actuator/health HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi" + GET
    )
    assert t.output == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\r\nNot Found\n"
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n"
        b"Allow: GET, HEAD\r\n\r\nMethod Not Allowed\n" + ok()
    )
    assert app.calls == [("GET", "/actuator/health")]
    assert not t.closed


@on_loop
async def test_head_has_no_body() -> None:
    t, app = feed(HEAD + GET + b"HEAD /echo HTTP/1.1\r\nHost: h\r\n\r\n" + GET)
    assert t.output.startswith(ok(head=True) + ok() + b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert t.output.endswith(b"Allow: POST, PUT, PATCH, DELETE\r\n\r\n" + ok())
    assert app.calls == [("HEAD", "/actuator/health"), ("GET", "/actuator/health"), ("GET", "/actuator/health")]


@on_loop
async def test_request_bodies() -> None:
    t, _ = feed(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        b"PATCH /echo HTTP/1.1\r\nHost: h\r\n\r\n"
        b"DELETE /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        b"POST /v1.0/state/s/k HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n[]"
    )
    octets = "application/octet-stream"
    assert t.output.startswith(ok(b"POST hello", octets) + ok(b"PUT abcdefg", octets) + ok(b"PATCH ", octets))
    assert ok(b"DELETE ", octets) in t.output and b'"method":"POST"' in t.output
    assert not t.closed


@on_loop
async def test_expect_continue() -> None:
    proto, t, _ = make()
    proto.data_received(b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert t.output == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(b"hi")
    assert t.output == b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"POST hi", "application/octet-stream")


# -- pipelining and split reads ----------------------------------------------------------------

MIXED = (
    GET
    + HEAD
    + b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    + b"PUT /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    + b"GET /nope?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    + GET
)


@on_loop
async def test_pipelined_in_one_write() -> None:
    t, app = feed(GET * 10)
    assert t.writes == [ok() * 10]  # the answers to one read go out in one write
    assert len(app.calls) == 10
    assert not t.closed


@pytest.mark.parametrize("request_bytes", [GET, MIXED])
@on_loop
async def test_split_at_every_byte_boundary(request_bytes: bytes) -> None:
    whole, _ = feed(request_bytes)
    assert not whole.closed and whole.output.count(b"HTTP/1.1 ") == request_bytes.count(b" HTTP/1.1\r\n")
    for i in range(len(request_bytes) + 1):
        t, _ = feed(request_bytes[:i], request_bytes[i:])
        assert t.output == whole.output, i
        assert not t.closed
    for i in range(0, len(request_bytes) + 1, 7):
        for j in range(i, len(request_bytes) + 1, 5):
            t, _ = feed(request_bytes[:i], request_bytes[i:j], request_bytes[j:])
            assert t.output == whole.output, (i, j)


@on_loop
async def test_byte_by_byte() -> None:
    whole, _ = feed(MIXED)
    t, app = feed(*(MIXED[i : i + 1] for i in range(len(MIXED))))
    assert t.output == whole.output
    assert len(app.calls) == 3 and not t.closed


@on_loop
async def test_async_answers_keep_request_order() -> None:
    proto, t, app = make()
    proto.data_received(
        b"GET /slow/0.05 HTTP/1.1\r\nHost: h\r\n\r\nGET /slow/0.01 HTTP/1.1\r\nHost: h\r\n\r\n"
        + GET
        + b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert t.writes == []  # the sync answers wait behind the first async one
    assert app.calls == [("GET", "/actuator/health")]
    await until(lambda: t.output.count(b"HTTP/1.1 ") == 4)
    assert t.output.startswith(ok(b"0.05", TEXT) + ok(b"0.01", TEXT) + ok() + b"HTTP/1.1 404 ")
    assert not t.closed


@on_loop
async def test_pause_reading_when_too_many_answers_wait() -> None:
    proto, t, app = make(Limits(max_pipelined=4))
    proto.data_received(b"".join(b"GET /gate/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3)))
    assert not t.reading_paused
    proto.data_received(b"GET /gate/3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert t.reading_paused
    proto.data_received(b"".join(b"GET /gate/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(4, 10)) + GET)
    await settle()
    assert t.writes == [] and app.calls == []  # read by the transport, but held unparsed
    app.gate.set()
    await settle(20)
    assert t.output == b"".join(ok(str(i).encode(), TEXT) for i in range(10)) + ok()
    assert not t.reading_paused and not t.closed


@on_loop
async def test_many_pipelined_requests_in_one_read_do_not_hold_the_loop() -> None:
    """A read of hundreds of small requests runs a bounded number of handlers per loop pass (every
    gRPC call shares the loop); the rest follow on later passes, answered in order."""
    proto, t, app = make()
    requests = 300
    proto.data_received(GET * requests)
    per_pass = len(app.calls)
    assert 1 <= per_pass <= 16, per_pass
    assert t.output == ok() * per_pass
    proto.pause_writing()  # a client that stopped reading: nothing more runs for it
    await settle(5)
    assert len(app.calls) == per_pass and t.reading_paused
    proto.resume_writing()
    await until(lambda: len(app.calls) == requests)
    assert t.output == ok() * requests
    assert not t.reading_paused and not t.closed


@on_loop
async def test_requests_queued_behind_a_pass_keep_their_order_with_async_ones() -> None:
    proto, t, _ = make()
    slow, nope = b"GET /slow/0.01 HTTP/1.1\r\nHost: h\r\n\r\n", b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
    proto.data_received(GET * 20 + slow + GET * 20 + nope)
    await until(lambda: t.output.count(b"HTTP/1.1 ") == 42)
    assert t.output == ok() * 20 + ok(b"0.01", TEXT) + ok() * 20 + refusal(404, "Not Found").replace(CLOSE, b"")
    assert not t.closed


@on_loop
async def test_write_backpressure_holds_input() -> None:
    proto, t, app = make()
    proto.pause_writing()
    assert t.reading_paused
    proto.data_received(GET * 3)
    assert t.writes == [] and app.calls == []
    proto.resume_writing()
    assert t.output == ok() * 3 and not t.reading_paused


# -- refusals ----------------------------------------------------------------------------------

BAD_REQUESTS = [
    b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n",  # not a method llhttp knows
    b"GET / HTTP/1.x\r\nHost: h\r\n\r\n",
    b"GET / http/1.1\r\nHost: h\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nName : x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",  # smuggling shape
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",  # a TLS hello
    b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",  # HTTP/1.1 without Host (RFC 9112, 3.2)
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts
    b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
]


@pytest.mark.parametrize("bad", BAD_REQUESTS)
@on_loop
async def test_garbage_is_400_and_closes(bad: bytes) -> None:
    t, app = feed(bad + GET)
    assert t.output == refusal(400, "Bad Request")
    assert t.closed and app.calls == []


@on_loop
async def test_400_as_soon_as_llhttp_sees_it() -> None:
    """Not after a head's worth of buffering: the byte that breaks the grammar ends it."""
    for stream, breaking in (
        (b"\x16\x03\x01" + b"\x00" * 20000, 0),
        (b"GET / HTTP/1.1\r\nX: a\x00" + b"b" * 20000, 20),
    ):
        proto, t, _ = make()
        for i in range(len(stream)):
            proto.data_received(stream[i : i + 1])
            if t.closed:
                break
        assert i == breaking and t.output == refusal(400, "Bad Request")


@on_loop
async def test_answers_before_garbage_are_kept() -> None:
    proto, t, _ = make()
    proto.data_received(b"GET /slow/0.02 HTTP/1.1\r\nHost: h\r\n\r\n" + GET + b"\x00garbage")
    assert t.writes == [] and not t.closed  # the refusal waits for its turn
    await until(lambda: t.closed)
    assert t.output == ok(b"0.02", TEXT) + ok() + refusal(400, "Bad Request")
    assert t.closed


OVERSIZE = b"GET /actuator/health HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"


@on_loop
async def test_431_in_one_read_and_in_pieces() -> None:
    t, app = feed(OVERSIZE)
    assert t.output == refusal(431, "Request Header Fields Too Large") and t.closed
    proto, t, app = make()
    for i in range(0, len(OVERSIZE), 1000):
        proto.data_received(OVERSIZE[i : i + 1000])
        if t.closed:
            break
    # refused once 16 KiB of it are counted: the read the head starts in is not, so
    # the parser holds at most one read more than the limit
    assert 16384 <= i + 1000 <= 16384 + 2000
    assert t.output == refusal(431, "Request Header Fields Too Large") and app.calls == []


@on_loop
async def test_431_configurable_and_byte_by_byte() -> None:
    limit = 1024
    head = b"GET /actuator/health HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 2000
    proto, t, _ = make(Limits(max_head=limit))
    for i in range(len(head)):
        proto.data_received(head[i : i + 1])
        if t.closed:
            break
    assert limit < i <= limit + 8
    assert t.output == refusal(431, "Request Header Fields Too Large")
    # many headers, each small
    t, _ = feed(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Some: value\r\n" * 100 + b"\r\n", limits=Limits(max_head=limit))
    assert t.output.startswith(b"HTTP/1.1 431 ") and t.closed


@on_loop
async def test_431_boundary() -> None:
    prefix = b"GET /actuator/health HTTP/1.1\r\nHost: h\r\nX: "
    fits = prefix + b"a" * (16384 - len(prefix) - 200) + b"\r\n\r\n"
    for chunks in ([fits], [fits[:-1], fits[-1:]], [fits[:100], fits[100:9000], fits[9000:]]):
        t, _ = feed(*chunks)
        assert t.output == ok(), len(chunks)
    too_big = prefix + b"a" * 16384 + b"\r\n\r\n"
    for chunks in ([too_big], [too_big[:-1], too_big[-1:]], [too_big[:100], too_big[100:]]):
        t, _ = feed(*chunks)
        assert t.output.startswith(b"HTTP/1.1 431 ") and t.closed, len(chunks)


TOO_LARGE = HTTPStatus(413).phrase  # renamed in Python 3.13


@on_loop
async def test_413_body_limit() -> None:
    limits = Limits(max_body=10)
    proto, t, _ = make(limits)
    # refused on the announced length, before the body is sent
    proto.data_received(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
    assert t.output == refusal(413, TOO_LARGE) and t.closed
    proto, t, _ = make(limits)
    proto.data_received(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n")
    assert not t.closed
    proto.data_received(b"5\r\nghijk\r\n")
    assert t.output == refusal(413, TOO_LARGE) and t.closed
    t, _ = feed(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", limits=limits)
    assert t.output == ok(b"POST 0123456789", "application/octet-stream")


@on_loop
async def test_505_and_upgrade() -> None:
    for line in (b"GET / HTTP/2.0\r\n\r\n", b"GET /actuator/health\r\n\r\n"):  # the second is HTTP/0.9
        t, _ = feed(line + GET)
        assert t.output == refusal(505, "HTTP Version Not Supported") and t.closed
    # an upgrade is answered as a plain request, then the connection ends
    t, _ = feed(GET.replace(b"\r\n\r\n", b"\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n") + b"PRI * HTTP/2.0\r\n")
    assert t.output == ok(extra=CLOSE) and t.closed


# -- connection management ---------------------------------------------------------------------


@on_loop
async def test_connection_close() -> None:
    t, app = feed(GET.replace(b"\r\n\r\n", b"\r\nConnection: Close\r\n\r\n") + GET)
    assert t.writes == [ok(extra=CLOSE)]
    assert t.closed and len(app.calls) == 1
    t, _ = feed(GET.replace(b"\r\n\r\n", b"\r\nconnection: keep-alive,  CLOSE\r\n\r\n"))
    assert t.closed


@on_loop
async def test_connection_close_waits_for_async_answers() -> None:
    proto, t, _ = make()
    proto.data_received(
        b"GET /slow/0.02 HTTP/1.1\r\nHost: h\r\n\r\nGET /slow/0 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET
    )
    assert not t.closed
    await until(lambda: t.closed)
    assert t.output == ok(b"0.02", TEXT) + ok(b"0", TEXT, CLOSE)


@on_loop
async def test_http10() -> None:
    t, _ = feed(b"GET /actuator/health HTTP/1.0\r\n\r\n" + GET)
    assert t.writes == [ok(extra=CLOSE)] and t.closed
    t, _ = feed(b"GET /actuator/health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n" * 2)
    assert t.output == ok(extra=b"Connection: keep-alive\r\n") * 2
    assert not t.closed


@on_loop
async def test_eof_after_pipelined_requests_answers_them() -> None:
    proto, t, _ = make()
    proto.data_received(b"GET /slow/0.01 HTTP/1.1\r\nHost: h\r\n\r\n" + GET)
    assert proto.eof_received() is True  # half-closed: the answers still go out
    await until(lambda: t.closed)
    assert t.output == ok(b"0.01", TEXT) + ok()
    proto, t, _ = make()
    proto.data_received(GET)
    assert proto.eof_received() is False


@on_loop
async def test_nothing_after_close_or_loss() -> None:
    proto, t, app = make()
    proto.data_received(b"GET /slow/0.01 HTTP/1.1\r\nHost: h\r\n\r\n" + GET[:10])
    proto.connection_lost(None)
    proto.data_received(GET[10:])
    await asyncio.sleep(0.03)
    assert t.writes == [] and app.calls == []


@on_loop
async def test_head_timeout() -> None:
    proto, t, _ = make(Limits(head_timeout=SHORT))
    proto.data_received(GET[:20])
    await asyncio.sleep(SHORT / 4)
    proto.data_received(GET[20:40])  # a trickle does not restart the clock
    assert not t.closed
    await until(lambda: t.closed)
    assert t.output == refusal(408, "Request Timeout")
    # each head has its own clock
    proto, t, _ = make(Limits(head_timeout=SHORT))
    for _ in range(3):
        proto.data_received(GET[:20])
        await asyncio.sleep(SHORT / 2)
        proto.data_received(GET[20:])
    assert t.output == ok() * 3 and not t.closed
    # a whole head in time is not cut, even when its body is slow
    proto, t, _ = make(Limits(head_timeout=SHORT))
    proto.data_received(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab")
    await asyncio.sleep(SHORT * 2)
    proto.data_received(b"cd")
    assert t.output == ok(b"POST abcd", "application/octet-stream") and not t.closed


@on_loop
async def test_idle_timeout() -> None:
    proto, t, _ = make(Limits(idle_timeout=SHORT / 4))
    await until(lambda: t.closed)
    assert t.writes == []  # never sent anything
    proto, t, _ = make(Limits(idle_timeout=SHORT))
    started = time.monotonic()
    for _ in range(4):  # each request starts the clock again: 4 gaps add up to more than the timeout
        await asyncio.sleep(SHORT / 3)
        proto.data_received(GET)
    assert not t.closed or time.monotonic() - started > 4 * SHORT  # only a stalled machine
    await until(lambda: t.closed)
    assert t.output == ok() * 4


@on_loop
async def test_body_timeout() -> None:
    """A body that stops arriving is answered 408 and its connection closed: the head timer is
    over and the idle one waits for the request to end, so it held the connection and its body
    for good."""
    proto, t, _ = make(Limits(body_timeout=SHORT))
    proto.data_received(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab")
    await until(lambda: t.closed)
    assert t.output == refusal(408, "Request Timeout") and not t.aborted
    # a body that keeps coming, however slowly, is waited for
    proto, t, _ = make(Limits(body_timeout=SHORT))
    proto.data_received(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n")
    for byte in b"abcd":
        await asyncio.sleep(SHORT / 2)
        proto.data_received(bytes([byte]))
    assert t.output == ok(b"POST abcd", "application/octet-stream") and not t.closed


@on_loop
async def test_a_client_that_reads_nothing_is_aborted_after_the_idle_timeout() -> None:
    """Closing waits for the client to read what is buffered, and this one never does."""
    proto, t, _ = make(Limits(idle_timeout=SHORT))
    proto.data_received(GET)
    proto.pause_writing()
    await until(lambda: t.closed)
    assert t.aborted
    # its answers read in time: nothing happens
    proto, t, _ = make(Limits(idle_timeout=SHORT))
    proto.data_received(GET)
    proto.pause_writing()
    await asyncio.sleep(SHORT / 2)
    proto.resume_writing()
    for _ in range(4):  # kept busy past the time the stall would have been cut
        await asyncio.sleep(SHORT / 4)
        proto.data_received(GET)
    assert not t.closed
    # idle, with answers still buffered: aborted, not closed
    proto, t, _ = make(Limits(idle_timeout=SHORT))
    proto.data_received(GET)
    t.buffered = 100
    await until(lambda: t.closed)
    assert t.aborted


@on_loop
async def test_idle_clock_starts_after_the_answer() -> None:
    proto, t, _ = make(Limits(idle_timeout=SHORT))
    proto.data_received(b"GET /slow/%.2f HTTP/1.1\r\nHost: h\r\n\r\n" % (SHORT * 2))  # twice the idle timeout
    await until(lambda: t.writes)
    assert t.output == ok(b"%.2f" % (SHORT * 2), TEXT) and not t.closed
    await until(lambda: t.closed)


@on_loop
async def test_blank_lines_do_not_keep_a_connection_alive() -> None:
    proto, t, _ = make(Limits(idle_timeout=SHORT))
    proto.data_received(GET)
    for _ in range(10):
        await asyncio.sleep(SHORT / 4)
        if t.closed:
            break
        proto.data_received(b"\r\n")
    assert t.closed and t.output == ok()


# -- handler failures --------------------------------------------------------------------------

SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n\r\n"
    b"Internal Server Error\n"
)


@pytest.mark.parametrize("path", [b"/boom", b"/slow-boom", b"/bad-return"])
@on_loop
async def test_handler_failure_is_500_logged_once(path: bytes, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="layotto_fast.http"):
        proto, t, _ = make()
        proto.data_received(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n%s" % (path, GET))
        await settle()
    assert t.output == SERVER_ERROR + ok()
    assert not t.closed
    records = [r for r in caplog.records if r.name == "layotto_fast.http"]
    assert len(records) == 1 and records[0].exc_info is not None
    assert path.decode() in records[0].getMessage()


@pytest.mark.parametrize(
    "response",
    [
        Response(200, "text/plain\r\nX-Injected: 1", b"x"),
        Response(200, TEXT, "x"),  # type: ignore[arg-type]
        Response(99, TEXT, b"x"),
        Response(600, TEXT, b"x"),
        Response(200.0, TEXT, b"x"),  # type: ignore[arg-type]
        Response(True, TEXT, b"x"),
        Response(204, TEXT, b"not empty"),
        Response(200, TEXT, b"x", (("Content-Length", "5"),)),
        Response(200, TEXT, b"x", (("Bad Name", "v"),)),
        Response(200, TEXT, b"x", (("X-Ok", "v\r\nX-Injected: 1"),)),
    ],
)
@on_loop
async def test_unsendable_response_is_500(response: Response, caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    app.router.add("HEAD", "/fixed", lambda request: response)
    proto, t, _ = make(app=app)
    with caplog.at_level(logging.ERROR, logger="layotto_fast.http"):
        proto.data_received(b"HEAD /fixed HTTP/1.1\r\nHost: h\r\n\r\n")
    assert t.output == SERVER_ERROR[: SERVER_ERROR.index(b"\r\n\r\n") + 4]
    assert len(caplog.records) == 1


@on_loop
async def test_status_codes_and_extra_headers() -> None:
    app = App()
    app.router.add("DELETE", "/gone", lambda request: Response(204))
    app.router.add(
        "GET", "/odd", lambda request: Response(299, TEXT, b"", (("X-Trace", "abc"), ("Cache-Control", "no-store")))
    )
    proto, t, _ = make(app=app)
    proto.data_received(b"DELETE /gone HTTP/1.1\r\nHost: h\r\n\r\nGET /odd HTTP/1.1\r\nHost: h\r\n\r\n")
    assert t.output == (
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 299 Unknown\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n"
        b"X-Trace: abc\r\nCache-Control: no-store\r\n\r\n"
    )


@on_loop
async def test_a_failing_protocol_callback_is_500_not_400(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenRouter(Router):
        def match(self, method: str, path: str) -> Any:
            raise RuntimeError("router bug")

    proto = HttpProtocol(BrokenRouter())
    t = FakeTransport()
    proto.connection_made(t)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="layotto_fast.http"):
        proto.data_received(GET + GET)
    assert t.output == refusal(500, "Internal Server Error") and t.closed
    assert len(caplog.records) == 1 and "router bug" in str(caplog.records[0].exc_info)


def test_limits_must_be_positive() -> None:
    for bad in ({"max_head": 0}, {"max_pipelined": 0}, {"idle_timeout": -1.0}):
        with pytest.raises(ValueError):
            Limits(**bad)


# -- the router --------------------------------------------------------------------------------


def test_router_rejects_bad_routes() -> None:
    router = Router()
    router.add("GET", "/a/{x}", App().health)
    for methods, pattern in [
        ("GET", "/a/{x}/"),  # the same route, trailing slash ignored
        ("get", "/b"),
        ((), "/b"),
        ("GET", "b"),
        ("GET", "/c/{x}/{x}"),
        ("GET", "/c/pre{x}"),
        ("GET", "/c/{1x}"),
    ]:
        with pytest.raises(ValueError):
            router.add(methods, pattern, App().health)


def test_router_match() -> None:
    router = Router()
    health = App().health
    router.add(("GET", "HEAD"), "/s/{store}", health)
    router.add("POST", "/s/{store}", health)
    router.add("PUT", "/s/bulk", health)
    assert router.match("GET", "/s/redis").params == {"store": "redis"}
    assert router.match("POST", "/s/redis/").handler is health
    assert router.match("DELETE", "/s/redis").allowed == ("GET", "HEAD", "POST")
    assert router.match("PUT", "/s/bulk").handler is health
    assert router.match("GET", "/s/bulk").allowed == ("PUT",)  # a static path wins over a pattern
    assert router.match("GET", "/t").handler is None and router.match("GET", "/t").allowed == ()


# -- real sockets ------------------------------------------------------------------------------


def _recv_until_closed(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        assert data, "connection closed early"
        buf += data
    return buf


def _client(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(GET)
        assert _recv_exact(s, len(ok())) == ok()
        # split and pipelined on one keep-alive connection, an async answer first
        s.sendall(b"GET /slow/0.01 HTTP/1.1\r\nHost: h\r\n\r\n" + GET[:7])
        s.sendall(GET[7:] + HEAD + GET)
        expected = ok(b"0.01", TEXT) + ok() + ok(head=True) + ok()
        assert _recv_exact(s, len(expected)) == expected
        s.sendall(
            b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n" * 20 + b"GET /boom HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        assert _recv_until_closed(s) == ok(b"x" * 100_000, TEXT) * 20 + SERVER_ERROR.replace(
            b"\r\n\r\n", b"\r\n" + CLOSE + b"\r\n"
        )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"y" * 100_000)
        expected = ok(b"POST " + b"y" * 100_000, "application/octet-stream")
        assert _recv_exact(s, len(expected)) == expected
        s.sendall(b"\x16\x03\x01garbage")
        assert _recv_until_closed(s) == refusal(400, "Bad Request")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(GET[:30])  # never finishes its head
        assert _recv_until_closed(s) == refusal(408, "Request Timeout")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab")  # never finishes its body
        assert _recv_until_closed(s) == refusal(408, "Request Timeout")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(GET)
        assert _recv_until_closed(s) == ok()  # then idle: closed


def _reader_that_stalls(port: int) -> int:
    """Pipelines answers far beyond the socket buffers, reads none for a while, then reads what
    it can: how many bytes came before the connection ended."""
    requests = 200  # 20 MB of answers
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n" * requests)
        time.sleep(2.0)  # four idle timeouts
        got = 0
        try:
            while data := s.recv(1 << 20):
                got += len(data)
        except ConnectionResetError:
            pass
        assert got < requests * len(ok(b"x" * 100_000, TEXT)), "waited for a client that read nothing"
        return got


def _serve(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], limits: Limits, client: Callable[[int], object]
) -> None:
    """Serve App on a real socket with ``limits`` while ``client(port)`` runs on a thread."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        router = App().router
        server = await loop.create_server(lambda: HttpProtocol(router, limits), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.wait_for(asyncio.to_thread(client, port), 20)
        finally:
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


LOOPS = pytest.mark.parametrize(
    "loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"]
)


@LOOPS
def test_real_server_cuts_a_client_that_reads_nothing(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    _serve(loop_factory, Limits(idle_timeout=0.5), _reader_that_stalls)


@LOOPS
def test_real_server(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    logging.getLogger("layotto_fast.http").disabled = True
    try:
        _serve(loop_factory, Limits(head_timeout=0.5, body_timeout=0.5, idle_timeout=0.5), _client)
    finally:
        logging.getLogger("layotto_fast.http").disabled = False
