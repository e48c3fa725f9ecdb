"""Blocking HTTP/2 clients for fault tests against the native transport.

Two levels:

* :class:`H2Client` drives python-hyper's ``h2`` state machine over a plain socket:
  well-formed gRPC requests whose responses, trailers and resets are collected per stream.
* :class:`RawConnection` + :class:`Frames` write frames byte for byte (``hyperframe`` and
  ``hpack``, the libraries under ``h2``), so a test can send what ``h2`` itself would refuse
  to produce (bad lengths, frames on stream 0, 10 000 streams past the server's limit), and
  read back every frame the server sends, up to the connection's end.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
from google.protobuf import any_pb2
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from layotto_fast._proto import runtime_pb2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SAY_HELLO = "/spec.proto.runtime.v1.Runtime/SayHello"
SAVE_STATE = "/spec.proto.runtime.v1.Runtime/SaveState"

# HTTP/2 error codes (RFC 9113 section 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# Frame types and flags, for hand-made frames.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

# Settings identifiers.
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 2, 3, 4, 5
MAX_HEADER_LIST_SIZE = 6


# -- gRPC bodies -------------------------------------------------------------------------------
def grpc_frame(message: bytes, *, compressed: bool = False, declared_length: int | None = None) -> bytes:
    """The 5-byte gRPC prefix (compressed flag, u32 length) then the message."""
    length = len(message) if declared_length is None else declared_length
    return struct.pack(">BI", 1 if compressed else 0, length) + message


def say_hello(name: str = "x", payload: int = 0) -> bytes:
    """A serialized SayHelloRequest to the ``helloworld`` service, with ``payload`` bytes in ``data``."""
    request = runtime_pb2.SayHelloRequest(service_name="helloworld", name=name)
    if payload:
        request.data.CopyFrom(any_pb2.Any(type_url="type.googleapis.com/x", value=b"p" * payload))
    return request.SerializeToString()


def grpc_headers(
    path: str = SAY_HELLO, authority: str = "localhost", extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


def grpc_messages(body: bytes) -> list[bytes]:
    """Split a response body into its gRPC messages."""
    messages, offset = [], 0
    while offset + 5 <= len(body):
        _, length = struct.unpack_from(">BI", body, offset)
        messages.append(body[offset + 5 : offset + 5 + length])
        offset += 5 + length
    return messages


# -- level 1: the h2 state machine ---------------------------------------------------------------
@dataclass
class Response:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code, if the server reset the stream

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    @property
    def grpc_status(self) -> int | None:
        """From the trailers, or from the headers of a trailers-only response."""
        value = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if value is None else int(value)

    @property
    def grpc_message(self) -> str:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))

    @property
    def messages(self) -> list[bytes]:
        return grpc_messages(bytes(self.body))


class H2Client:
    """A blocking HTTP/2 client on ``h2``: send gRPC requests, collect per-stream responses."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", timeout: float = 5.0, settings: dict[str, int] | None = None
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings({getattr(h2.settings.SettingCodes, k.upper()): v for k, v in settings.items()})
        self.responses: dict[int, Response] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(
        self,
        message: bytes | None,
        *,
        path: str = SAY_HELLO,
        extra_headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        end_stream: bool = True,
    ) -> int:
        """Open a stream with a gRPC request (``message`` framed, or ``body`` as is); return its id."""
        stream_id = self.conn.get_next_available_stream_id()
        self.responses[stream_id] = Response()
        payload = body if body is not None else (grpc_frame(message) if message is not None else b"")
        headers = grpc_headers(path, extra=extra_headers)
        self.conn.send_headers(stream_id, headers, end_stream=not payload and end_stream)
        if payload:
            self.conn.send_data(stream_id, payload, end_stream=end_stream)
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, payload: bytes, *, end_stream: bool = False) -> bool:
        """Send ``payload`` on an open stream as flow control allows, reading the server's window
        updates meanwhile. False when the stream ended or was reset before all of it went."""
        deadline = time.monotonic() + self.timeout
        view = memoryview(payload)
        while view:
            if self.responses[stream_id].done or self.closed or self.terminated is not None:
                return False
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stream {stream_id}: no window for {len(view)} bytes")
                self.receive(0.05)
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(stream_id, chunk.tobytes(), end_stream=end_stream and not view)
            self.flush()
        return True

    def call(self, message: bytes | None, **kwargs: object) -> Response:
        stream_id = self.start(message, **kwargs)  # type: ignore[arg-type]
        self.wait([stream_id])
        return self.responses[stream_id]

    def wait(self, stream_ids: Sequence[int], timeout: float | None = None) -> None:
        """Read until every stream ended or was reset, or the connection ended."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not all(self.responses[s].done for s in stream_ids):
            if self.closed or self.terminated is not None:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"streams {[s for s in stream_ids if not self.responses[s].done]} still open")
            self.receive(remaining)

    def receive(self, timeout: float) -> list[h2.events.Event]:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return []
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            self._record(event)
        self.flush()
        return events

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
            return
        stream_id = getattr(event, "stream_id", None)
        if stream_id is None:
            return
        response = self.responses.setdefault(stream_id, Response())
        if isinstance(event, h2.events.ResponseReceived):
            response.headers.update(_text_headers(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            response.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            response.trailers.update(_text_headers(event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            response.ended = True
        elif isinstance(event, h2.events.StreamReset):
            response.reset = int(event.error_code)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text_headers(headers: Iterable[tuple[bytes | str, bytes | str]] | None) -> list[tuple[str, str]]:
    return [(_text(name), _text(value)) for name, value in headers or ()]


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


# -- level 2: raw frames -------------------------------------------------------------------------
def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes, length: int | None = None) -> bytes:
    """A frame header (with ``length`` as declared, which need not be the payload's) and payload."""
    length = len(payload) if length is None else length
    return length.to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


class Frames:
    """Builds client frames; header blocks share one HPACK encoder, as on one connection."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def block(self, headers: Iterable[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(list(headers)))

    def headers(
        self, stream_id: int, headers: Iterable[tuple[str, str]], *, end_stream: bool = False, end_headers: bool = True
    ) -> bytes:
        """Built by hand: no check of the stream id, so stream 0 is possible."""
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return raw_frame(HEADERS, flags, stream_id, self.block(headers))

    @staticmethod
    def continuation(stream_id: int, fragment: bytes, *, end_headers: bool = True) -> bytes:
        return raw_frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, fragment)

    @staticmethod
    def data(stream_id: int, payload: bytes, *, end_stream: bool = False, max_frame: int = 16_384) -> bytes:
        """DATA frames of at most ``max_frame`` bytes (the default SETTINGS_MAX_FRAME_SIZE)."""
        chunks = [payload[i : i + max_frame] for i in range(0, len(payload), max_frame)] or [b""]
        return b"".join(
            raw_frame(DATA, END_STREAM if end_stream and i == len(chunks) - 1 else 0, stream_id, chunk)
            for i, chunk in enumerate(chunks)
        )

    def grpc_request(self, stream_id: int, message: bytes, *, extra: Iterable[tuple[str, str]] = ()) -> bytes:
        """HEADERS then one DATA frame (END_STREAM) carrying ``message`` with its gRPC prefix."""
        return self.headers(stream_id, grpc_headers(extra=extra)) + self.data(
            stream_id, grpc_frame(message), end_stream=True
        )

    @staticmethod
    def settings(values: dict[str, int] | None = None, *, ack: bool = False) -> bytes:
        """SETTINGS with ``values`` named like ``initial_window_size``."""
        frame = SettingsFrame(0, {_SETTING_IDS[k]: v for k, v in (values or {}).items()})
        if ack:
            frame.flags.add("ACK")
        return frame.serialize()

    @staticmethod
    def window_update(stream_id: int, increment: int) -> bytes:
        return WindowUpdateFrame(stream_id, increment).serialize()

    @staticmethod
    def rst_stream(stream_id: int, code: int = CANCEL) -> bytes:
        return RstStreamFrame(stream_id, code).serialize()

    @staticmethod
    def priority(stream_id: int, depends_on: int = 0, weight: int = 255) -> bytes:
        return PriorityFrame(stream_id, depends_on=depends_on, stream_weight=weight).serialize()

    @staticmethod
    def ping(opaque: bytes = b"faulttst") -> bytes:
        return PingFrame(0, opaque).serialize()


_SETTING_IDS = {
    "header_table_size": HEADER_TABLE_SIZE,
    "enable_push": ENABLE_PUSH,
    "max_concurrent_streams": MAX_CONCURRENT_STREAMS,
    "initial_window_size": INITIAL_WINDOW_SIZE,
    "max_frame_size": MAX_FRAME_SIZE,
    "max_header_list_size": MAX_HEADER_LIST_SIZE,
}


class RawConnection:
    """A blocking socket that writes bytes as given and parses every frame the server sends.

    ``preface=True`` sends the client preface and an (optionally non-empty) SETTINGS frame first.
    The server's SETTINGS are acknowledged automatically, as a client must.
    """

    def __init__(
        self,
        port: int,
        *,
        preface: bool = True,
        timeout: float = 5.0,
        settings: dict[str, int] | None = None,
        unix_path: str | None = None,
    ) -> None:
        """To loopback ``port``, or to the Unix socket at ``unix_path`` when given."""
        if unix_path is None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix_path)
        self.frames = Frames()
        self.decoder = hpack.Decoder(max_header_list_size=1 << 20)
        self.received: list[Frame] = []
        self.headers: dict[int, list[tuple[str, str]]] = {}  # decoded header blocks per stream, in order
        self.ended: set[int] = set()  # streams the server ended (END_STREAM) or reset
        self._resets: dict[int, list[int]] = {}
        self.eof = False  # the server closed (FIN or RST)
        self.reset_by_peer = False
        self._buffer = bytearray()
        if preface:
            self.send(PREFACE + Frames.settings(settings))

    def send(self, data: bytes) -> bool:
        """Write everything; False when the server already closed the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.eof = True
            return False
        return True

    def read(self, until: Callable[[Frame], bool] | None = None, timeout: float = 5.0) -> list[Frame]:
        """Frames received until ``until(frame)`` holds, the connection ends, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        got: list[Frame] = []
        while not self.eof:
            frame = self._next_frame()
            if frame is not None:
                got.append(frame)
                if until is not None and until(frame):
                    break
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                break
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                self.reset_by_peer, chunk = True, b""
            if not chunk:
                self.eof = True
                # Frames already buffered still count.
                while (frame := self._next_frame()) is not None:
                    got.append(frame)
                break
            self._buffer += chunk
        return got

    def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 5.0) -> bool:
        """True once some frame received (before or during this call) satisfies ``predicate``."""
        if any(predicate(frame) for frame in self.received):
            return True
        return any(predicate(frame) for frame in self.read(predicate, timeout))

    def read_until_closed(self, timeout: float = 5.0) -> list[Frame]:
        return self.read(None, timeout)

    def goaway(self) -> GoAwayFrame | None:
        """The first GOAWAY received so far."""
        return next((f for f in self.received if isinstance(f, GoAwayFrame)), None)

    def resets(self) -> dict[int, int]:
        """stream id -> error code of the first RST_STREAM the server sent on it."""
        return {stream_id: codes[0] for stream_id, codes in self._resets.items()}

    def reset_codes(self, stream_id: int) -> list[int]:
        """Every RST_STREAM error code received on the stream, in order."""
        return list(self._resets.get(stream_id, ()))

    def header(self, stream_id: int, name: str) -> str | None:
        """The last value of ``name`` the server sent on the stream (headers or trailers)."""
        values = [v for n, v in self.headers.get(stream_id, ()) if n == name]
        return values[-1] if values else None

    def grpc_status(self, stream_id: int) -> int | None:
        value = self.header(stream_id, "grpc-status")
        return None if value is None else int(value)

    def wait_ended(self, stream_ids: Iterable[int], timeout: float = 5.0) -> bool:
        """Read until every stream ended or was reset (True), or the connection ended / time ran out."""
        pending = set(stream_ids) - self.ended

        def all_ended(frame: Frame) -> bool:
            if frame.stream_id in self.ended:
                pending.discard(frame.stream_id)
            return not pending

        if pending:
            self.read(all_ended, timeout)
        return not pending

    def _next_frame(self) -> Frame | None:
        if len(self._buffer) < 9:
            return None
        frame, length = Frame.parse_frame_header(memoryview(bytes(self._buffer[:9])))
        if len(self._buffer) < 9 + length:
            return None
        frame.parse_body(memoryview(bytes(self._buffer[9 : 9 + length])))
        del self._buffer[: 9 + length]
        self.received.append(frame)
        if isinstance(frame, RstStreamFrame):
            self._resets.setdefault(frame.stream_id, []).append(frame.error_code)
            self.ended.add(frame.stream_id)
        elif "END_STREAM" in frame.flags:
            self.ended.add(frame.stream_id)
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.send(Frames.settings(ack=True))
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.send(raw_frame(PING, ACK, 0, bytes(frame.opaque_data)))  # keepalive: answer like a live peer
        if isinstance(frame, HeadersFrame):
            # The server never splits its small header blocks; CONTINUATION is not expected.
            self.headers.setdefault(frame.stream_id, []).extend(_text_headers(self.decoder.decode(frame.data)))
        return frame

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_goaway(frame: Frame) -> bool:
    return isinstance(frame, GoAwayFrame)


__all__ = [
    "ACK",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONTINUATION",
    "DATA",
    "END_HEADERS",
    "END_STREAM",
    "ENHANCE_YOUR_CALM",
    "FLOW_CONTROL_ERROR",
    "FRAME_SIZE_ERROR",
    "GOAWAY",
    "HEADERS",
    "NO_ERROR",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "RST_STREAM",
    "SAVE_STATE",
    "SAY_HELLO",
    "SETTINGS",
    "STREAM_CLOSED",
    "WINDOW_UPDATE",
    "DataFrame",
    "Frames",
    "GoAwayFrame",
    "H2Client",
    "HeadersFrame",
    "PingFrame",
    "RawConnection",
    "Response",
    "RstStreamFrame",
    "SettingsFrame",
    "grpc_frame",
    "grpc_headers",
    "grpc_messages",
    "is_goaway",
    "raw_frame",
    "say_hello",
]
