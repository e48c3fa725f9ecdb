"""The grpc.aio transport: serves handler objects, turns domain errors into status codes.

The only module that touches ``grpc.aio.ServicerContext[Any, Any]``. Handlers are plain
objects whose methods are named after the rpcs of a service descriptor; a path with no
handler is answered UNIMPLEMENTED here (and counted).

Every call is counted once in ``CallStats`` with the status the client got, as on the
native transport. grpc core ends some calls before any Python runs for them, and
grpc.aio does not tell the application which status it sent; what is known instead:

* a request over ``max_message_bytes`` is refused by core from its length prefix
  (RESOURCE_EXHAUSTED). Unary-request rpcs are therefore registered with grpc as
  streaming-request ones and read their one message here, so that the call is seen:
  when core ends it before its message arrived, it is counted RESOURCE_EXHAUSTED
  (DEADLINE_EXCEEDED once its deadline has passed). A client that resets such a call
  before its request is complete is counted the same way (grpc.aio cannot tell the
  two apart). A client-streaming call cut by the size limit is counted CANCELLED: the
  handler sees its requests end, then the call is cancelled, or (a handler that answers
  at once) sending the answer's headers fails, which is tried before counting OK. One
  case stays uncertain: a bidirectional call that already streamed answers and whose
  handler ends as soon as its requests end is counted OK.
* an answer over ``max_message_bytes`` is refused here before grpc sees it
  (``limits.limit_size``), as the native transport does.
* a call cancelled by the client (or by the server stopping) is counted CANCELLED, not
  timed; one past its deadline DEADLINE_EXCEEDED, timed; as on the native transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from layotto_fast.api.call import CURRENT, Call
from layotto_fast.api.codecs import Decode, Encode, codec_of
from layotto_fast.api.limits import limit_size
from layotto_fast.api.stats import UNKNOWN_METHOD, CallStats, MethodStats
from layotto_fast.api.status import grpc_code
from layotto_fast.errors import InvalidArgument, RuntimeApiError

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_HANDSHAKE_TIMEOUT_SECONDS = 10.0
NEVER_MS = 2**31 - 1  # grpc core's handshake timeout when ours is 0 (about 25 days)
DEADLINE_SLACK_SECONDS = 0.01  # a call cancelled this close to its deadline ended by it
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # what ServicerContext.read returns at the end

Context = grpc.aio.ServicerContext[Any, Any]


class _NoRequest(Exception):
    """A unary-request call whose request ended before its message."""


class _Ended(Exception):
    """grpc could not send on the call: it had ended under the handler."""


# Bytes of a status message sent, as the native front cuts it: grpc-java refuses
# trailers over 8 KiB and grpc-core some, so a message echoing a long text (a provider's
# Java stack trace) would reach those clients as another status than its own.
MAX_STATUS_MESSAGE = 1024


def status_message(message: str) -> str:
    if len(message.encode()) <= MAX_STATUS_MESSAGE:
        return message
    cut = message.encode()[:MAX_STATUS_MESSAGE].decode(errors="ignore")
    return f"{cut}... ({len(message.encode())} bytes in all)"


def service_handler(
    descriptor: ServiceDescriptor,
    handlers: object,
    stats: CallStats | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.GenericRpcHandler[Any, Any]:
    stats = stats if stats is not None else CallStats()
    methods = {}
    for method in descriptor.methods:
        handler = getattr(handlers, method.name, None)
        if handler is not None:
            decode, encode = codec_of(handlers, method)
            methods[method.name] = _method_handler(
                method, handler, decode, limit_size(encode, max_message_bytes), stats.method(method.name)
            )
    return grpc.method_handlers_generic_handler(descriptor.full_name, methods)


def _method_handler(
    method: MethodDescriptor,
    handler: Callable[..., Any],
    raw_decode: Decode,
    encode: Encode,
    stats: MethodStats,
) -> grpc.RpcMethodHandler[Any, Any]:
    """Every rpc is registered with grpc as a streaming-request one (see the module's doc)."""
    name = method.name

    # Requests are decoded here rather than by grpcio, so that a malformed one is
    # INVALID_ARGUMENT, as on the native transport (grpcio answers its own failure UNKNOWN).
    def decode(data: bytes) -> Any:
        try:
            return raw_decode(data)
        except DecodeError as exc:
            raise InvalidArgument(f"request is not a valid {name} message: {exc}") from None

    async def decoded(requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for data in requests:
            yield decode(data)

    async def request_of(requests: AsyncIterator[bytes], context: Context) -> Any:
        """The handler's argument: the decoded request stream, or the one request message."""
        if method.client_streaming:
            return decoded(requests)
        data = await context.read()
        if data is EOF:
            raise _NoRequest
        return decode(data)

    async def fail(context: Context, exc: BaseException, started: float) -> None:
        if isinstance(exc, RuntimeApiError):
            code, message = grpc_code(exc), exc.message
        else:
            log.exception("%s failed", name, exc_info=exc)
            code, message = "INTERNAL", f"internal error in {name}: {type(exc).__name__}"
        stats.record(code, time.perf_counter() - started)
        await context.abort(grpc.StatusCode[code], status_message(message))

    def ended(context: Context, otherwise: str, started: float) -> None:
        """Count a call grpc ended under the handler: ``otherwise``, or DEADLINE_EXCEEDED once
        its deadline has passed (timed, as the native transport times its deadlines)."""
        code = _ended_code(context, otherwise)
        if code == "DEADLINE_EXCEEDED":
            stats.record(code, time.perf_counter() - started)
        else:
            stats.count(code)

    async def no_request(context: Context, started: float) -> None:
        """The request ended before its message: the client half-closed without one (INTERNAL,
        as on the native transport), or grpc core ended the call (its size limit)."""
        try:
            await context.abort(grpc.StatusCode.INTERNAL, "request has no message")
        except grpc.aio.AbortError:
            stats.count("INTERNAL")
            raise
        except asyncio.CancelledError:
            ended(context, "RESOURCE_EXHAUSTED", started)
            raise
        except Exception:  # the call had ended: grpc cannot send a status any more
            ended(context, "RESOURCE_EXHAUSTED", started)

    async def send_headers(context: Context, headers: list[tuple[str, str]]) -> None:
        """Send the initial metadata. At the end of a client-streaming call, with or without
        headers, this also learns whether the call is still there: grpc core ends one whose
        request broke the size limit, and shows the handler only the end of its requests."""
        try:
            await context.send_initial_metadata(headers)
        except (Exception, asyncio.CancelledError):
            raise _Ended from None

    if not method.server_streaming:

        async def unary(requests: AsyncIterator[bytes], context: Context) -> Any:
            started = time.perf_counter()
            call = _call_of(context)
            try:
                response = encode(await handler(await request_of(requests, context)))
                headers = call.take_headers()
                if headers or method.client_streaming:
                    await send_headers(context, headers or [])
            except _NoRequest:
                await no_request(context, started)
                return None
            except _Ended:
                ended(context, "CANCELLED", started)
                raise asyncio.CancelledError from None
            except (Exception, asyncio.CancelledError) as exc:
                if _own_cancellation(exc):
                    ended(context, "CANCELLED", started)
                    raise
                _apply_metadata(context, call)
                await fail(context, exc, started)
                raise  # unreachable: abort raises
            _apply_metadata(context, call)
            stats.record("OK", time.perf_counter() - started)
            return response

        return grpc.stream_unary_rpc_method_handler(unary, None, None)

    async def streaming(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        call = _call_of(context)
        counted = yielded = False
        try:
            async for response in handler(await request_of(requests, context)):
                data = encode(response)
                headers = call.take_headers()
                if headers:
                    await send_headers(context, headers)
                yield data
                yielded = True
            if method.client_streaming and not yielded:
                await send_headers(context, call.take_headers() or [])
            _apply_metadata(context, call)
            stats.record("OK", time.perf_counter() - started)
            counted = True
        except _NoRequest:
            counted = True
            await no_request(context, started)
        except _Ended:
            raise asyncio.CancelledError from None  # counted below
        except (Exception, asyncio.CancelledError) as exc:
            if _own_cancellation(exc):
                raise  # counted below
            counted = True
            _apply_metadata(context, call)
            await fail(context, exc, started)
        finally:
            # Cancelled here, or while grpc wrote what this generator yielded (which then
            # closes it at its yield): the client reset the call, or its deadline passed.
            if not counted:
                ended(context, "CANCELLED", started)

    return grpc.stream_stream_rpc_method_handler(streaming, None, None)


def _own_cancellation(exc: BaseException) -> bool:
    """The call's own cancellation (deadline, client reset) ends it; a CancelledError from
    something below the handler is a failure to answer, not silence until the deadline."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is None or task.cancelling() > 0
    return False


def _ended_code(context: Context, otherwise: str) -> str:
    """The status of a call grpc ended under the handler: its deadline's, if it has passed."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= DEADLINE_SLACK_SECONDS:
        return "DEADLINE_EXCEEDED"
    return otherwise


class _Unimplemented(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every path no service handler took: UNIMPLEMENTED, counted under the rpc's name when
    a served service declares it, otherwise under one shared label."""

    def __init__(self, declared: dict[str, str], stats: CallStats) -> None:
        self._declared = declared
        self._stats = stats

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        path = handler_call_details.method
        stats = self._stats.method(self._declared.get(path, UNKNOWN_METHOD))

        async def unimplemented(requests: AsyncIterator[bytes], context: Context) -> None:
            stats.count("UNIMPLEMENTED")
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {path}")

        return grpc.stream_stream_rpc_method_handler(unimplemented)


_TRANSPORT_HEADERS = frozenset(
    {"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent"}
)


def _call_of(context: Context) -> Call:
    """Publish the request's metadata to the handler (see layotto_fast.api.call).

    grpcio decodes a text value as UTF-8: encoding it back as UTF-8 gives the handler the
    wire's bytes, as the native transport does, whatever characters a client sent. (A
    value that is not UTF-8, which grpcio decodes as latin-1 instead, cannot be told
    apart and comes out re-encoded.)"""
    pairs = [
        (key, value if isinstance(value, bytes) else value.encode("utf-8"))
        for key, value in context.invocation_metadata() or ()
        if key not in _TRANSPORT_HEADERS
    ]
    call = Call(pairs or None)
    CURRENT.set(call)  # this coroutine runs in its own task: nothing to reset
    return call


def _apply_metadata(context: Context, call: Call) -> None:
    # Initial metadata not sent yet goes out with the status.
    trailers = [*(call.take_headers() or ()), *(call.pending_trailers() or ())]
    if trailers:
        context.set_trailing_metadata(trailers)


def build_server(
    services: list[tuple[ServiceDescriptor, object]],
    addresses: list[str],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    stats: CallStats | None = None,
    handshake_timeout_seconds: float = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
) -> grpc.aio.Server:
    """A grpc.aio server for handler objects, bound to every address ('host:port' or 'unix:/path').

    ``max_message_bytes`` bounds requests and answers (RESOURCE_EXHAUSTED either way); a
    connection that has not sent the HTTP/2 preface and its SETTINGS
    ``handshake_timeout_seconds`` after it was accepted is closed (grpc core's server
    handshake timeout, which covers exactly that on a plaintext port; 0: never).
    """
    stats = stats if stats is not None else CallStats()
    declared = {
        f"/{descriptor.full_name}/{rpc.name}": rpc.name for descriptor, _ in services for rpc in descriptor.methods
    }
    handshake_ms = round(handshake_timeout_seconds * 1000) if handshake_timeout_seconds > 0 else NEVER_MS
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.server_handshake_timeout_ms", min(max(handshake_ms, 1), NEVER_MS)),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
    )
    handlers = [service_handler(descriptor, objects, stats, max_message_bytes) for descriptor, objects in services]
    server.add_generic_rpc_handlers([*handlers, _Unimplemented(declared, stats)])
    bind(server, addresses)
    return server


def bind(server: grpc.aio.Server, addresses: list[str]) -> list[int]:
    """Bind ``server`` to each address: the ports bound (the one chosen for a TCP port 0)."""
    ports = []
    for address in addresses:
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:  # grpcio 1.37 and later raise where older ones answered 0
            port = 0
        if port == 0:
            raise OSError(f"cannot bind the gRPC server to {address}: the address is in use or not available")
        ports.append(port)
    return ports
