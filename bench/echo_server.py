"""The baseline: a bare grpc.aio server on uvloop answering Layotto's rpcs with fixed replies.

Same protobuf classes and the same transport as the sidecar, no runtime, no
components, no metrics: what the sidecar's own work is measured against.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import uvloop
from google.protobuf import empty_pb2

from layotto_fast._proto import runtime_pb2 as pb


def handlers() -> grpc.GenericRpcHandler[Any, Any]:
    state = pb.GetStateResponse(data=b"bench-value", etag="1")
    hello = pb.SayHelloResponse(hello="greetings")
    empty = empty_pb2.Empty()

    def fixed(reply: Any, request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
        async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return reply

        return grpc.unary_unary_rpc_method_handler(answer, request_type.FromString, type(reply).SerializeToString)

    return grpc.method_handlers_generic_handler(
        "spec.proto.runtime.v1.Runtime",
        {
            "GetState": fixed(state, pb.GetStateRequest),
            "SaveState": fixed(empty, pb.SaveStateRequest),
            "SayHello": fixed(hello, pb.SayHelloRequest),
        },
    )


async def serve(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handlers()])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))
