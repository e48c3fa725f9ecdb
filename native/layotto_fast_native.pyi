"""Native (Rust) hot paths for layotto-fast: the gRPC front and the client that delivers
to the app, the Bolt and Dubbo codecs, and the mesh proxy.

Hand-written stub for the ``layotto_fast_native`` extension module (pyo3, abi3).
``HandoffServer`` and ``BenchRouteTable`` exist only in a build with ``--features bench``.
"""

from typing import Any, Final, Literal, Self, TypedDict, final

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FrameError",
    "FrameSplitter",
    "GrpcClientConnection",
    "GrpcConnection",
    "GrpcServerConfig",
    "MeshProxy",
    "NOT_SENT",
    "__version__",
    "decode_bolt_request",
    "decode_bolt_response",
    "decode_dubbo_response",
    "encode_bolt_heartbeat_ack",
    "encode_bolt_request",
    "encode_bolt_response",
    "encode_dubbo_generic",
    "encode_dubbo_request",
    "sofa_error_message",
]

__version__: Final[str]
# A GrpcClientConnection call's status, not gRPC's: never taken by the server (not sent before
# its GOAWAY, or refused with REFUSED_STREAM), so it may go over another connection.
NOT_SENT: Final[int]

DEFAULT_MAX_FRAME_SIZE: Final[int]
"""Default ``max_frame_size`` of :class:`FrameSplitter`: 16 MiB."""

class FrameError(ValueError):
    """A malformed or oversized frame.

    The message names the offending field and value, e.g.
    ``"invalid dubbo magic: 0xdabc"`` or
    ``"bolt frame size 43 exceeds max_frame_size 42"``.
    """

@final
class FrameSplitter:
    """Streaming splitter: feed raw bytes, get back whole frames (header included).

    Protocols:

    * ``"bolt"``: SOFA Bolt v1 and v2 (first byte 1 or 2); a v2 frame with ``ver1`` 2
      whose switch byte has the CRC bit (0x01) includes its trailing 4-byte CRC32 (SOFA
      Bolt writes none for ``ver1`` 1, whatever the switch says).
    * ``"dubbo"``: 16-byte header with magic 0xdabb; frame = 16 + body length.
    * ``"grpc"``: gRPC length-prefixed message: compressed flag (0 or 1) + 4-byte
      big-endian length; frame = 5 + length.

    A frame whose declared size exceeds ``max_frame_size`` is rejected as soon as its
    header is complete, before its body is buffered.
    """

    def __new__(
        cls,
        protocol: Literal["bolt", "dubbo", "grpc"],
        max_frame_size: int = 16 * 1024 * 1024,
    ) -> Self:
        """Create a splitter.

        Raises:
            ValueError: unknown ``protocol`` or ``max_frame_size`` == 0.
            OverflowError: negative ``max_frame_size``.
        """

    def feed(self, data: bytes) -> list[bytes]:
        """Buffer ``data`` and return every frame it completes, in order.

        Returns ``[]`` when more bytes are needed. Each returned item is one whole
        frame, header included.

        Raises:
            FrameError: malformed header (unknown bolt proto/type byte, wrong dubbo
                magic, bad grpc flag, negative length) or a frame larger than
                ``max_frame_size``. The splitter is then failed for good: its buffer
                is dropped, frames completed earlier in the same call are discarded,
                and every later ``feed`` raises ``FrameError``.
        """

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of an incomplete frame."""

    @property
    def protocol(self) -> Literal["bolt", "dubbo", "grpc"]:
        """The protocol this splitter was created for."""

    @property
    def max_frame_size(self) -> int:
        """Largest accepted frame size in bytes, header included."""

    @property
    def failed(self) -> bool:
        """True once a ``feed`` call raised ``FrameError``."""

def decode_bolt_request(
    frame: bytes,
) -> tuple[int, int, int, int, int, str, dict[str, str], bytes]:
    """Decode one whole SOFA Bolt request frame, v1 or v2 (request, oneway or heartbeat).

    Returns:
        ``(request_id, type, cmdcode, codec, timeout_ms, class_name, header, content)``
        where ``type`` is 1 request / 2 oneway, ``cmdcode`` 0 heartbeat / 1 request,
        ``codec`` 1 hessian2 / 11 protobuf / 12 json, and ``timeout_ms`` is -1 for
        none. Header entries with a null (-1 length) key or value are skipped.

    Raises:
        FrameError: not Bolt (proto other than 1 or 2), not a request type, truncated,
            trailing bytes, negative lengths, invalid UTF-8 in class name / header, or a
            v2 CRC32 (``ver1`` 2 with the switch's CRC bit) that is not the frame's.
    """

def decode_bolt_response(
    frame: bytes,
) -> tuple[int, int, int, int, str, dict[str, str], bytes]:
    """Decode one whole SOFA Bolt response frame, v1 or v2.

    Returns:
        ``(request_id, cmdcode, codec, status, class_name, header, content)``.

    Raises:
        FrameError: as for :func:`decode_bolt_request`, or not a response type.
    """

def sofa_error_message(content: bytes) -> str | None:
    """The error message in a SOFARPC answer's content written in SOFA's Hessian dialect
    (Bolt codec 1): a ``SofaResponse``'s ``errorMsg``, else its ``appResponse`` exception
    as ``"class: message"``, or a bare exception (SOFA Bolt's ``RpcServerException``) the
    same way. ``None`` when the content holds none or cannot be read; never raises for
    ``bytes``.
    """

def encode_bolt_response(
    request_id: int,
    codec: int,
    status: int,
    class_name: str,
    header: dict[str, str],
    content: bytes,
) -> bytes:
    """Encode a SOFA Bolt v1 response frame (type 0, cmdcode 2 = response).

    ``header`` is written in dict iteration order.

    Raises:
        ValueError: class name or encoded header longer than 32767 bytes.
        OverflowError: ``request_id``/``codec``/``status`` out of u32/u8/u16 range.
        TypeError: a non-str header key or value.
    """

def encode_bolt_request(
    request_id: int,
    codec: int,
    timeout_ms: int,
    class_name: str,
    header: dict[str, str],
    content: bytes,
    oneway: bool = False,
) -> bytes:
    """Encode a SOFA Bolt v1 request frame (cmdcode 1; type 1, or 2 if ``oneway``).

    ``timeout_ms`` is -1 for no timeout. Raises as :func:`encode_bolt_response`.
    """

def encode_bolt_heartbeat_ack(request_id: int) -> bytes:
    """Encode the 20-byte SOFA Bolt v1 heartbeat ack for ``request_id``.

    Type response, cmdcode heartbeat (0), codec hessian2, status 0, no body.
    """

# -- the native gRPC front ------------------------------------------------------

@final
class GrpcServerConfig:
    """Methods and limits shared by every connection of one server.

    ``methods`` lists ``(path, client_streaming)``; a method's index in the list is
    the number events carry. Unknown paths are answered UNIMPLEMENTED natively.
    """

    def __new__(
        cls,
        methods: list[tuple[str, bool]],
        max_message_bytes: int = 4 * 1024 * 1024,
        max_concurrent_streams: int = 1024,
        max_header_list_bytes: int = 16 * 1024,
        initial_window_bytes: int = 1024 * 1024,
        fixed_replies: dict[str, bytes] | None = None,
    ) -> Self: ...

@final
class GrpcConnection:
    """One HTTP/2 connection serving gRPC, driven by the caller's event loop.

    Events are tuples whose first item is the kind:
    ``(0, key, method, message, timeout_us, metadata)`` a whole unary-request call;
    ``(1, key, method, timeout_us, metadata)`` a client-streaming call opened;
    ``(2, key, message)`` one request message; ``(3, key)`` the client half-closed;
    ``(4, key, method, code)`` the call ended under its handler, which should stop: the
    client reset it or the connection ended (code 1, CANCELLED), or the transport refused
    what the client sent (the status the client got, e.g. 8 RESOURCE_EXHAUSTED);
    ``(5, key)`` queued output drained;
    ``(6, method, code, path)`` a call that ended before it reached the application, with
    the status the client got (an unknown method: ``method`` is 2**32-1 and ``path`` the
    path asked for; otherwise ``path`` is None).
    ``timeout_us`` is -1 without a deadline; ``metadata`` is None or (name, value) pairs.
    """

    def __new__(cls, config: GrpcServerConfig, repair_authority: bool = False) -> Self:
        """``repair_authority``: for Unix-socket peers, replace an unparsable ``:authority``
        (grpc-core sends the socket path) with ``localhost`` before HTTP/2 validation."""
    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        """Bytes received from the peer; returns the events they caused."""
    def feed_eof(self) -> list[tuple[Any, ...]]: ...
    def lost(self) -> list[tuple[Any, ...]]:
        """The socket closed: end every open call; returns their events."""
    def flush(self) -> tuple[list[tuple[Any, ...]] | None, bytes | None]:
        """Run the protocol, then take the bytes to write: ``(events or None, bytes or None)``."""
    def respond(
        self,
        key: int,
        message: bytes,
        trailers: list[tuple[str, str]] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> bool:
        """Answer a unary-response call with one message and status OK."""
    def send(self, key: int, message: bytes, headers: list[tuple[str, str]] | None = None) -> bool:
        """Queue a streaming-response message; False means wait for the writable event."""
    def finish(self, key: int, code: int, message: str = "", trailers: list[tuple[str, str]] | None = None) -> bool:
        """End a call with a gRPC status code and message."""
    def consumed(self, key: int, n: int) -> None:
        """The handler took ``n`` bytes of a streaming request: let the client send more."""
    def ping(self) -> bool:
        """Send a keepalive PING; False when the previous one was never answered."""
    def graceful_shutdown(self) -> None:
        """Send GOAWAY: no new calls, open ones finish."""
    @property
    def greeted(self) -> bool:
        """True once the peer sent the HTTP/2 client preface and its first frame (SETTINGS)."""
    @property
    def closed(self) -> bool: ...
    @property
    def error(self) -> str | None: ...
    @property
    def open_streams(self) -> int: ...

@final
class HandoffServer:
    """Benchmark only (built with --features bench): HTTP/2 on a tokio thread handing unary
    calls to the loop in batches."""

    def __new__(cls, paths: list[str], port: int) -> Self: ...
    def wake_fileno(self) -> int: ...
    def take(self) -> list[tuple[int, int, int, bytes, int, None]]: ...
    def respond(
        self,
        key: int,
        message: bytes,
        trailers: list[tuple[str, str]] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> bool: ...
    def finish(self, key: int, code: int, message: str, metadata: list[tuple[str, str]] | None = None) -> bool: ...

class MeshRouteConfig(TypedDict):
    name: str
    service: str | None
    service_prefix: str | None
    version: str | None
    headers: list[tuple[str, str]]
    clusters: list[tuple[str, int]]  # (cluster name, weight)
    timeout_ms: int
    retries: int
    rate_limit: tuple[float, float] | None  # (requests a second, burst)

class MeshListenerConfig(TypedDict):
    name: str
    protocol: str  # "bolt" or "dubbo"
    address: str
    max_frame_size: int
    max_buffered: int
    idle_timeout_ms: int  # 0: never
    max_connections: int  # 0: no limit
    max_incomplete_bytes: int
    routes: list[MeshRouteConfig]

class MeshClusterConfig(TypedDict):
    name: str
    protocol: str  # "bolt" or "dubbo"
    hosts: list[str]
    balancing: str  # "round_robin" or "least_request"
    connect_timeout_ms: int
    max_requests: int
    max_pending: int
    outlier_consecutive_failures: int
    ejection_ms: int
    max_ejection_percent: int
    health_check_interval_ms: int
    health_check_timeout_ms: int
    idle_heartbeat_ms: int  # 0: none

class MeshConfig(TypedDict):
    listeners: list[MeshListenerConfig]
    clusters: list[MeshClusterConfig]
    # What an InvokeService call given an address goes through: name, protocol and hosts
    # are the call's.
    direct: MeshClusterConfig

class MeshListenerStats(TypedDict):
    name: str
    protocol: str  # "bolt" or "dubbo"
    address: str
    connections: int
    open_connections: int
    no_route: int
    bad_frames: int
    heartbeats: int
    idle_closed: int
    max_connections_closed: int
    incomplete_closed: int
    unread_closed: int

class MeshRequestStats(TypedDict):
    outcomes: dict[str, int]
    statuses: dict[int, int]  # by the protocol's status number
    latency_bounds_us: list[int]
    latency_counts: list[int]  # one more than the bounds: the last is over every bound
    latency_sum_us: int

class MeshRouteStats(MeshRequestStats):
    listener: str
    name: str

class MeshHostStats(TypedDict):
    address: str
    healthy: bool
    ejected: bool

class MeshClusterStats(MeshRequestStats):
    name: str
    ejections: int
    ejections_capped: int
    breaker_refused: int
    connect_failures: int
    unknown_responses: int
    hosts: list[MeshHostStats]

class MeshDirectStats(MeshRequestStats):
    """A cluster made for InvokeService calls that name their address (rpc_target_address)."""

    protocol: str
    address: str

class MeshStats(TypedDict):
    listeners: list[MeshListenerStats]
    routes: list[MeshRouteStats]
    clusters: list[MeshClusterStats]
    direct: list[MeshDirectStats]

@final
class MeshProxy:
    """The mesh data plane on a Rust thread: listeners bound at construction (an OSError
    names the listener that cannot bind), forwarding with no Python per request."""

    def __new__(cls, config: MeshConfig) -> Self: ...
    def addresses(self) -> list[tuple[str, str, int]]:
        """(listener name, host, port) as bound."""
    def reload(self, config: MeshConfig) -> None:
        """New routes and clusters, same listeners; unchanged clusters keep their connections."""
    def stop(self) -> None: ...
    def stop_accepting(self) -> None:
        """Closes the listening sockets; open connections are still served."""
    def open_connections(self) -> int:
        """Client connections open on the listeners."""
    def stats(self) -> MeshStats:
        """Counters by listener, route and cluster."""
    def invoke(
        self,
        token: int,
        protocol: str,
        frame: bytes,
        timeout_ms: int,
        cluster: str | None = None,
        address: str | None = None,
        retries: int = 1,
    ) -> None:
        """Send a whole request frame to a cluster (or an address); its outcome comes back
        through ``take_completions`` under ``token``. RuntimeError once the mesh thread has
        ended, saying why."""
    def cancel(self, token: int) -> None:
        """The call under ``token`` was given up by its caller: the mesh lets it go within a
        few milliseconds (its place in the cluster freed) and hands back no completion."""
    def completions_fd(self) -> int:
        """Readable when invocations have finished, and once the mesh thread has ended."""
    def ended(self) -> str | None:
        """Why the mesh thread ended (stopped, or failed), None while it runs: calls still
        waiting for a completion then have none coming."""
    def failure(self) -> str | None:
        """What the mesh thread failed with (a bug's panic), None while it runs or after a stop."""
    def take_completions(self) -> list[tuple[int, str, bytes]]:
        """(token, "ok" | "timeout" | "unavailable" | "overloaded" | "no_service" | "bad_request",
        response frame or the reason as UTF-8)."""

@final
class GrpcClientConnection:
    """One HTTP/2 connection making unary gRPC calls, driven by the event loop: feed it the
    socket's bytes, write what ``take_output`` returns. Each method returns the calls it
    finished as (token, gRPC status (0: OK), detail, answer message)."""

    def __new__(cls, authority: str, max_message_bytes: int = 4194304) -> Self: ...
    def start_many(self, calls: list[tuple[int, str, bytes, int]]) -> list[tuple[int, int, str, bytes]]:
        """Start calls, each ``(token, path, message, timeout_ms)``."""
    def feed(self, data: bytes) -> list[tuple[int, int, str, bytes]]: ...
    def feed_eof(self) -> list[tuple[int, int, str, bytes]]: ...
    def lost(self, reason: str) -> list[tuple[int, int, str, bytes]]:
        """The socket closed: every open call fails (UNAVAILABLE)."""
    def expire(self) -> list[tuple[int, int, str, bytes]]:
        """Calls past their deadline fail (DEADLINE_EXCEEDED); their streams are reset."""
    def next_deadline(self) -> float | None:
        """Seconds until the earliest open call's deadline; None with none open."""
    def take_output(self) -> bytes | None: ...
    def ping(self) -> bool:
        """Send a keepalive PING; False when the previous one is still unanswered."""
    def ended_by_goaway(self) -> bool:
        """The connection ended after the app's GOAWAY without an error, not lost."""
    def awaiting_pong(self) -> bool:
        """A keepalive PING is out and its answer has not come yet."""
    def is_closed(self) -> bool: ...
    def is_draining(self) -> bool:
        """The app sent GOAWAY: calls it took finish here; new ones need another connection."""
    def error(self) -> str | None: ...
    def open_calls(self) -> int: ...

def encode_dubbo_request(
    request_id: int,
    path: str,
    version: str,
    method: str,
    param_types: str,
    args: list[Any],
    attachments: dict[str, Any] | None = None,
) -> bytes: ...
def encode_dubbo_generic(
    request_id: int,
    path: str,
    version: str,
    method: str,
    arg_types: list[str],
    args: list[Any],
    attachments: dict[str, Any] | None = None,
) -> bytes:
    """Dubbo's generic call ($invoke), answered by a provider without its interface."""

def decode_dubbo_response(frame: bytes) -> tuple[int, str, Any, dict[str, Any]]:
    """(status, "value" | "null" | "exception" | "error", value or message, attachments)."""

@final
class BenchRouteTable:
    """Benchmark only (built with --features bench): the mesh's route table."""

    def __new__(cls, services: list[str]) -> Self: ...
    def lookup(self, service: str) -> int | None: ...
