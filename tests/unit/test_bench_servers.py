"""The benchmark's comparison servers answer correctly: a figure from a server that
answers wrongly would compare nothing."""

from __future__ import annotations

import importlib.util
import sys
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


def pubsub_bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pubsub", ROOT / "bench" / "pubsub.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_pubsub_bench_manifests_load_as_the_sidecar_reads_them(tmp_path: Path) -> None:
    from layotto_fast.manifest import load_folder

    bench = pubsub_bench_module()
    (tmp_path / "pubsub.yaml").write_text(
        bench.manifests({"redis": "127.0.0.1:6390", "jetstream": "nats://127.0.0.1:4290"})
    )
    loaded = {m.name: m for m in load_folder(tmp_path)}
    assert (loaded["redis"].type, loaded["redis"].metadata) == ("pubsub.redis", {"redisHost": "127.0.0.1:6390"})
    assert (loaded["jetstream"].type, loaded["jetstream"].metadata) == (
        "pubsub.jetstream",
        {"natsURL": "nats://127.0.0.1:4290"},
    )
    # The same backend again, delivering as many at once as the publishers keep in flight.
    assert loaded[bench.wide("redis")].metadata == {"redisHost": "127.0.0.1:6390", "concurrency": "64"}
    assert loaded[bench.wide("jetstream")].metadata == {"natsURL": "nats://127.0.0.1:4290", "concurrency": "64"}


def test_pubsub_bench_targets_compare_the_sidecar_with_the_direct_path() -> None:
    bench = pubsub_bench_module()

    def row(p50: float, p99: float, delivery_p50: float = 500.0, cpu: float = 10.0, lost: int = 0) -> object:
        return bench.Measured(
            per_second=1000.0, publish_p50_us=p50, publish_p99_us=p99, delivery_p50_us=delivery_p50,
            delivery_p99_us=900.0, delivered_per_second=1000.0, published_total=1000, errors=0, undelivered=lost,
            sidecar_cpu_us=cpu, backend_cpu_us=5.0, pubload_cpu_us=5.0,
        )  # fmt: skip

    def table(added_p50: float, added_p99: float, cpu: float, delivery_p50: float, lost: int = 0) -> dict:
        out = {}
        for load in bench.LOADS:
            out[("redis", load.name, bench.DIRECT)] = row(200.0, 400.0)
            sidecar = row(200.0 + added_p50, 400.0 + added_p99, delivery_p50, cpu, lost)
            out[("redis", load.name, bench.SIDECAR)] = sidecar
            out[("redis", load.name, bench.PUBLISH_ONLY)] = row(200.0, 400.0, -1.0, cpu)
            out[("redis", load.name, bench.DELIVERY_ONLY)] = row(200.0, 400.0, delivery_p50, cpu + 1.0)
            out[("redis", load.name, bench.WIDE)] = row(200.0, 400.0, delivery_p50, cpu + 2.0)
        return out

    def verdicts(checks: list[tuple[str, bool | None]]) -> list[bool]:
        return [passed for _, passed in checks if passed is not None]

    # At the targets exactly: every check passes.
    assert all(verdicts(bench.checks(table(100.0, 300.0, 30.0, 1000.0), ("redis",))))
    # Over each one: each misses, and only that one.
    for over in (table(101.0, 300.0, 30.0, 1000.0), table(100.0, 301.0, 30.0, 1000.0),
                 table(100.0, 300.0, 30.1, 1000.0), table(100.0, 300.0, 30.0, 1001.0),
                 table(100.0, 300.0, 30.0, 1000.0, lost=1)):  # fmt: skip
        assert verdicts(bench.checks(over, ("redis",))).count(False) == 1
    # Delivery's CPU alone is shown beside the target, not checked against it.
    shown = [text for text, passed in bench.checks(table(100.0, 300.0, 30.0, 1000.0), ("redis",)) if passed is None]
    assert any("delivery alone" in text and "31.0 µs" in text for text in shown)
    # So is the whole path with the subscription's concurrency matched to the publishers'.
    assert any(f"concurrency {bench.WIDE_CONCURRENCY} 32.0 µs" in text for text in shown)
    # ... and a figure that would pass there does not turn the default's miss into a pass.
    over = table(100.0, 300.0, 31.0, 1000.0)
    for load in bench.LOADS:
        over[("redis", load.name, bench.WIDE)] = row(200.0, 400.0, 500.0, 20.0)
    assert verdicts(bench.checks(over, ("redis",))).count(False) == 1
    # Nothing delivered is no delivery latency at all: a miss, not a pass.
    assert not all(verdicts(bench.checks(table(0.0, 0.0, 1.0, -1.0), ("redis",))))
    # The gRPC hop with no work behind it is shown beside the latency targets, never checked:
    # a floor that would miss them does not turn the sidecar's pass into a miss, nor the reverse.
    for floor_p50, added in ((150.0, 100.0), (50.0, 101.0)):
        with_floor = table(added, 300.0, 30.0, 1000.0)
        with_floor[("-", bench.OPEN_1000.name, bench.GRPC_FLOOR)] = row(floor_p50, 370.0)
        checked = bench.checks(with_floor, ("redis",))
        assert verdicts(checked) == verdicts(bench.checks(table(added, 300.0, 30.0, 1000.0), ("redis",)))
        assert any(bench.GRPC_FLOOR in text and f"p50 {floor_p50:.0f} / p99 370 µs" in text
                   for text, passed in checked if passed is None)  # fmt: skip
