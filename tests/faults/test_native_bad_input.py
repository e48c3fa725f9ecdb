"""Bad input against the native gRPC transport (h2 in Rust, driven from the event loop).

Every test checks that the offender gets the right HTTP/2 or gRPC error, that a fresh
grpcio connection is still served and the process is alive, and where input could make
the server hold memory, that its RSS stays bounded.

Error codes: h2 (0.4) reports a frame of the wrong size for its type (PING of 7 bytes, ...)
and an undecodable HPACK block as PROTOCOL_ERROR, where RFC 9113 names FRAME_SIZE_ERROR
(section 4.2) and COMPRESSION_ERROR (section 4.3): ``codec/framed_read.rs`` maps every frame
load error to PROTOCOL_ERROR. Both codes are accepted for those cases; the connection must
end with a GOAWAY either way.
"""

from __future__ import annotations

import collections
import gzip
import socket
import threading
import time
from pathlib import Path

import grpc
import pytest
from hyperframe.frame import GoAwayFrame

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast._proto import runtime_pb2_grpc
from tests import sidecar as sidecar_process
from tests.faults import raw_h2
from tests.faults.raw_h2 import Frames, H2Client, RawConnection
from tests.faults.support import MIB, RssSampler, assert_serving, start_native, stop_cleanly

RSS_LIMIT = 50 * MIB
MAX_CONCURRENT_STREAMS = 1024  # the native transport's default
SUBSCRIBE = "/spec.proto.runtime.v1.Runtime/SubscribeConfiguration"
INVALID_ARGUMENT, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 3, 4, 8, 12, 13  # gRPC codes

HELLO = raw_h2.say_hello()
GRPC = raw_h2.grpc_headers()


def settled(raw: RawConnection) -> None:
    """Wait for the server's SETTINGS and its ACK of ours: the handshake is done."""
    raw.wait_for(lambda f: isinstance(f, raw_h2.SettingsFrame) and "ACK" in f.flags, timeout=3)


def assert_goaway(raw: RawConnection, codes: set[int]) -> None:
    raw.read_until_closed(timeout=5)
    goaway = raw.goaway()
    assert goaway is not None, f"no GOAWAY; frames: {[str(f) for f in raw.received]}"
    assert goaway.error_code in codes, f"GOAWAY {goaway.error_code} ({goaway.additional_data!r}), want {codes}"
    assert raw.eof, "the connection stayed open after GOAWAY"


def subscribe_request() -> bytes:
    request = pb.SubscribeConfigurationRequest(store_name="config_demo", keys=["fault-test"])
    return raw_h2.grpc_frame(request.SerializeToString())


# -- malformed frames ---------------------------------------------------------------------------
FRAME_SIZE = {raw_h2.FRAME_SIZE_ERROR, raw_h2.PROTOCOL_ERROR}  # h2 sends PROTOCOL_ERROR, see above
MALFORMED: dict[str, tuple[bytes, set[int]]] = {
    # "GET" read as a frame header is a length of 4 670 804: over SETTINGS_MAX_FRAME_SIZE.
    "http1-after-preface": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", {raw_h2.FRAME_SIZE_ERROR}),
    # 00 01 02: a 258-byte RST_STREAM (must be 4), on stream 0x05060708.
    "binary-garbage-after-preface": (bytes(range(256)) * 4, FRAME_SIZE),
    "length-over-max-frame-size": (raw_h2.raw_frame(raw_h2.DATA, 0, 1, b"x" * 64, length=0xFFFFFF), FRAME_SIZE),
    "ping-of-7-bytes": (raw_h2.raw_frame(raw_h2.PING, 0, 0, b"1234567"), FRAME_SIZE),
    "window-update-of-3-bytes": (raw_h2.raw_frame(raw_h2.WINDOW_UPDATE, 0, 0, b"\0\0\1"), FRAME_SIZE),
    "settings-of-5-bytes": (raw_h2.raw_frame(raw_h2.SETTINGS, 0, 0, b"\0\3\0\0\0"), FRAME_SIZE),
    "rst-stream-of-3-bytes": (raw_h2.raw_frame(raw_h2.RST_STREAM, 0, 1, b"\0\0\x08"), FRAME_SIZE),
    "headers-on-stream-0": (Frames().headers(0, GRPC, end_stream=True), {raw_h2.PROTOCOL_ERROR}),
    "data-on-stream-0": (raw_h2.raw_frame(raw_h2.DATA, raw_h2.END_STREAM, 0, b"abc"), {raw_h2.PROTOCOL_ERROR}),
    "headers-on-even-stream": (Frames().headers(2, GRPC, end_stream=True), {raw_h2.PROTOCOL_ERROR}),
    "continuation-without-headers": (
        raw_h2.raw_frame(raw_h2.CONTINUATION, raw_h2.END_HEADERS, 1, b"\x82"),
        {raw_h2.PROTOCOL_ERROR},
    ),
    "settings-on-a-stream": (raw_h2.raw_frame(raw_h2.SETTINGS, 0, 1, b""), {raw_h2.PROTOCOL_ERROR}),
    "undecodable-hpack": (
        raw_h2.raw_frame(raw_h2.HEADERS, raw_h2.END_HEADERS | raw_h2.END_STREAM, 1, b"\xff\xff\xff\xff\xff"),
        {raw_h2.COMPRESSION_ERROR, raw_h2.PROTOCOL_ERROR},
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_frame_ends_the_connection_with_goaway(native: sidecar_process.Sidecar, case: str) -> None:
    data, codes = MALFORMED[case]
    with RawConnection(native.grpc_port) as raw:
        settled(raw)
        raw.send(data)
        assert_goaway(raw, codes)
    assert_serving(native)


def test_input_after_goaway_gets_a_clean_close(native: sidecar_process.Sidecar) -> None:
    """A PING that crosses the end of the connection is read and dropped: the peer sees FIN, not RST.

    The client's GOAWAY makes h2 end an idle connection at once. Closing a socket with
    unread input makes the kernel answer with a RST, which h2spec reported as failures
    (generic/3.8/1, http2/7/1) and which can destroy a GOAWAY in flight.
    """
    goaway = GoAwayFrame(0, last_stream_id=0, error_code=0).serialize()
    for _ in range(100):  # racy by nature: the PING must land between the server's read and its close
        with RawConnection(native.grpc_port) as raw:
            settled(raw)
            raw.send(goaway)
            raw.send(Frames.ping())
            raw.read_until_closed(timeout=3)
            assert raw.eof and not raw.reset_by_peer
    assert_serving(native)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http1-instead-of-preface"),
        pytest.param(raw_h2.PREFACE[:16], id="preface-cut-short"),
        pytest.param(
            raw_h2.PREFACE + Frames.settings() + raw_h2.raw_frame(raw_h2.DATA, 0, 1, b"x" * 10, length=100),
            id="frame-cut-short",
        ),
    ],
)
def test_broken_stream_then_eof_is_closed(native: sidecar_process.Sidecar, data: bytes) -> None:
    """Not HTTP/2, or cut off mid-frame: the server closes (a GOAWAY may be omitted, RFC 9113 3.4)."""
    with RawConnection(native.grpc_port, preface=False) as raw:
        raw.send(data)
        raw.sock.shutdown(socket.SHUT_WR)
        raw.read_until_closed(timeout=5)
        assert raw.eof, "the server kept the connection open"
        assert not any(isinstance(f, raw_h2.HeadersFrame) for f in raw.received)
    assert_serving(native)


# -- HPACK header bombs ---------------------------------------------------------------------------
def indexed_bomb(frames: Frames) -> bytes:
    """One 4 KB header put in the dynamic table, then referenced 1 000 times: ~4 MB decoded from ~5 KB."""
    block = frames.block(raw_h2.grpc_headers(extra=[("x-bomb", "a" * 4000)] * 1000))
    assert len(block) < 8000
    return raw_h2.raw_frame(raw_h2.HEADERS, raw_h2.END_HEADERS, 1, block) + frames.data(1, raw_h2.grpc_frame(HELLO))


def continued_block(frames: Frames) -> bytes:
    """~100 KB of distinct literal headers split over CONTINUATION frames."""
    block = frames.block(raw_h2.grpc_headers(extra=[(f"x-h{i}", "b" * 1000) for i in range(100)]))
    chunks = [block[i : i + 16_384] for i in range(0, len(block), 16_384)]
    out = raw_h2.raw_frame(raw_h2.HEADERS, 0, 1, chunks[0])
    for i, chunk in enumerate(chunks[1:], 1):
        out += raw_h2.raw_frame(raw_h2.CONTINUATION, raw_h2.END_HEADERS if i == len(chunks) - 1 else 0, 1, chunk)
    return out


def continuation_flood(frames: Frames) -> bytes:
    """A header block that never ends: 20 000 CONTINUATION frames of one tiny header each."""
    out = raw_h2.raw_frame(raw_h2.HEADERS, 0, 1, frames.block(GRPC))
    return out + raw_h2.raw_frame(raw_h2.CONTINUATION, 0, 1, b"\x00\x01a\x01b") * 20_000


BOMBS = {
    "indexed-bomb": indexed_bomb,
    "100k-in-continuations": continued_block,
    "continuation-flood": continuation_flood,
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_header_bomb_is_refused(native: sidecar_process.Sidecar, bomb: str) -> None:
    """Over max_header_list_size (16 KiB) many times: h2 drops the connection, 20 times over, in bounded memory."""
    rss = RssSampler(native)
    for _ in range(20):
        with RawConnection(native.grpc_port) as raw:
            settled(raw)
            raw.send(BOMBS[bomb](raw.frames))
            # h2: ENHANCE_YOUR_CALM "header_list_way_too_large" / "too_many_continuations", or
            # COMPRESSION_ERROR for a block over the size it will even buffer.
            assert_goaway(raw, {raw_h2.ENHANCE_YOUR_CALM, raw_h2.COMPRESSION_ERROR, raw_h2.PROTOCOL_ERROR})
            assert raw.header(1, ":status") is None, "the bomb's request was answered"
        rss.sample()
    rss.assert_growth_below(RSS_LIMIT)
    assert_serving(native)


def test_header_list_just_over_the_limit_gets_431(native: sidecar_process.Sidecar) -> None:
    """A header list a little over 16 KiB, in one frame: 431 and a reset for that stream only."""
    with RawConnection(native.grpc_port) as raw:
        settled(raw)
        assert_a_header_list_just_over_the_limit_costs_its_stream_alone(raw, 1)
    assert_serving(native)


def assert_a_header_list_just_over_the_limit_costs_its_stream_alone(raw: RawConnection, stream: int) -> None:
    """A header list a little over 16 KiB on ``stream``: 431 and a reset for it; the next
    request on the connection is served, and no GOAWAY comes."""
    block = raw.frames.block(raw_h2.grpc_headers(extra=[(f"x-h{i}", "c" * 1000) for i in range(16)]))
    raw.send(raw_h2.raw_frame(raw_h2.HEADERS, raw_h2.END_HEADERS, stream, block))
    raw.send(raw.frames.data(stream, raw_h2.grpc_frame(HELLO), end_stream=True))
    assert raw.wait_ended([stream])
    assert raw.header(stream, ":status") == "431"
    raw.send(raw.frames.grpc_request(stream + 2, HELLO))
    assert raw.wait_ended([stream + 2])
    assert raw.header(stream + 2, ":status") == "200" and raw.grpc_status(stream + 2) == 0
    assert raw.goaway() is None


def test_header_list_just_over_the_limit_gets_431_on_a_unix_socket_too(tmp_path: Path) -> None:
    """On a Unix socket every header block is re-encoded before h2 sees it (the :authority
    repair): a list a little over the limit still costs that stream alone, not the
    connection and the calls open on it."""
    socket_path = str(tmp_path / "sidecar.sock")
    running = start_native(tmp_path, "--grpc-uds", socket_path)
    try:
        with RawConnection(0, unix_path=socket_path) as raw:
            settled(raw)
            raw.send(raw.frames.headers(1, GRPC) + raw.frames.data(1, subscribe_request()))  # stays open
            assert_a_header_list_just_over_the_limit_costs_its_stream_alone(raw, 3)
            assert 1 not in raw.ended, "the open call carries on"
    finally:
        stop_cleanly(running)


UDS_BROKEN = {
    # A table size update cut short: fluke-hpack (which decodes a Unix socket's headers)
    # panics on it; caught, it must end this connection quietly, not print a panic.
    "size-update-cut-short": raw_h2.raw_frame(raw_h2.HEADERS, raw_h2.END_HEADERS, 1, b"\x3f"),
    # A header block that never ends, in empty CONTINUATION frames: no bytes to limit, so
    # they are counted (h2 counts them on TCP, but on a Unix socket never sees them).
    "empty-continuations": raw_h2.raw_frame(raw_h2.HEADERS, 0, 1, b"\x82")
    + raw_h2.raw_frame(raw_h2.CONTINUATION, 0, 1, b"") * 5_000,
}


def test_broken_header_blocks_on_a_unix_socket_end_their_connection_quietly(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "sidecar.sock")
    running = start_native(tmp_path, "--grpc-uds", socket_path)
    try:
        for case, data in UDS_BROKEN.items():
            for _ in range(3):
                with RawConnection(0, unix_path=socket_path) as raw:
                    settled(raw)
                    raw.send(data)
                    raw.read_until_closed(timeout=5)
                    assert raw.eof, f"{case}: the connection stayed open"
        assert_serving(running)
        assert "panicked" not in running.log(), running.log()[-2000:]
    finally:
        stop_cleanly(running)


def test_many_calls_opened_and_cancelled_in_one_read_are_no_attack(native: sidecar_process.Sidecar) -> None:
    """h2 reads all the input at hand before it hands out streams, and by default takes more
    than 20 of them reset while waiting for a GOAWAY-worthy attack: a client cancelling a
    fan-out of 50 calls, all in one write, must not cost the connection its other call."""
    with RawConnection(native.grpc_port) as raw:
        settled(raw)
        raw.send(raw.frames.headers(1, GRPC) + raw.frames.data(1, subscribe_request()))  # stays open
        fan_out = range(3, 103, 2)
        raw.send(b"".join(raw.frames.headers(s, GRPC) + raw.frames.rst_stream(s) for s in fan_out))
        raw.send(raw.frames.grpc_request(201, HELLO))
        assert raw.wait_ended([201]) and raw.grpc_status(201) == 0
        assert raw.goaway() is None and 1 not in raw.ended
    assert_serving(native)


def test_a_long_status_message_is_cut_so_that_clients_read_its_status(native: sidecar_process.Sidecar) -> None:
    """An error message echoing a long input (a 20 KB key, percent-encoded up to three times
    over) would make a trailer grpc-core and grpc-java refuse, and the client would report
    another status: the message is cut to 1 KiB and says how long it was."""
    with grpc.insecure_channel(native.target) as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
        key = "é" * 10_000 + "||x"
        with pytest.raises(grpc.RpcError) as raised:
            stub.SaveState(pb.SaveStateRequest(store_name="in-memory", states=[pb.StateItem(key=key, value=b"v")]))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
        details = raised.value.details() or ""
        assert len(details.encode()) < 1200 and "bytes in all)" in details, details[-200:]


# -- messages over the size limit -----------------------------------------------------------------
def test_message_over_the_configured_limit_is_resource_exhausted(tmp_path: Path) -> None:
    config = tmp_path / "small-messages.yaml"
    config.write_text("max_message_bytes: 1024\n")
    running = start_native(tmp_path, "--config", str(config))
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
            big = pb.SaveStateRequest(store_name="in-memory", states=[pb.StateItem(key="k", value=b"v" * 10_240)])
            with pytest.raises(grpc.RpcError) as raised:
                stub.SaveState(big, timeout=5)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value
            assert "1024" in (raised.value.details() or "")
            # The same channel carries on, and a message under the limit is stored.
            small = pb.SaveStateRequest(store_name="in-memory", states=[pb.StateItem(key="k", value=b"v" * 100)])
            stub.SaveState(small, timeout=5)
            assert stub.GetState(pb.GetStateRequest(store_name="in-memory", key="k"), timeout=5).data == b"v" * 100
        assert_serving(running)
    finally:
        stop_cleanly(running)


def test_declared_length_of_4_gib_is_refused_at_once(native: sidecar_process.Sidecar) -> None:
    """A prefix announcing 4 GiB: RESOURCE_EXHAUSTED from the prefix alone, nothing buffered for it."""
    rss = RssSampler(native)
    with H2Client(native.grpc_port) as client:
        body = raw_h2.grpc_frame(b"x" * 16, declared_length=0xFFFF_FFFF)
        stream_id = client.start(None, body=body, end_stream=False)  # the rest never comes
        client.wait([stream_id])
        response = client.responses[stream_id]
        assert response.grpc_status == RESOURCE_EXHAUSTED, response
        assert client.call(HELLO).grpc_status == 0
    rss.assert_growth_below(RSS_LIMIT)
    assert_serving(native)


def test_requests_never_completed_are_bounded_per_connection(native: sidecar_process.Sidecar) -> None:
    """48 calls of 4 MiB on one connection, each one byte short of its end: the front holds 32 of
    them at most (128 MiB), sheds the calls past that RESOURCE_EXHAUSTED, and the connection
    carries on. Without the bound it held all 192 MiB."""
    rss = RssSampler(native)
    message, calls_sent, held_at_most = 4 * MIB, 48, 32
    body = raw_h2.grpc_frame(b"x" * (message - 1), declared_length=message)
    with H2Client(native.grpc_port, timeout=20) as client:
        calls = []
        for _ in range(calls_sent):
            stream_id = client.start(None, path=raw_h2.SAVE_STATE, body=b"", end_stream=False)
            client.send_body(stream_id, body)
            calls.append(stream_id)
            rss.sample()
        client.receive(0.5)
        shed = [s for s in calls if client.responses[s].done]
        held = [s for s in calls if not client.responses[s].done]
        assert held == calls[:held_at_most], f"{len(held)} calls held: the first {held_at_most} fit the bound"
        for stream_id in shed:
            response = client.responses[stream_id]
            assert response.grpc_status == RESOURCE_EXHAUSTED, response
            assert "not yet complete" in response.grpc_message, response.grpc_message
        rss.assert_growth_below(held_at_most * message + RSS_LIMIT)
        assert client.call(HELLO).grpc_status == 0, "the connection carries on"
        for stream_id in held[:2]:  # their last byte: they complete and are served
            client.send_body(stream_id, b"x", end_stream=True)
        client.wait(held[:2])
        assert [client.responses[s].grpc_status for s in held[:2]] == [INVALID_ARGUMENT] * 2  # bytes of x, no request
    assert_serving(native)


# -- many streams at once --------------------------------------------------------------------------
def test_streams_over_max_concurrent_streams_are_refused(native: sidecar_process.Sidecar) -> None:
    """1 100 requests left open at once: exactly the first 1 024 are accepted and all of those answered."""
    total = 1100
    ids = [1 + 2 * i for i in range(total)]
    with RawConnection(native.grpc_port) as raw:
        settled(raw)
        raw.send(b"".join(raw.frames.headers(s, GRPC) for s in ids))  # no END_STREAM: all stay open
        refused = ids[MAX_CONCURRENT_STREAMS:]
        assert raw.wait_ended(refused, timeout=5), f"{len(set(refused) - raw.ended)} streams over the limit not reset"
        assert {s: raw.resets().get(s) for s in refused} == dict.fromkeys(refused, raw_h2.REFUSED_STREAM)
        accepted = ids[:MAX_CONCURRENT_STREAMS]
        assert not set(accepted) & set(raw.resets()), "a stream within the limit was reset"
        raw.send(b"".join(raw.frames.data(s, raw_h2.grpc_frame(HELLO), end_stream=True) for s in accepted))
        assert raw.wait_ended(accepted, timeout=10)
        assert collections.Counter(raw.grpc_status(s) for s in accepted) == {0: MAX_CONCURRENT_STREAMS}
        assert raw.goaway() is None
    assert_serving(native)


@pytest.mark.parametrize("complete", [True, False], ids=["whole-requests", "headers-only"])
def test_ten_thousand_streams_at_once(native: sidecar_process.Sidecar, complete: bool) -> None:
    """10 000 streams in one burst: refused past the limit (then h2's reset-flood GOAWAY), memory bounded."""
    rss = RssSampler(native)
    message = raw_h2.grpc_frame(HELLO)
    with RawConnection(native.grpc_port, timeout=20) as raw:
        settled(raw)
        burst = bytearray()
        for i in range(10_000):
            burst += raw.frames.headers(1 + 2 * i, GRPC, end_stream=False)
            if complete:
                burst += raw.frames.data(1 + 2 * i, message, end_stream=True)
        sender = threading.Thread(target=raw.send, args=(bytes(burst),), daemon=True)
        sender.start()
        deadline = time.monotonic() + 10
        while not raw.eof and time.monotonic() < deadline:
            raw.read(timeout=0.2)
            rss.sample()
        sender.join(5)
        resets = collections.Counter(raw.resets().values())
        goaway = raw.goaway()
        assert resets[raw_h2.REFUSED_STREAM] > 0 or goaway is not None, "10 000 streams and none refused"
        assert set(resets) <= {raw_h2.REFUSED_STREAM, raw_h2.STREAM_CLOSED}, resets
        if goaway is not None:
            # h2 caps the resets it sends (CVE-2023-44487): ENHANCE_YOUR_CALM "too_many_internal_resets".
            assert goaway.error_code in {raw_h2.ENHANCE_YOUR_CALM, raw_h2.REFUSED_STREAM, raw_h2.NO_ERROR}, goaway
            assert goaway.last_stream_id <= 1 + 2 * (10_000 - 1)
        answered = [s for s in raw.headers if raw.header(s, ":status") == "200"]
        assert all(raw.grpc_status(s) in (None, 0) for s in answered)
    rss.assert_growth_below(RSS_LIMIT)
    assert_serving(native)


# -- a client that never reads -------------------------------------------------------------------
@pytest.mark.parametrize("large_window", [True, False], ids=["client-window-2GiB", "client-window-default"])
def test_client_that_never_reads(native: sidecar_process.Sidecar, large_window: bool) -> None:
    """5 000 pipelined SayHello with 16 KiB echoed back each (80 MB of responses), never read.

    With a 2 GiB window only TCP backpressure can stop the server: it must stop reading
    requests it cannot answer. With the default 64 KiB window, responses wait in h2 and the
    1 024-stream limit caps them.
    """
    requests, payload = 5000, 16 * 1024
    rss = RssSampler(native)
    settings = {"initial_window_size": 2**31 - 1} if large_window else {}
    raw = RawConnection(native.grpc_port, timeout=1.0, settings=settings)
    if large_window:
        raw.send(Frames.window_update(0, 2**31 - 1 - 65_535))
    message = raw_h2.grpc_frame(raw_h2.say_hello("x", payload))
    sent = [0]

    def send_all() -> None:
        for i in range(requests):
            stream_id = 1 + 2 * i
            try:
                raw.sock.sendall(
                    raw.frames.headers(stream_id, GRPC) + raw.frames.data(stream_id, message, end_stream=True)
                )
            except OSError:  # timed out (the server stopped reading) or closed
                return
            sent[0] = i + 1

    sender = threading.Thread(target=send_all, daemon=True)
    try:
        sender.start()
        # Until the sender stalls (or the server gave up on the connection).
        last, still_since = -1, time.monotonic()
        while time.monotonic() - still_since < 1.5:
            rss.sample_for(0.25)
            if sent[0] != last:
                last, still_since = sent[0], time.monotonic()
        rss.sample_for(2.0)  # the client is stalled: the server must hold steady
        assert sent[0] < requests, "all 80 MB went in: the server kept reading from a peer that does not read"
        assert_serving(native)  # others are served meanwhile
        rss.assert_growth_below(RSS_LIMIT)
    finally:
        raw.close()
        sender.join(5)
    time.sleep(0.2)
    assert_serving(native)


# -- malformed gRPC bodies -------------------------------------------------------------------------
# Each case: the request's body (and headers), the status codes gRPC allows for it, and what the
# status message must say was wrong.
BODIES: dict[str, tuple[dict[str, object], set[int], str]] = {
    "two-messages-on-a-unary-call": (
        {"body": raw_h2.grpc_frame(HELLO) * 2},
        {UNIMPLEMENTED, INTERNAL},
        "unary method got more than one request message",
    ),
    "end-stream-inside-the-length-prefix": (
        {"body": raw_h2.grpc_frame(HELLO)[:3]},
        {INTERNAL},
        "request ended inside a message",
    ),
    "end-stream-inside-the-message": (
        {"body": raw_h2.grpc_frame(HELLO)[:-2]},
        {INTERNAL},
        "request ended inside a message",
    ),
    # gRPC's compression spec: a flagged message with no grpc-encoding is INTERNAL
    "compressed-flag-set-without-an-encoding": (
        {"body": raw_h2.grpc_frame(HELLO, compressed=True)},
        {INTERNAL},
        "flagged compressed but the request has no grpc-encoding",
    ),
    "compressed-in-an-encoding-not-supported": (
        {"body": raw_h2.grpc_frame(HELLO, compressed=True), "extra_headers": [("grpc-encoding", "snappy")]},
        {UNIMPLEMENTED},
        "message compression snappy is not supported: identity,gzip",
    ),
    "flagged-gzip-that-is-not-gzip": (
        {"body": raw_h2.grpc_frame(HELLO, compressed=True), "extra_headers": [("grpc-encoding", "gzip")]},
        {INTERNAL},
        "a gzip message cannot be decompressed",
    ),
    "gzip-past-the-message-limit-once-decompressed": (
        {
            "body": raw_h2.grpc_frame(gzip.compress(bytes(4 * MIB + 1)), compressed=True),
            "extra_headers": [("grpc-encoding", "gzip")],
        },
        {RESOURCE_EXHAUSTED},
        "over the limit of 4194304 bytes once decompressed",
    ),
    "no-message": ({"body": b""}, {INTERNAL, UNIMPLEMENTED}, "request has no message"),
    "not-a-request-message": (
        {"body": raw_h2.grpc_frame(b"\xff\xff\xff")},
        {INVALID_ARGUMENT},
        "request is not a valid SayHello message: ",
    ),
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_malformed_grpc_body_gets_a_status(native: sidecar_process.Sidecar, case: str) -> None:
    """A status whose code gRPC allows for the fault and whose message tells the caller what was
    wrong with its request, on a connection that goes on serving."""
    kwargs, codes, words = BODIES[case]
    with H2Client(native.grpc_port) as client:
        response = client.call(None, **kwargs)
        assert response.reset is None, f"reset {response.reset} instead of a status"
        assert response.grpc_status in codes, f"{response.grpc_status} {response.grpc_message!r}, want {codes}"
        assert words in response.grpc_message, f"{response.grpc_message!r}, want it to say {words!r}"
        assert not response.messages
        # The connection is fine: the next call on it is answered.
        assert client.call(HELLO).grpc_status == 0
        assert client.terminated is None and not client.closed
    assert_serving(native)


@pytest.mark.parametrize("compressed", [False, True], ids=["sent-as-is", "gzip"])
def test_a_request_declaring_gzip_is_read_whether_or_not_its_message_is_compressed(
    native: sidecar_process.Sidecar, compressed: bool
) -> None:
    """grpc clients with compression on declare grpc-encoding: gzip, and send a message that
    gzip would not shrink as it is; both were refused UNIMPLEMENTED."""
    message = gzip.compress(HELLO) if compressed else HELLO
    with H2Client(native.grpc_port) as client:
        body = raw_h2.grpc_frame(message, compressed=compressed)
        response = client.call(None, body=body, extra_headers=[("grpc-encoding", "gzip")])
        assert response.grpc_status == 0, response.grpc_message
        assert pb.SayHelloResponse.FromString(bytes(response.body[5:])).hello


def test_a_grpcio_client_with_gzip_compression_is_served(native: sidecar_process.Sidecar) -> None:
    with grpc.insecure_channel(native.target, compression=grpc.Compression.Gzip) as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
        for payload in (b"", b"compressible " * 10_000):
            state = pb.SaveStateRequest(store_name="in-memory", states=[pb.StateItem(key="gz", value=payload)])
            stub.SaveState(state, timeout=5)
            assert stub.GetState(pb.GetStateRequest(store_name="in-memory", key="gz"), timeout=5).data == payload


# -- deadlines -----------------------------------------------------------------------------------
def test_one_millisecond_deadline_keeps_the_connection(native: sidecar_process.Sidecar) -> None:
    """grpcio calls with a 1 ms deadline: any status, but the channel and the server carry on."""
    seen: collections.Counter[grpc.StatusCode] = collections.Counter()
    with grpc.insecure_channel(native.target) as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
        stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="warm"), timeout=5)
        calls = [
            lambda: stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="x"), timeout=0.001),
            lambda: stub.SaveState(
                pb.SaveStateRequest(store_name="in-memory", states=[pb.StateItem(key="d", value=b"v")]), timeout=0.001
            ),
            lambda: stub.GetState(pb.GetStateRequest(store_name="in-memory", key="d"), timeout=0.001),
        ]
        for i in range(300):
            try:
                calls[i % 3]()
                seen[grpc.StatusCode.OK] += 1
            except grpc.RpcError as error:
                seen[error.code()] += 1
        assert set(seen) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}, seen
        reply = stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="after"), timeout=5)
        assert reply.hello == "greetings, after"
    assert_serving(native)


def test_expired_streams_are_released(native: sidecar_process.Sidecar) -> None:
    """grpc-timeout 1m on calls the server holds (SubscribeConfiguration waits for changes): each ends
    DEADLINE_EXCEEDED, and afterwards the connection has all 1 024 stream slots free again."""
    with RawConnection(native.grpc_port) as raw:
        settled(raw)
        ids = [1 + 2 * i for i in range(600)]
        expiring = raw_h2.grpc_headers(SUBSCRIBE, extra=[("grpc-timeout", "1m")])
        hello_expiring = raw_h2.grpc_headers(extra=[("grpc-timeout", "1m")])
        burst = bytearray()
        for n, s in enumerate(ids):
            if n % 2:
                burst += raw.frames.headers(s, expiring) + raw.frames.data(s, subscribe_request(), end_stream=True)
            else:
                burst += raw.frames.headers(s, hello_expiring) + raw.frames.data(
                    s, raw_h2.grpc_frame(HELLO), end_stream=True
                )
        raw.send(bytes(burst))
        assert raw.wait_ended(ids, timeout=10)
        statuses = collections.Counter(raw.grpc_status(s) for s in ids[1::2])
        assert statuses == {DEADLINE_EXCEEDED: len(ids) // 2}, statuses
        assert set(raw.grpc_status(s) for s in ids[::2]) <= {0, DEADLINE_EXCEEDED}
        assert not raw.resets()

        # Every slot is free: 1 024 requests held open are all accepted, the next one is refused.
        held = [ids[-1] + 2 * (i + 1) for i in range(MAX_CONCURRENT_STREAMS + 1)]
        raw.send(b"".join(raw.frames.headers(s, GRPC) for s in held))
        assert raw.wait_ended([held[-1]], timeout=5)
        assert raw.resets() == {held[-1]: raw_h2.REFUSED_STREAM}, f"refused: {sorted(raw.resets())[:5]}..."
        raw.send(b"".join(raw.frames.data(s, raw_h2.grpc_frame(HELLO), end_stream=True) for s in held[:-1]))
        assert raw.wait_ended(held[:-1], timeout=10)
        assert collections.Counter(raw.grpc_status(s) for s in held[:-1]) == {0: MAX_CONCURRENT_STREAMS}
    assert_serving(native)


def test_in_flight_count_returns_to_zero_after_expired_calls(native: sidecar_process.Sidecar) -> None:
    """10 000 held calls ended by grpc-timeout, never more than 500 at once: the next one is still taken."""
    expiring = raw_h2.grpc_headers(SUBSCRIBE, extra=[("grpc-timeout", "1m")])
    with RawConnection(native.grpc_port, timeout=10) as raw:
        settled(raw)
        next_id = 1
        for _ in range(20):
            ids = list(range(next_id, next_id + 1000, 2))
            next_id += 1000
            raw.send(
                b"".join(
                    raw.frames.headers(s, expiring) + raw.frames.data(s, subscribe_request(), end_stream=True)
                    for s in ids
                )
            )
            assert raw.wait_ended(ids, timeout=10)
            assert {raw.grpc_status(s) for s in ids} == {DEADLINE_EXCEEDED}
        raw.send(raw.frames.headers(next_id, expiring) + raw.frames.data(next_id, subscribe_request(), end_stream=True))
        assert raw.wait_ended([next_id], timeout=5)
        status, message = raw.grpc_status(next_id), raw.header(next_id, "grpc-message")
        assert status == DEADLINE_EXCEEDED, f"call 10 001: status {status} {message!r}"
    assert_serving(native)
