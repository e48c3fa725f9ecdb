"""Tests for the Rust extension ``layotto_fast_native`` (install: ``pip install ./native``)."""

from __future__ import annotations

from typing import Literal

import layotto_fast_native as native
import pytest

FrameError = native.FrameError
FrameSplitter = native.FrameSplitter


Protocol = Literal["bolt", "dubbo", "grpc"]


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


BOLT_V1_REQUEST = h(
    "01 01 0001 01 0000006f 01 ffffffff 0000 000a 0000000b00000001 6b 00000001 76" + b"hello world".hex()
)
BOLT_V1_HEARTBEAT = h("01 01 0000 01 0000006f 01 ffffffff 0000 0000 00000000")
BOLT_V1_HEARTBEAT_ACK = h("01 00 0000 01 0000006f 01 0000 0000 0000 00000000")
# v2 request, ver1 2, switch has the CRC bit: class "abc", content "xy", 4-byte CRC.
BOLT_V2_REQUEST_CRC = h("02 02 01 0001 01 00000001 01 01 00000bb8 0003 0000 00000002 616263 7879 deadbeef")
# The same with ver1 1: SOFA Bolt writes no CRC there, whatever the switch says.
BOLT_V2_REQUEST_VER1_1 = h("02 01 01 0001 01 00000001 01 01 00000bb8 0003 0000 00000002 616263 7879")
DUBBO_HEARTBEAT = h("dabb e2 00 0000000000000001 00000001 4e")
DUBBO_EMPTY_BODY = h("dabb 02 14 0000000000000002 00000000")
GRPC_MESSAGE = h("00 00000005") + b"hello"
GRPC_COMPRESSED = h("01 00000002 abcd")

STREAMS: dict[Protocol, list[bytes]] = {
    "bolt": [
        BOLT_V1_REQUEST,
        BOLT_V1_HEARTBEAT,
        BOLT_V2_REQUEST_CRC,
        BOLT_V2_REQUEST_VER1_1,
        BOLT_V1_HEARTBEAT_ACK,
    ],
    "dubbo": [DUBBO_HEARTBEAT, DUBBO_EMPTY_BODY, DUBBO_HEARTBEAT],
    "grpc": [GRPC_MESSAGE, h("00 00000000"), GRPC_COMPRESSED],
}


@pytest.mark.parametrize("protocol", sorted(STREAMS))
def test_whole_stream(protocol: Protocol) -> None:
    frames = STREAMS[protocol]
    s = FrameSplitter(protocol)
    assert s.feed(b"".join(frames)) == frames
    assert s.buffered == 0
    assert s.protocol == protocol
    assert s.max_frame_size == native.DEFAULT_MAX_FRAME_SIZE == 16 * 1024 * 1024


@pytest.mark.parametrize("protocol", sorted(STREAMS))
def test_byte_by_byte(protocol: Protocol) -> None:
    frames = STREAMS[protocol]
    stream = b"".join(frames)
    s = FrameSplitter(protocol)
    got: list[bytes] = []
    for i in range(len(stream)):
        got.extend(s.feed(stream[i : i + 1]))
        assert s.buffered == i + 1 - sum(map(len, got))
    assert got == frames


@pytest.mark.parametrize("protocol", sorted(STREAMS))
def test_split_at_every_boundary(protocol: Protocol) -> None:
    frames = STREAMS[protocol]
    stream = b"".join(frames)
    for cut in range(len(stream) + 1):
        s = FrameSplitter(protocol)
        assert s.feed(stream[:cut]) + s.feed(stream[cut:]) == frames


def test_partial_returns_empty() -> None:
    s = FrameSplitter("bolt")
    assert s.feed(BOLT_V1_REQUEST[:21]) == []
    assert s.buffered == 21
    assert s.feed(b"") == []
    assert s.feed(BOLT_V1_REQUEST[21:]) == [BOLT_V1_REQUEST]


def test_bad_dubbo_magic_and_stays_failed() -> None:
    s = FrameSplitter("dubbo")
    with pytest.raises(FrameError, match=r"dubbo magic: 0xdabc"):
        s.feed(h("dabc") + DUBBO_HEARTBEAT[2:])
    assert s.failed
    assert isinstance(FrameError("x"), ValueError)
    with pytest.raises(FrameError, match="already failed"):
        s.feed(DUBBO_HEARTBEAT)


@pytest.mark.parametrize(
    ("protocol", "data", "message"),
    [
        ("bolt", b"\x03", r"bolt proto: 3"),
        ("bolt", b"\x01\x07", r"bolt type: 7"),
        ("dubbo", DUBBO_HEARTBEAT[:12] + h("ffffffff"), r"dubbo body length: -1"),
        ("grpc", b"\x02", r"grpc compressed flag: 2"),
    ],
)
def test_malformed(protocol: Protocol, data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        FrameSplitter(protocol).feed(data)


def test_oversize() -> None:
    s = FrameSplitter("grpc", max_frame_size=1024)
    with pytest.raises(FrameError, match="grpc frame size 4101 exceeds max_frame_size 1024"):
        s.feed(h("00 00001000"))
    assert FrameSplitter("bolt", 43).feed(BOLT_V1_REQUEST) == [BOLT_V1_REQUEST]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="protocol") as info:
        FrameSplitter("http")  # type: ignore[arg-type]
    assert not isinstance(info.value, FrameError)
    with pytest.raises(ValueError):
        FrameSplitter("bolt", 0)
    with pytest.raises(OverflowError):
        FrameSplitter("bolt", -1)


def test_decode_golden_bolt_request() -> None:
    assert native.decode_bolt_request(BOLT_V1_REQUEST) == (
        111,
        1,
        1,
        1,
        -1,
        "",
        {"k": "v"},
        b"hello world",
    )
    assert native.decode_bolt_request(BOLT_V1_HEARTBEAT) == (
        111,
        1,
        0,
        1,
        -1,
        "",
        {},
        b"",
    )


def test_heartbeat_ack_golden() -> None:
    assert native.encode_bolt_heartbeat_ack(111) == BOLT_V1_HEARTBEAT_ACK


def test_bolt_round_trip() -> None:
    request_id, _type, _cmd, codec, _timeout, cls, header, content = native.decode_bolt_request(BOLT_V1_REQUEST)
    resp = native.encode_bolt_response(request_id, codec, 0, cls, header, content)
    # The response is itself a valid frame for the splitter.
    assert FrameSplitter("bolt").feed(resp) == [resp]
    assert resp[:20] == h("01 00 0002 01 0000006f 01 0000 0000 000a 0000000b")
    assert native.decode_bolt_response(resp) == (
        111,
        2,
        1,
        0,
        "",
        {"k": "v"},
        b"hello world",
    )

    req = native.encode_bolt_request(111, 1, -1, "", {"k": "v"}, b"hello world")
    assert req == BOLT_V1_REQUEST

    hdr = {"service": "com.foo.Bar:1.0", "ключ": "значение"}
    cls = "com.alipay.sofa.rpc.core.request.SofaRequest"
    req = native.encode_bolt_request(2**32 - 1, 11, 3000, cls, hdr, b"\x00\xff", oneway=True)
    decoded = native.decode_bolt_request(req)
    assert decoded == (2**32 - 1, 2, 1, 11, 3000, cls, hdr, b"\x00\xff")
    assert list(decoded[6]) == list(hdr)  # header order preserved


def test_decode_errors() -> None:
    with pytest.raises(FrameError, match="truncated bolt request"):
        native.decode_bolt_request(BOLT_V1_REQUEST[:-1])
    with pytest.raises(FrameError, match="bolt frame length: 44"):
        native.decode_bolt_request(BOLT_V1_REQUEST + b"\x00")
    with pytest.raises(FrameError, match="bolt type: 0"):
        native.decode_bolt_request(BOLT_V1_HEARTBEAT_ACK)
    with pytest.raises(FrameError, match="bolt proto: 3"):
        native.decode_bolt_request(b"\x03" + BOLT_V1_REQUEST[1:])
    with pytest.raises(FrameError, match="bolt crc32: 0xdeadbeef"):
        native.decode_bolt_request(BOLT_V2_REQUEST_CRC)
    # the same frame without the CRC (ver1 1) decodes: the v2 header's fields where v2 puts them
    assert native.decode_bolt_request(BOLT_V2_REQUEST_VER1_1) == (1, 1, 1, 1, 3000, "abc", {}, b"xy")


def test_encode_errors() -> None:
    with pytest.raises(ValueError, match="class_name"):
        native.encode_bolt_response(1, 1, 0, "x" * 40000, {}, b"")
    with pytest.raises(OverflowError):
        native.encode_bolt_response(2**32, 1, 0, "", {}, b"")
    with pytest.raises(TypeError):
        native.encode_bolt_response(1, 1, 0, "", {"k": 1}, b"")  # type: ignore[dict-item]
