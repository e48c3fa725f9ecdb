"""Baselines: bare servers answering Layotto's rpcs with fixed replies, no runtime behind them.

``--kind grpcio``: grpc.aio on uvloop with the same protobuf classes as the sidecar
(what the issue calls the bare echo). ``--kind native-floor``: the native front
answering in Rust alone, never calling Python: the floor of the native transport.
``--kind native-task``: not a bare server but the sidecar's own handlers and default
components behind the native front with every unary call in an asyncio Task, the
design the transport's same-pass completion is measured against. ``--kind
thread-handoff``: the same handlers and the same compiled call path, but HTTP/2 on a
tokio thread that hands calls to this loop in batches (``HandoffServer``), the design
the loop-driven front is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc
import uvloop
from google.protobuf import empty_pb2

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.api.layotto import LayottoRuntime
from layotto_fast.api.native_calls import Method, dispatch
from layotto_fast.api.transport_native import CODES, NativeGrpcServer, failure_status
from layotto_fast.server import Sidecar, load_manifests
from layotto_fast.settings import Settings

SERVICE = "spec.proto.runtime.v1.Runtime"
RUNTIME = pb.DESCRIPTOR.services_by_name["Runtime"]
REPLIES: dict[str, tuple[Any, Any]] = {
    "GetState": (pb.GetStateRequest, pb.GetStateResponse(data=b"bench-value", etag="1")),
    "SaveState": (pb.SaveStateRequest, empty_pb2.Empty()),
    "SayHello": (pb.SayHelloRequest, pb.SayHelloResponse(hello="greetings")),
}


def grpcio_handlers() -> grpc.GenericRpcHandler[Any, Any]:
    def fixed(request_type: Any, reply: Any) -> grpc.RpcMethodHandler[Any, Any]:
        async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return reply

        return grpc.unary_unary_rpc_method_handler(answer, request_type.FromString, type(reply).SerializeToString)

    return grpc.method_handlers_generic_handler(SERVICE, {name: fixed(*pair) for name, pair in REPLIES.items()})


async def serve(kind: str, port: int) -> None:
    if kind == "grpcio":
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpcio_handlers()])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
    elif kind == "native-task":
        tasks = NativeGrpcServer([(RUNTIME, await sidecar_handlers())], inline_unary=False)
        await tasks.start([f"127.0.0.1:{port}"])
    elif kind == "thread-handoff":
        handoff = _Handoff(NativeGrpcServer([(RUNTIME, await sidecar_handlers())]).methods, port)
        asyncio.get_running_loop().add_reader(handoff.server.wake_fileno(), handoff.serve_batch)
    else:
        fixed = {f"/{SERVICE}/{name}": reply.SerializeToString() for name, (_, reply) in REPLIES.items()}
        native = NativeGrpcServer([(RUNTIME, _Unreachable())], fixed_replies=fixed)
        await native.start([f"127.0.0.1:{port}"])
    print("ready", flush=True)
    await asyncio.Event().wait()


async def sidecar_handlers() -> LayottoRuntime:
    """The sidecar's Layotto handlers over its embedded default components."""
    settings = Settings(resources_path=str(Path(__file__).resolve().parent.parent / "components"))
    sidecar = Sidecar(settings, load_manifests(settings))
    await sidecar.components.init_all()
    return sidecar.layotto


class _Handoff:
    """The loop side of the thread-and-hand-off design: one batch of calls per wake-up."""

    def __init__(self, methods: list[Method], port: int) -> None:
        # Only in a crate built with --features bench (make bench does).
        from layotto_fast_native import HandoffServer  # type: ignore[attr-defined]

        self.methods = methods
        self.server = HandoffServer([f"/{SERVICE}/{method.name}" for method in methods], port)
        self._flush_scheduled = False  # set by the shared call path; nothing to flush here

    def serve_batch(self) -> None:
        events = self.server.take()
        if events:
            dispatch(self, self.server, self.methods, events)

    # What native_calls.dispatch hands back for calls that do not finish in the same pass.
    def _fail(self, key: int, method: Method, exc: BaseException, started: float, call: Any = None) -> None:
        code, message = failure_status(exc, method.name)
        self.server.finish(key, CODES[code], message)

    def _undecodable(self, key: int, method: Method, exc: Exception, started: float) -> None:
        self.server.finish(key, CODES["INVALID_ARGUMENT"], f"request is not a valid {method.name} message: {exc}")

    def _suspended(self, key: int, method: Method, *rest: Any) -> None:
        raise RuntimeError(f"{method.name}: the hand-off benchmark serves in-memory components only")

    _start_in_task = _suspended


class _Unreachable:
    """Handlers that must never run: the floor answers in Rust."""

    def __getattr__(self, name: str) -> Any:
        if name in REPLIES:
            return self._never
        raise AttributeError(name)

    async def _never(self, request: Any) -> Any:
        raise AssertionError("the native floor called Python")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=("grpcio", "native-floor", "native-task", "thread-handoff"), default="grpcio")
    arguments = parser.parse_args()
    uvloop.run(serve(arguments.kind, arguments.port))
