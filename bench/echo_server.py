"""Baselines: bare servers answering Layotto's rpcs with fixed replies, no runtime behind them.

``--kind grpcio``: grpc.aio on uvloop with the same protobuf classes as the sidecar
(what the issue calls the bare echo). ``--kind native-floor``: the native front
answering in Rust alone, never calling Python: the floor of the native transport.
``--kind native-task``: not a bare server but the sidecar's own handlers and default
components behind the native front with every unary call in an asyncio Task, the
design the transport's same-pass completion is measured against.
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
from layotto_fast.api.transport_native import NativeGrpcServer
from layotto_fast.server import Sidecar, load_manifests
from layotto_fast.settings import Settings

SERVICE = "spec.proto.runtime.v1.Runtime"
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
        settings = Settings(resources_path=str(Path(__file__).resolve().parent.parent / "components"))
        sidecar = Sidecar(settings, load_manifests(settings))
        await sidecar.components.init_all()
        tasks = NativeGrpcServer([(pb.DESCRIPTOR.services_by_name["Runtime"], sidecar.layotto)], inline_unary=False)
        await tasks.start([f"127.0.0.1:{port}"])
    else:
        fixed = {f"/{SERVICE}/{name}": reply.SerializeToString() for name, (_, reply) in REPLIES.items()}
        native = NativeGrpcServer([(pb.DESCRIPTOR.services_by_name["Runtime"], _Unreachable())], fixed_replies=fixed)
        await native.start([f"127.0.0.1:{port}"])
    print("ready", flush=True)
    await asyncio.Event().wait()


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
    parser.add_argument("--kind", choices=("grpcio", "native-floor", "native-task"), default="grpcio")
    arguments = parser.parse_args()
    uvloop.run(serve(arguments.kind, arguments.port))
