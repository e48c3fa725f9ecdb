"""The grpc.aio transport: serves handler objects, turns domain errors into status codes.

The only module that touches ``grpc.aio.ServicerContext[Any, Any]``. Handlers are plain
objects whose methods are named after the rpcs of a service descriptor; rpcs with no
method are left to grpc, which answers UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from layotto_fast.api.call import CURRENT, Call
from layotto_fast.api.codecs import Decode, Encode, codec_of
from layotto_fast.api.status import grpc_code
from layotto_fast.errors import InvalidArgument, RuntimeApiError

log = logging.getLogger(__name__)


class CallObserver(Protocol):
    def __call__(self, method: str, code: str, seconds: float) -> None: ...


def _no_observer(method: str, code: str, seconds: float) -> None:
    return None


def service_handler(
    descriptor: ServiceDescriptor, handlers: object, observe: CallObserver = _no_observer
) -> grpc.GenericRpcHandler[Any, Any]:
    methods = {}
    for method in descriptor.methods:
        handler = getattr(handlers, method.name, None)
        if handler is not None:
            methods[method.name] = _method_handler(method, handler, codec_of(handlers, method), observe)
    return grpc.method_handlers_generic_handler(descriptor.full_name, methods)


def _method_handler(
    method: MethodDescriptor,
    handler: Callable[..., Any],
    codec: tuple[Decode, Encode],
    observe: CallObserver,
) -> grpc.RpcMethodHandler[Any, Any]:
    raw_decode, encode = codec
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

    async def fail(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, started: float) -> None:
        if isinstance(exc, RuntimeApiError):
            code, message = grpc_code(exc), exc.message
        else:
            log.exception("%s failed", name, exc_info=exc)
            code, message = "INTERNAL", f"internal error in {name}: {type(exc).__name__}"
        observe(name, code, time.perf_counter() - started)
        await context.abort(grpc.StatusCode[code], message)

    if not method.server_streaming:

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            call = _call_of(context)
            try:
                response = await handler(decoded(request) if method.client_streaming else decode(request))
            except Exception as exc:
                _apply_metadata(context, call)
                await fail(context, exc, started)
                raise  # unreachable: abort raises
            headers = call.take_headers()
            if headers:
                await context.send_initial_metadata(headers)
            _apply_metadata(context, call)
            observe(name, "OK", time.perf_counter() - started)
            return response

        if method.client_streaming:
            return grpc.stream_unary_rpc_method_handler(unary, None, encode)
        return grpc.unary_unary_rpc_method_handler(unary, None, encode)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        call = _call_of(context)
        try:
            async for response in handler(decoded(request) if method.client_streaming else decode(request)):
                headers = call.take_headers()
                if headers:
                    await context.send_initial_metadata(headers)
                yield response
        except Exception as exc:
            _apply_metadata(context, call)
            await fail(context, exc, started)
            return
        _apply_metadata(context, call)
        observe(name, "OK", time.perf_counter() - started)

    if method.client_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, None, encode)
    return grpc.unary_stream_rpc_method_handler(streaming, None, encode)


_TRANSPORT_HEADERS = frozenset(
    {"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent"}
)


def _call_of(context: grpc.aio.ServicerContext[Any, Any]) -> Call:
    """Publish the request's metadata to the handler (see layotto_fast.api.call)."""
    pairs = [
        (key, value if isinstance(value, bytes) else value.encode("latin-1"))
        for key, value in context.invocation_metadata() or ()
        if key not in _TRANSPORT_HEADERS
    ]
    call = Call(pairs or None)
    CURRENT.set(call)  # this coroutine runs in its own task: nothing to reset
    return call


def _apply_metadata(context: grpc.aio.ServicerContext[Any, Any], call: Call) -> None:
    # Initial metadata not sent yet goes out with the status.
    trailers = [*(call.take_headers() or ()), *(call.pending_trailers() or ())]
    if trailers:
        context.set_trailing_metadata(trailers)


def build_server(
    services: list[grpc.GenericRpcHandler[Any, Any]],
    addresses: list[str],
    max_message_bytes: int,
) -> grpc.aio.Server:
    """A grpc.aio server bound to every address ('host:port' or 'unix:/path')."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
    )
    server.add_generic_rpc_handlers(services)
    for address in addresses:
        if server.add_insecure_port(address) == 0:
            raise OSError(f"cannot bind the gRPC server to {address}")
    return server
