"""The actuator's HTTP/1.1 protocol: both implementations, same behaviour."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import types
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from layotto_fast.actuator import http_protocol_py

JSON = b"application/json"
HEALTH = b'{"status":"UP"}'


def _load(name: str) -> types.ModuleType:
    if name == "py":
        return http_protocol_py
    return pytest.importorskip("layotto_fast.actuator.http_protocol")  # type: ignore[no-any-return]


@pytest.fixture(params=["py", "cython"])
def impl(request: pytest.FixtureRequest) -> types.ModuleType:
    return _load(request.param)


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.reading_paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    @property
    def output(self) -> bytes:
        return b"".join(self.writes)


class Router:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, path: str) -> tuple[int, bytes, bytes]:
        self.calls.append((method, path))
        if path == "/actuator/health":
            return 200, JSON, HEALTH
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/bad-return":
            return 200, "text/plain", b"x"  # type: ignore[return-value]
        if path == "/big":
            return 200, b"text/plain", b"x" * 100_000
        return 404, JSON, b'{"error":"not found"}'


RouterFn = Callable[[str, str], tuple[int, bytes, bytes]]


def make(impl: types.ModuleType, router: RouterFn | None = None) -> tuple[Any, FakeTransport, Router]:
    r = Router()
    proto = impl.HttpProtocol(router if router is not None else r)
    t = FakeTransport()
    proto.connection_made(t)
    return proto, t, r


def feed(impl: types.ModuleType, *chunks: bytes) -> tuple[FakeTransport, Router]:
    proto, t, r = make(impl)
    for c in chunks:
        proto.data_received(c)
    return t, r


def ok_response(body: bytes = HEALTH, ctype: bytes = JSON, extra: bytes = b"", head: bool = False) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + ctype
        + b"\r\nContent-Length: %d\r\n" % len(body)
        + extra
        + b"\r\n"
        + (b"" if head else body)
    )


GET = b"GET /actuator/health HTTP/1.1\r\nHost: localhost:34999\r\nUser-Agent: test/1.0\r\nAccept: */*\r\n\r\n"
CLOSE = b"Connection: close\r\n"


def test_simple_get(impl: types.ModuleType) -> None:
    t, r = feed(impl, GET)
    assert t.writes == [ok_response()]
    assert not t.closed
    assert r.calls == [("GET", "/actuator/health")]


def test_query_and_fragment_stripped(impl: types.ModuleType) -> None:
    t, r = feed(impl, b"GET /actuator/health?x=1&y=2 HTTP/1.1\r\n\r\nGET /actuator/health#frag HTTP/1.1\r\n\r\n")
    assert r.calls == [("GET", "/actuator/health")] * 2
    assert t.output == ok_response() * 2


def test_404_from_router(impl: types.ModuleType) -> None:
    t, _ = feed(impl, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert t.output.startswith(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n"
    )
    assert not t.closed


def test_head(impl: types.ModuleType) -> None:
    t, r = feed(impl, GET.replace(b"GET", b"HEAD", 1))
    assert t.writes == [ok_response(head=True)]
    assert b"Content-Length: %d\r\n" % len(HEALTH) in t.output
    assert r.calls == [("HEAD", "/actuator/health")]
    assert not t.closed


def test_head_then_get_keeps_framing(impl: types.ModuleType) -> None:
    t, _ = feed(impl, GET.replace(b"GET", b"HEAD", 1) + GET)
    assert t.output == ok_response(head=True) + ok_response()


MIXED = GET + GET.replace(b"GET", b"HEAD", 1) + b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + GET


@pytest.mark.parametrize("req", [GET, MIXED])
def test_split_at_every_byte_boundary(impl: types.ModuleType, req: bytes) -> None:
    whole, _ = feed(impl, req)
    assert not whole.closed
    for i in range(len(req) + 1):
        t, _ = feed(impl, req[:i], req[i:])
        assert t.output == whole.output, i
        assert not t.closed
    for i in range(0, len(req) + 1, 7):
        for j in range(i, len(req) + 1, 5):
            t, _ = feed(impl, req[:i], req[i:j], req[j:])
            assert t.output == whole.output, (i, j)


def test_byte_by_byte(impl: types.ModuleType) -> None:
    req = GET + GET
    t, r = feed(impl, *(req[i : i + 1] for i in range(len(req))))
    assert t.output == ok_response() * 2
    assert len(r.calls) == 2


def test_pipelined_in_one_write(impl: types.ModuleType) -> None:
    t, r = feed(impl, GET * 10)
    assert t.writes == [ok_response() * 10]  # responses batched into one write
    assert len(r.calls) == 10
    assert not t.closed


def test_pipelined_large_responses_flushed_in_parts(impl: types.ModuleType) -> None:
    t, _ = feed(impl, b"GET /big HTTP/1.1\r\n\r\n" * 3)
    assert len(t.writes) == 3
    assert t.output == ok_response(b"x" * 100_000, b"text/plain") * 3


def test_bare_lf_and_leading_empty_lines(impl: types.ModuleType) -> None:
    t, r = feed(impl, b"\r\n\r\nGET /actuator/health HTTP/1.1\nHost: x\n\n\r\nGET /actuator/health HTTP/1.1\r\n\n")
    assert t.output == ok_response() * 2
    assert len(r.calls) == 2


def test_405(impl: types.ModuleType) -> None:
    t, r = feed(impl, b"DELETE /actuator/health HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    assert t.output == (
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n"
        b"Allow: GET, HEAD\r\n\r\nMethod Not Allowed\n" + ok_response()
    )
    assert r.calls == [("GET", "/actuator/health")]
    assert not t.closed


def test_body_is_discarded(impl: types.ModuleType) -> None:
    body = b"x" * 5000
    req = b"POST /actuator/health HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + body + GET
    t, _ = feed(impl, req[:100], req[100:2000], req[2000:4000], req[4000:])
    assert t.output.startswith(b"HTTP/1.1 405 ")
    assert t.output.endswith(ok_response())
    assert t.output.count(b"HTTP/1.1") == 2
    # a GET with a body: the body is skipped too, never parsed as a request
    t, r = feed(impl, b"GET /actuator/health HTTP/1.1\r\nContent-Length: 20\r\n\r\nGET /boom HTTP/1.1\r\n\r\n" + GET)
    assert t.output == ok_response() * 2
    assert r.calls == [("GET", "/actuator/health")] * 2


def test_expect_continue_with_body_closes(impl: types.ModuleType) -> None:
    t, _ = feed(impl, b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
    assert t.output.startswith(b"HTTP/1.1 405 ")
    assert CLOSE in t.output
    assert t.closed


BAD_REQUESTS = [
    b"GET /actuator/health\r\n\r\n",  # no version
    b"GET  /actuator/health HTTP/1.1\r\n\r\n",  # double space
    b"GET /actuator/health HTTP/1.1 \r\n\r\n",  # trailing space
    b"GET /a b HTTP/1.1\r\n\r\n",
    b"G(T / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.x\r\n\r\n",
    b"GET / http/1.1\r\n\r\n",
    b"GET / HTTP/11\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\n\r\n",
    b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nName : x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length:\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",  # TLS hello-ish garbage
]


@pytest.mark.parametrize("req", BAD_REQUESTS)
def test_400(impl: types.ModuleType, req: bytes) -> None:
    t, r = feed(impl, req + GET)
    assert t.output == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n"
        b"Connection: close\r\n\r\nBad Request\n"
    )
    assert t.closed
    assert r.calls == []


def test_accepted_edge_headers(impl: types.ModuleType) -> None:
    t, _ = feed(
        impl,
        b"GET /actuator/health HTTP/1.1\r\nX-Empty:\r\nX-Tabs:\t a \t\r\nX-Obs: caf\xc3\xa9\r\n"
        b"Content-Length: 0\r\ncontent-length: 00\r\n\r\n",
    )
    assert t.output == ok_response()
    assert not t.closed


def test_505(impl: types.ModuleType) -> None:
    t, _ = feed(impl, b"GET / HTTP/2.0\r\n\r\n")
    assert t.output.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert t.closed


def test_431(impl: types.ModuleType) -> None:
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n"
    expected = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n"
    )
    t, r = feed(impl, big)
    assert t.output == expected and t.closed
    # arriving in pieces: refused as soon as 16 KiB are buffered without an end of head
    proto, t, r = make(impl)
    for i in range(0, len(big), 1000):
        proto.data_received(big[i : i + 1000])
        if t.closed:
            break
    assert t.output == expected
    assert i == 16000
    assert r.calls == []


def test_431_boundary(impl: types.ModuleType) -> None:
    limit = impl.MAX_HEAD_SIZE
    assert limit == 16384
    prefix = b"GET /actuator/health HTTP/1.1\r\nX: "
    fill = limit - len(prefix) - 4
    exact = prefix + b"a" * fill + b"\r\n\r\n"
    assert len(exact) == limit
    for chunks in ([exact], [exact[:-1], exact[-1:]], [exact[:-3], exact[-3:-1], exact[-1:]]):
        t, _ = feed(impl, *chunks)
        assert t.output == ok_response(), len(chunks)
    over = prefix + b"a" * (fill + 1) + b"\r\n\r\n"
    for chunks in ([over], [over[:-1], over[-1:]], [over[:-2], over[-2:]]):
        t, _ = feed(impl, *chunks)
        assert t.output.startswith(b"HTTP/1.1 431 "), len(chunks)


def test_501_chunked(impl: types.ModuleType) -> None:
    t, r = feed(impl, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + GET)
    assert t.output == (
        b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\n"
        b"Connection: close\r\n\r\nNot Implemented\n"
    )
    assert t.closed
    t, r = feed(impl, b"GET /actuator/health HTTP/1.1\r\nTRANSFER-ENCODING: gzip, chunked\r\n\r\n")
    assert t.output.startswith(b"HTTP/1.1 501 ") and t.closed and r.calls == []


def test_connection_close(impl: types.ModuleType) -> None:
    req = GET.replace(b"\r\n\r\n", b"\r\nConnection: Close\r\n\r\n")
    t, r = feed(impl, req + GET)
    assert t.writes == [ok_response(extra=CLOSE)]
    assert t.closed
    assert len(r.calls) == 1
    # token list, case-insensitive
    t, _ = feed(impl, GET.replace(b"\r\n\r\n", b"\r\nconnection: Upgrade ,  CLOSE\r\n\r\n"))
    assert t.closed


def test_http10(impl: types.ModuleType) -> None:
    t, _ = feed(impl, b"GET /actuator/health HTTP/1.0\r\n\r\n" + GET)
    assert t.writes == [ok_response(extra=CLOSE)]
    assert t.closed
    t, _ = feed(impl, b"GET /actuator/health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n" * 2)
    assert t.output == ok_response(extra=b"Connection: keep-alive\r\n") * 2
    assert not t.closed
    t, _ = feed(impl, b"HEAD /actuator/health HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n")
    assert t.output == ok_response(extra=CLOSE, head=True)
    assert t.closed


def test_router_exception_500(impl: types.ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="layotto_fast.actuator"):
        t, r = feed(impl, b"GET /boom HTTP/1.1\r\n\r\n" + GET)
    assert t.output == (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n\r\n"
        b"Internal Server Error\n" + ok_response()
    )
    assert not t.closed
    assert len(r.calls) == 2
    records = [rec for rec in caplog.records if rec.name == "layotto_fast.actuator"]
    assert len(records) == 1
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], RuntimeError)
    assert "/boom" in records[0].getMessage()


@pytest.mark.parametrize(
    "result",
    [
        (200, "text/plain", b"x"),
        (200, b"text/plain", "x"),
        (200, b"text/plain\r\nX-Injected: 1", b"x"),
        (99, b"text/plain", b"x"),
        (600, b"text/plain", b"x"),
        (200.0, b"text/plain", b"x"),
        ("200", b"text/plain", b"x"),
        (2**70, b"text/plain", b"x"),
        (200, b"text/plain"),
        None,
    ],
)
def test_bad_router_return_500(impl: types.ModuleType, result: Any, caplog: pytest.LogCaptureFixture) -> None:
    def bad_router(method: str, path: str) -> Any:
        return result

    proto, t, _ = make(impl, bad_router)
    with caplog.at_level(logging.ERROR, logger="layotto_fast.actuator"):
        proto.data_received(b"HEAD / HTTP/1.1\r\n\r\n")
    assert t.output == (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n\r\n"
    )
    assert len(caplog.records) == 1


def test_other_status_codes(impl: types.ModuleType) -> None:
    from http import HTTPStatus

    for code in (HTTPStatus.SERVICE_UNAVAILABLE, 299, 204):

        def fixed(method: str, path: str, code: int = code) -> tuple[int, bytes, bytes]:
            return code, b"text/plain", b""

        proto, t, _ = make(impl, fixed)
        proto.data_received(b"GET / HTTP/1.1\r\n\r\n")
        reason = {503: b"Service Unavailable", 299: b"Unknown", 204: b"No Content"}[int(code)]
        assert t.output == b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n" % (code, reason)


def test_nothing_after_close_and_lost(impl: types.ModuleType) -> None:
    proto, t, r = make(impl)
    proto.data_received(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    proto.data_received(GET)
    assert len(r.calls) == 1
    proto, t, r = make(impl)
    proto.data_received(GET[:10])
    proto.connection_lost(None)
    proto.data_received(GET[10:])
    assert r.calls == [] and t.writes == []
    assert proto.eof_received() is False


def test_bytearray_and_memoryview_input(impl: types.ModuleType) -> None:
    proto, t, _ = make(impl)
    proto.data_received(bytearray(GET[:20]))
    proto.data_received(memoryview(GET[20:]))
    assert t.output == ok_response()


def test_backpressure(impl: types.ModuleType) -> None:
    router = Router()
    t = FakeTransport()
    orig_write = t.write

    def write(data: bytes) -> None:
        orig_write(data)
        proto.pause_writing()  # the transport's buffer is "full" after every write

    t.write = write  # type: ignore[method-assign]
    proto = impl.HttpProtocol(router)
    proto.connection_made(t)
    n = 5
    big = b"GET /big HTTP/1.1\r\n\r\n"
    proto.data_received(big * n)
    assert len(t.writes) == 1  # stopped after the first flush
    assert t.reading_paused
    proto.data_received(big)  # a transport may deliver a little more: held, not answered
    assert len(t.writes) == 1
    for i in range(n):
        proto.resume_writing()
        assert len(t.writes) == i + 2
    assert t.output == ok_response(b"x" * 100_000, b"text/plain") * (n + 1)
    assert not t.closed
    proto.resume_writing()
    assert not t.reading_paused


def _mutate(rng: random.Random, base: bytes) -> bytes:
    b = bytearray(base)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        i = rng.randrange(len(b) + 1)
        if op < 0.4 and b:
            b[min(i, len(b) - 1)] = rng.choice(b" \r\n\t:,?#/\x00\x7f\xff0aAHTP1.-")
        elif op < 0.7:
            if rng.random() < 0.3:
                b[i:i] = bytes([rng.randrange(256)])
            else:
                b[i:i] = rng.choice([b"\r\n", b"\n", b" ", b":", b"\r"])
        elif b:
            del b[i : i + rng.randint(1, 3)]
    return bytes(b)


def test_implementations_agree_on_random_input() -> None:
    cy = _load("cython")
    rng = random.Random(1234)
    bases = [
        GET,
        GET.replace(b"GET", b"HEAD", 1),
        b"GET /actuator/health?q HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
        b"GET /boom HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /nope HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
    ]
    logging.getLogger("layotto_fast.actuator").disabled = True
    try:
        for _ in range(3000):
            req = b"".join(_mutate(rng, rng.choice(bases)) for _ in range(rng.randint(1, 3)))
            cuts = sorted(rng.randrange(len(req) + 1) for _ in range(rng.randint(0, 3)))
            chunks: list[bytes] = [req[a:b] for a, b in zip([0, *cuts], [*cuts, len(req)], strict=True)]
            tp, rp = feed(http_protocol_py, *chunks)
            tc, rc = feed(cy, *chunks)
            assert (tc.output, tc.closed, rc.calls) == (tp.output, tp.closed, rp.calls), req
            tw, _ = feed(cy, req)
            assert (tw.output, tw.closed) == (tc.output, tc.closed), (req, cuts)
    finally:
        logging.getLogger("layotto_fast.actuator").disabled = False


def _recv_until_closed(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        assert data, "connection closed early"
        buf += data
    return buf


def test_real_uvloop_server(impl: types.ModuleType) -> None:
    router = Router()

    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(GET)
            assert _recv_exact(s, len(ok_response())) == ok_response()
            # split and pipelined on one keep-alive connection
            s.sendall(GET[:7])
            s.sendall(GET[7:] + GET.replace(b"GET", b"HEAD", 1) + GET)
            expected = ok_response() + ok_response(head=True) + ok_response()
            assert _recv_exact(s, len(expected)) == expected
            s.sendall(b"GET /big HTTP/1.1\r\n\r\n" * 20 + b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n")
            data = _recv_until_closed(s)
            assert data == ok_response(b"x" * 100_000, b"text/plain") * 20 + (
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: 22\r\nConnection: close\r\n\r\nInternal Server Error\n"
            )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"BREW /pot HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nX Y: z\r\n\r\n")
            data = _recv_until_closed(s)
            assert data.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
            assert data.endswith(b"Connection: close\r\n\r\nBad Request\n")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /actuator/health HTTP/1.0\r\n\r\n")
            assert _recv_until_closed(s) == ok_response(extra=CLOSE)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: impl.HttpProtocol(router), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.wait_for(asyncio.to_thread(client, port), 20)
        finally:
            server.close()
            await server.wait_closed()

    logging.getLogger("layotto_fast.actuator").disabled = True
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    finally:
        logging.getLogger("layotto_fast.actuator").disabled = False
    assert ("GET", "/boom") in router.calls
