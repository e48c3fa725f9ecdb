"""The benchmark's comparison servers answer correctly: a figure from a server that
answers wrongly would compare nothing."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc
import layotto_fast_native
import pytest
import uvloop

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast._proto import runtime_pb2_grpc
from tests.sidecar import free_port

ROOT = Path(__file__).resolve().parents[2]


def echo_server_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_echo_server", ROOT / "bench" / "echo_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH_BUILD = hasattr(layotto_fast_native, "HandoffServer")


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(
            "thread-handoff",
            marks=pytest.mark.skipif(not BENCH_BUILD, reason="benchmark-only: the crate built with --features bench"),
        ),
        "native-task",
    ],
)
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    module, chosen = echo_server_module(), free_port()
    thread = threading.Thread(target=lambda: uvloop.run(module.serve(request.param, chosen)), daemon=True)
    thread.start()
    with grpc.insecure_channel(f"127.0.0.1:{chosen}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    yield chosen  # daemon thread: ends with the test process


def test_state_round_trip_and_errors(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)
        stub.SaveState(
            pb.SaveStateRequest(store_name="in-memory", states=[pb.StateItem(key="k", value=b"v1")]), timeout=5
        )
        assert stub.GetState(pb.GetStateRequest(store_name="in-memory", key="k"), timeout=5).data == b"v1"
        assert stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="n"), timeout=5).hello
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetState(pb.GetStateRequest(store_name="no-such-store", key="k"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        futures = [
            stub.GetState.future(pb.GetStateRequest(store_name="in-memory", key="k"), timeout=5) for _ in range(100)
        ]
        assert all(f.result().data == b"v1" for f in futures)
