"""The http channel's client and request line against a real HTTP server on loopback that
answers each request with the exact bytes a test scripts: interim 1xx answers, bodies
that end at the close, HEAD answers, request-targets that need escaping, and the
per-address clients rpc_target_address makes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Callable
from types import TracebackType

import pytest

from layotto_fast.components.invoke.config import InvokeSettings, TargetSpec
from layotto_fast.components.invoke.http import MAX_ADDRESS_CLIENTS, HttpChannel, HttpChannelConfig
from layotto_fast.components.invoke.targets import build_targets
from layotto_fast.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, Unavailable
from layotto_fast.http import client as http_client
from layotto_fast.http.client import ClosedUnanswered, HttpClient, HttpError
from layotto_fast.runtime.invoke import InvokeRequest

# (bytes to send back, whether to close the connection after them) for a request's head.
Script = Callable[[bytes], tuple[bytes, bool]]


class ScriptedUpstream:
    """Reads HTTP/1.1 requests (head and Content-Length body) and answers each with what
    ``script`` returns for its head, on one connection until the script closes it."""

    def __init__(self, script: Script, gate: asyncio.Event | None = None) -> None:
        self._script = script
        self._gate = gate  # when given, each answer waits for it to be set
        self.heads: list[bytes] = []
        self.connections = 0
        self.closed_by_client = 0
        self.address = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_client += 1
                    return
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                await reader.readexactly(length)
                self.heads.append(head)
                if self._gate is not None:
                    await self._gate.wait()
                answer, close = self._script(head)
                writer.write(answer)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()


def request_line(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0]


def test_interim_1xx_answers_are_skipped_for_the_final_one() -> None:
    def script(head: bytes) -> tuple[bytes, bool]:
        body = request_line(head).split(b" ")[1]
        interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
        return interim + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), False

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            client = HttpClient(upstream.address)
            first = await client.request("POST", "/one", {}, b"x", 2.0)
            second = await client.request("POST", "/two", {}, b"", 2.0)
            client.close()
        assert (first.status, first.body, second.status, second.body) == (200, b"/one", 200, b"/two")
        assert "link" not in first.headers, "the final answer's headers only"
        assert upstream.connections == 1, "the connection is kept for the next request"

    asyncio.run(scenario())


def test_a_body_that_ends_at_the_close_is_the_answer() -> None:
    answers = [
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nalso until the close",
    ]

    def script(head: bytes) -> tuple[bytes, bool]:
        return answers.pop(0), True

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            client = HttpClient(upstream.address)
            first = await client.request("GET", "/", {}, b"", 2.0)
            second = await client.request("GET", "/", {}, b"", 2.0)
            client.close()
        assert (first.status, first.body, first.headers["content-type"]) == (200, b"until the close", "text/plain")
        assert second.body == b"also until the close"
        assert upstream.connections == 2, "a connection that ended the body is not reused"

    asyncio.run(scenario())


def test_an_answer_cut_short_of_its_length_is_still_an_error() -> None:
    async def scenario() -> None:
        script: Script = lambda head: (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True)  # noqa: E731
        async with ScriptedUpstream(script) as upstream:
            client = HttpClient(upstream.address)
            with pytest.raises(HttpError, match="closed the connection"):
                await client.request("GET", "/", {}, b"", 2.0)

    asyncio.run(scenario())


def test_a_head_answer_completes_at_its_headers() -> None:
    def script(head: bytes) -> tuple[bytes, bool]:
        if head.startswith(b"HEAD "):
            # The length of the body a GET would get, and no body: the connection stays open.
            return b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\nX-Kind: head\r\n\r\n", False
        return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget", False

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            client = HttpClient(upstream.address)
            started = time.monotonic()
            answer = await client.request("HEAD", "/", {}, b"", 2.0)
            assert time.monotonic() - started < 1.0, "not held until the timeout"
            assert (answer.status, answer.headers["x-kind"], answer.body) == (200, "head", b"")
            after = await client.request("GET", "/", {}, b"", 2.0)
            client.close()
        assert after.body == b"get"
        assert upstream.connections == 2, "the HEAD's connection is not reused"

    asyncio.run(scenario())


def test_a_closed_client_keeps_no_connection_a_request_in_flight_ends_on() -> None:
    """As when the channel drops an address's client while a call through it is waiting."""

    async def scenario() -> None:
        gate = asyncio.Event()
        async with ScriptedUpstream(echo_request_line, gate) as upstream:
            client = HttpClient(upstream.address)
            in_flight = asyncio.ensure_future(client.request("GET", "/late", {}, b"", 2.0))
            while not upstream.heads:
                await asyncio.sleep(0.01)
            client.close()
            gate.set()
            assert (await in_flight).body == b"GET /late HTTP/1.1"
            for _ in range(100):
                if upstream.closed_by_client:
                    break
                await asyncio.sleep(0.01)
            assert upstream.closed_by_client == 1

    asyncio.run(scenario())


def echo_request_line(head: bytes) -> tuple[bytes, bool]:
    line = request_line(head)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(line), line), False


def test_the_request_target_is_percent_encoded_as_utf8() -> None:
    async def scenario() -> None:
        async with ScriptedUpstream(echo_request_line) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=upstream.address))
            request = InvokeRequest(id="web", method="orders/日本 #1", data=b"", verb="GET",
                                    querystring="q=a b&done=%41&rate=100%&k=é")  # fmt: skip
            answer = await channel.call(request)
            kept = await channel.call(InvokeRequest(id="web", method="/a/b;v=1:x@y", data=b"", querystring="p=/x?y"))
            joined = await channel.call(InvokeRequest(id="web", method="find?id=7", data=b"", querystring="a=1"))
            for bad in ("a\r\nX-Evil: 1", "a\nb"):
                with pytest.raises(InvalidArgument, match=r"message\.method"):
                    await channel.call(InvokeRequest(id="web", method=bad, data=b""))
            with pytest.raises(InvalidArgument, match=r"querystring"):
                await channel.call(InvokeRequest(id="web", method="m", data=b"", querystring="a=1\r\n"))
            await channel.close()
        assert answer.data == b"GET /orders/%E6%97%A5%E6%9C%AC%20%231?q=a%20b&done=%41&rate=100%25&k=%C3%A9 HTTP/1.1"
        assert kept.data == b"GET /a/b;v=1:x@y?p=/x?y HTTP/1.1", "reserved characters stay as they are"
        assert joined.data == b"GET /find?id=7&a=1 HTTP/1.1", "a method's own query and the querystring: one query"

    asyncio.run(scenario())


def test_a_malformed_rpc_target_address_is_the_callers_mistake() -> None:
    async def scenario() -> None:
        channel = HttpChannel(HttpChannelConfig(address="127.0.0.1:1"))
        for bad in ("10.0.0.5", "10.0.0.5:70000", "10.0.0.5:0", "10.0.0.5:http", ":80", "::1:80", "h:²"):
            with pytest.raises(InvalidArgument, match="rpc_target_address") as caught:
                await channel.call(InvokeRequest(id="web", method="m", data=b"", target_address=bad))
            assert repr(bad) in caught.value.message
        await channel.close()

    asyncio.run(scenario())


def refused_addresses(count: int) -> list[str]:
    """Loopback addresses nothing listens on (ports bound, then let go, together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_per_address_clients_are_bounded_least_recently_used_first() -> None:
    async def call(channel: HttpChannel, address: str) -> None:
        await channel.call(InvokeRequest(id="web", method="m", data=b"", target_address=address, timeout_ms=2000))

    async def refused(channel: HttpChannel, address: str) -> None:
        with pytest.raises(Unavailable):
            await call(channel, address)

    async def scenario() -> None:
        async with ScriptedUpstream(echo_request_line) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=f"localhost:{upstream.address.rpartition(':')[2]}"))
            others = refused_addresses(2 * MAX_ADDRESS_CLIENTS)
            await call(channel, upstream.address)  # its connection stays idle in its client
            for address in others[: MAX_ADDRESS_CLIENTS - 1]:
                await refused(channel, address)
            await call(channel, upstream.address)  # the most recently used again
            assert (upstream.connections, upstream.closed_by_client) == (1, 0), "its client was kept"
            for address in others[MAX_ADDRESS_CLIENTS - 1 : 2 * MAX_ADDRESS_CLIENTS - 2]:
                await refused(channel, address)
            assert upstream.closed_by_client == 0, "still one of the most recent"
            await refused(channel, others[-1])
            for _ in range(100):
                if upstream.closed_by_client:
                    break
                await asyncio.sleep(0.01)
            assert upstream.closed_by_client == 1, "the least recently used client was dropped and closed"
            await call(channel, upstream.address)
            assert upstream.connections == 2
            await channel.close()

    asyncio.run(scenario())


def closing_unanswered_second_requests() -> Script:
    """Answers a connection's first request and closes at its second, unanswered: as when
    the upstream closes an idle kept-alive connection just as a request is sent on it."""
    served = 0

    def script(head: bytes) -> tuple[bytes, bool]:
        nonlocal served
        served += 1
        if served % 2 == 0:
            return b"", True
        return echo_request_line(head)

    return script


@pytest.mark.parametrize(
    ("verb", "headers", "replayed"),
    [
        ("GET", {}, True),
        ("PUT", {}, True),
        ("DELETE", {}, True),
        ("POST", {}, False),
        ("POST", {"Idempotency-Key": "k-1"}, True),
    ],
)
def test_a_kept_alive_connection_closed_unanswered_is_retried_only_when_idempotent(
    verb: str, headers: dict[str, str], replayed: bool
) -> None:
    async def scenario() -> None:
        async with ScriptedUpstream(closing_unanswered_second_requests()) as upstream:
            client = HttpClient(upstream.address)
            first = await client.request(verb, "/one", headers, b"", 2.0)
            assert first.body == f"{verb} /one HTTP/1.1".encode()
            if replayed:
                second = await client.request(verb, "/two", headers, b"body", 2.0)
                assert second.body == f"{verb} /two HTTP/1.1".encode()
                assert upstream.connections == 2, "sent again on a new connection"
                assert [request_line(h) for h in upstream.heads].count(second.body) == 2
            else:
                with pytest.raises(ClosedUnanswered, match="closed the connection"):
                    await client.request(verb, "/two", headers, b"body", 2.0)
                assert upstream.connections == 1, "a POST that may have been acted upon is not sent again"
            client.close()

    asyncio.run(scenario())


def test_a_connection_idle_too_long_is_closed_instead_of_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_client, "MAX_IDLE_SECONDS", 0.05)

    async def scenario() -> None:
        async with ScriptedUpstream(echo_request_line) as upstream:
            client = HttpClient(upstream.address)
            await client.request("GET", "/", {}, b"", 2.0)
            await client.request("GET", "/", {}, b"", 2.0)
            assert upstream.connections == 1, "a connection idle a moment is reused"
            await asyncio.sleep(0.1)
            await client.request("GET", "/", {}, b"", 2.0)
            assert upstream.connections == 2
            for _ in range(100):
                if upstream.closed_by_client:
                    break
                await asyncio.sleep(0.01)
            assert upstream.closed_by_client == 1, "the stale one was closed"
            client.close()

    asyncio.run(scenario())


def test_a_connection_left_idle_is_closed_without_another_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_client, "MAX_IDLE_SECONDS", 0.05)

    async def scenario() -> None:
        async with ScriptedUpstream(echo_request_line) as upstream:
            client = HttpClient(upstream.address)
            await client.request("GET", "/", {}, b"", 2.0)
            for _ in range(100):
                if upstream.closed_by_client:
                    break
                await asyncio.sleep(0.01)
            assert upstream.closed_by_client == 1, "closed once idle too long, with no request to find it"
            assert upstream.connections == 1
            client.close()

    asyncio.run(scenario())


def test_the_message_content_type_is_sent_once_whatever_the_metadata_says() -> None:
    def script(head: bytes) -> tuple[bytes, bool]:
        types = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-type:")]
        body = b"|".join(types)
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), False

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=upstream.address))
            typed = await channel.call(InvokeRequest(
                id="web", method="m", data=b"{}", content_type="application/json",
                headers={"content-type": "text/plain", "x-kept": "1"},
            ))  # fmt: skip
            untyped = await channel.call(
                InvokeRequest(id="web", method="m", data=b"{}", headers={"content-type": "text/plain"})
            )
            await channel.close()
        assert typed.data == b"Content-Type: application/json"
        assert untyped.data == b"content-type: text/plain", "without a message content type, the metadata's goes"

    asyncio.run(scenario())


def test_an_answer_over_the_size_limit_is_resource_exhausted() -> None:
    """The limit is the sidecar's max_message_bytes (build_targets is given it): an answer
    past it could never be sent, and was read whole, up to 64 MiB, before being refused."""
    script: Script = lambda head: (b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b"x" * 40, False)  # noqa: E731

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            settings = InvokeSettings(targets=(TargetSpec(id="web", channel="http", address=upstream.address),))
            channel = build_targets(settings, lambda: None, 16)["web"].channel  # no mesh: http only
            with pytest.raises(ResourceExhausted, match="over 16 bytes"):
                await channel.call(InvokeRequest(id="web", method="m", data=b""))
            port = upstream.address.rsplit(":", 1)[1]
            elsewhere = InvokeRequest(id="web", method="m", data=b"", target_address=f"localhost:{port}")
            with pytest.raises(ResourceExhausted, match="over 16 bytes"):  # a client per named address too
                await channel.call(elsewhere)
            await channel.close()

    asyncio.run(scenario())


def test_the_kernel_giving_up_a_connect_is_unavailable_and_the_deadline_is_deadline_exceeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel connect timeout (ETIMEDOUT, after minutes) cannot be made on loopback: the
    client's request is replaced by one raising it, a stand-in named as such."""
    raised: list[BaseException] = []

    async def stand_in_request(self: HttpClient, *args: object) -> None:
        raise raised[0]

    monkeypatch.setattr(HttpClient, "request", stand_in_request)

    async def scenario() -> None:
        channel = HttpChannel(HttpChannelConfig(address="127.0.0.1:1"))
        raised[:] = [TimeoutError(errno.ETIMEDOUT, "Connection timed out")]
        with pytest.raises(Unavailable, match="Connection timed out"):
            await channel.call(InvokeRequest(id="web", method="m", data=b""))
        raised[:] = [TimeoutError()]
        with pytest.raises(DeadlineExceeded, match="within 3000 ms"):
            await channel.call(InvokeRequest(id="web", method="m", data=b""))
        await channel.close()

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within 5 s"
        await asyncio.sleep(0.005)


def test_calls_past_max_connections_wait_for_a_connection_and_reuse_it() -> None:
    """Each call in flight held a connection of its own, opened as needed: a burst of calls
    to a slow upstream opened sockets without bound."""

    async def scenario() -> None:
        gate = asyncio.Event()
        async with ScriptedUpstream(echo_request_line, gate) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=upstream.address, max_connections=2))
            calls = [asyncio.ensure_future(channel.call(InvokeRequest(id="web", method=f"m{i}", data=b"")))
                     for i in range(6)]  # fmt: skip
            await _until(lambda: len(upstream.heads) == 2, "two requests at the upstream")
            await asyncio.sleep(0.1)
            assert (upstream.connections, len(upstream.heads)) == (2, 2), "the other four wait"
            gate.set()
            answers = await asyncio.gather(*calls)
            await channel.close()
        assert [a.data for a in answers] == [f"GET /m{i} HTTP/1.1".encode() for i in range(6)]
        assert upstream.connections == 2, "the waiting calls went over the two connections"

    asyncio.run(scenario())


def test_a_burst_past_64_keeps_its_connections_for_the_next_one() -> None:
    """Idle connections were kept to 64 whatever max_connections said: a burst of 100 calls
    closed 36 of its connections, and the next burst opened them again."""

    async def scenario() -> None:
        gate = asyncio.Event()
        async with ScriptedUpstream(echo_request_line, gate) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=upstream.address, max_connections=128))
            for burst in range(2):
                calls = [asyncio.ensure_future(channel.call(InvokeRequest(id="web", method=f"m{i}", data=b"")))
                         for i in range(100)]  # fmt: skip
                wanted = 100 * (burst + 1)
                await _until(lambda: len(upstream.heads) == wanted, "the burst at the upstream")  # noqa: B023
                gate.set()
                await asyncio.gather(*calls)
                gate.clear()
            await channel.close()
        assert upstream.connections == 100, "the second burst went over the first one's connections"

    asyncio.run(scenario())


def test_a_call_still_waiting_for_a_connection_at_its_deadline_says_so() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        async with ScriptedUpstream(echo_request_line, gate) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=upstream.address, max_connections=1))
            first = asyncio.ensure_future(channel.call(InvokeRequest(id="web", method="first", data=b"")))
            await _until(lambda: len(upstream.heads) == 1, "the first request at the upstream")
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match=r"within 200 ms: all 1 connections to .* busy") as caught:
                await channel.call(InvokeRequest(id="web", method="second", data=b"", timeout_ms=200))
            assert 0.15 < time.monotonic() - started < 2
            assert "max_connections" in caught.value.message
            gate.set()
            assert (await first).data == b"GET /first HTTP/1.1"
            third = await channel.call(InvokeRequest(id="web", method="third", data=b""))
            client = channel._own_client
            assert (client.in_flight, len(client._waiting)) == (0, 0), "the expired wait gave back no turn"
            await channel.close()
        assert third.data == b"GET /third HTTP/1.1"
        assert [request_line(h) for h in upstream.heads] == [b"GET /first HTTP/1.1", b"GET /third HTTP/1.1"]
        assert upstream.connections == 1

    asyncio.run(scenario())


def test_a_turn_is_not_lost_to_a_waiting_call_that_is_cancelled() -> None:
    async def scenario() -> None:
        async with ScriptedUpstream(echo_request_line) as upstream:
            client = HttpClient(upstream.address, max_connections=1)
            client._busy += 1  # the one turn, held here as a request in flight holds it
            cancelled = asyncio.ensure_future(client.request("GET", "/cancelled", {}, b"", 5.0))
            handed = asyncio.ensure_future(client.request("GET", "/handed", {}, b"", 5.0))
            after = asyncio.ensure_future(client.request("GET", "/after", {}, b"", 5.0))
            await asyncio.sleep(0.05)
            cancelled.cancel()  # while it waits
            await asyncio.sleep(0)
            # The turn given back goes to "handed", cancelled before it can run: it must pass
            # the turn on, or "after" would wait out its timeout.
            client._end_turn()
            handed.cancel()
            answer = await asyncio.wait_for(after, 2)
            client.close()
        assert answer.body == b"GET /after HTTP/1.1"
        assert cancelled.cancelled() and handed.cancelled()
        assert [request_line(h) for h in upstream.heads] == [b"GET /after HTTP/1.1"]

    asyncio.run(scenario())


def test_bytes_past_an_answer_end_its_connection_instead_of_answering_the_next_request() -> None:
    def script(head: bytes) -> tuple[bytes, bool]:
        body = request_line(head).split(b" ")[1]
        # one byte more than announced: it would be read as the start of the next answer
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sH" % (len(body), body), False

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=upstream.address))
            first = await channel.call(InvokeRequest(id="web", method="one", data=b"", verb="POST"))
            # at once: the connection given up for the stray byte must not be taken again
            second = await channel.call(InvokeRequest(id="web", method="two", data=b"", verb="POST"))
            await channel.close()
        assert (first.data, second.data) == (b"/one", b"/two")
        assert upstream.connections == 2, "the connection with the stray byte was not kept"

    asyncio.run(scenario())


def test_an_answers_header_lines_are_bounded_and_trailers_do_not_replace_its_headers() -> None:
    def script(head: bytes) -> tuple[bytes, bool]:
        if b"/huge" in request_line(head):
            return b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1024 * 1024 + 1) + b"\r\nContent-Length: 0\r\n\r\n", False
        trailed = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: Content-Type\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Type: text/evil\r\n\r\n")  # fmt: skip
        return trailed, False

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=upstream.address))
            answer = await channel.call(InvokeRequest(id="web", method="trailed", data=b""))
            with pytest.raises(ResourceExhausted, match="header lines are over 1048576 bytes"):
                await channel.call(InvokeRequest(id="web", method="huge", data=b""))
            await channel.close()
        assert (answer.data, answer.content_type) == (b"ok", "text/plain")

    asyncio.run(scenario())


def test_the_target_id_goes_in_the_id_header_as_layotto_sends_it_and_bad_headers_are_refused() -> None:
    def script(head: bytes) -> tuple[bytes, bool]:
        lines = head.split(b"\r\n")
        ids = b",".join(line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(b"id:"))
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ids), ids), False

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            channel = HttpChannel(HttpChannelConfig(address=upstream.address))
            answer = await channel.call(InvokeRequest(id="orders", method="m", data=b"", headers={"ID": "caller's"}))
            unicode = await channel.call(InvokeRequest(id="订单", method="m", data=b""))
            for headers, problem in (({"x-a": "a\x00b"}, "control character"), ({"x-a": "中"}, "cannot carry"),
                                     ({"bad name": "v"}, "not an HTTP header name"),
                                     ({"x:y": "v"}, "not an HTTP header name")):  # fmt: skip
                with pytest.raises(InvalidArgument, match=problem):
                    await channel.call(InvokeRequest(id="orders", method="m", data=b"", headers=headers))
            with pytest.raises(InvalidArgument, match="a host name this channel cannot use"):
                await channel.call(InvokeRequest(id="orders", method="m", data=b"", target_address="a..b:80"))
            await channel.close()
        assert answer.data == b"orders", "one id header, the target's"
        assert unicode.data == "订单".encode(), "a target id past Latin-1 goes as its UTF-8 bytes, as Layotto's"

    asyncio.run(scenario())


def test_a_request_that_times_out_unsent_ends_its_connection_at_once() -> None:
    """Closed gently, a connection whose upstream stopped reading stayed open, the rest of
    the request still queued, for as long as the upstream did not read."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as server:
            server.setblocking(False)
            channel = HttpChannel(HttpChannelConfig(address=f"127.0.0.1:{server.getsockname()[1]}"))
            call = asyncio.ensure_future(
                channel.call(InvokeRequest(id="web", method="m", data=b"x" * 32_000_000, verb="POST", timeout_ms=300))
            )
            connection, _ = await loop.sock_accept(server)
            with connection:
                with pytest.raises(DeadlineExceeded):
                    await call
                received = 0
                while True:  # the upstream reads now: what the kernel held, then the end
                    chunk = await asyncio.wait_for(loop.sock_recv(connection, 1 << 20), 5)
                    if not chunk:
                        break
                    received += len(chunk)
                assert received < 32_000_000, "the rest of the request was dropped with the connection"
            await channel.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("start", "what"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Endless: ", "header lines are over"),
        # a trailer: after the head, where only the body was counted
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Endless: ", "trailer lines are over"),
    ],
)
def test_a_header_line_that_never_ends_is_bounded_too(start: bytes, what: str) -> None:
    """llhttp holds a header line until it ends: counted by lines, one that never ended grew
    for the whole timeout (a trailer's did until this was counted after the head too)."""

    async def scenario() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(start)
            with contextlib.suppress(ConnectionError):
                for _ in range(64):  # 4 MiB of one line, no end
                    writer.write(b"a" * 65536)
                    await writer.drain()
                await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = HttpClient(address)
        started = time.monotonic()
        with pytest.raises(http_client.ResponseTooLarge, match=what):
            await client.request("GET", "/", {}, b"", 10.0)
        assert time.monotonic() - started < 3
        client.close()
        server.close()

    asyncio.run(scenario())


def test_a_connection_made_as_its_caller_is_cancelled_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller cancelled in the turn its connect finished: the connection was neither used
    nor pooled nor closed, and stayed open until the upstream closed it (Go servers never
    do). The race is made certain here: the cancel is raised once the connect is done."""

    async def cancelled_once_done(awaitable: object, seconds: float | None) -> object:
        await awaitable  # type: ignore[misc]
        raise asyncio.CancelledError

    monkeypatch.setattr(http_client, "within", cancelled_once_done)

    async def scenario() -> None:
        async with ScriptedUpstream(echo_request_line) as upstream:
            client = HttpClient(upstream.address)
            with pytest.raises(asyncio.CancelledError):
                await client.request("GET", "/", {}, b"", 5.0)
            await _until(lambda: upstream.closed_by_client == 1, "the connection closed")
            assert upstream.connections == 1
            client.close()

    asyncio.run(scenario())
