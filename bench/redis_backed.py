"""``make bench``, Redis part: the sidecar's state, lock and sequencer over one local
redis-server, beside redis-py calling the same Redis directly, in the same run.

For each rpc at 1 and 64 calls in flight it prints calls/s, p50/p99 (median round),
and the CPU per call of the sidecar and of redis-server (process CPU clocks over
all rounds). The same sidecar also serves an in-memory store, measured in the same
rounds, for the one-in-flight target: p50 over Redis at most the in-memory p50 plus
the direct redis-py p50 plus 30 µs. When ``LAYOTTO_BIN`` names a Layotto binary, Layotto's
Go server runs beside the sidecar on the same Redis (state, lock and sequencer of type
``redis``, and an in-memory state store), in the same rounds; CI has none, so its rows
are left out there.

At one in flight the sidecar is timed twice: by ghz, as every gRPC row of ``make bench``
is, and by meshload's gRPC client (Rust, ``bench/meshload``). The target is checked on
meshload's pair. Measured here on one sidecar, interleaved, ghz puts 75-110 µs more
between its in-memory and its Redis p50 than meshload does for the same two calls
(GOMAXPROCS=1 for ghz removes a third of that): checked on ghz's figures, the target
would charge the sidecar for the load generator's own wake-ups. ghz's figure is printed
beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from google.protobuf import json_format  # noqa: E402

from bench.mesh import build_meshload, run_runtime_call  # noqa: E402
from bench.run import CALLS as BASE_CALLS  # noqa: E402
from bench.run import (  # noqa: E402
    Child,
    Row,
    Server,
    combine,
    ghz_binary,
    process_cpu_seconds,
    protoset,
    run_ghz,
    wait_for_ready,
)
from layotto_fast._proto import runtime_pb2  # noqa: E402
from tests.backends.servers import RedisServer  # noqa: E402
from tests.sidecar import free_port, serve_command  # noqa: E402

MANIFESTS = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: redis}}
spec:
  type: state.redis
  metadata: [{{name: redisHost, value: "{address}"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: lock_redis}}
spec:
  type: lock.redis
  metadata: [{{name: redisHost, value: "{address}"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: sequencer_redis}}
spec:
  type: sequencer.redis
  metadata: [{{name: redisHost, value: "{address}"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: in-memory}}
spec:
  type: state.in-memory
"""

CALLS = {
    "GetState": {"store_name": "redis", "key": "bench"},
    "SaveState": {"store_name": "redis", "states": [{"key": "bench", "value": "YmVuY2gtdmFsdWU="}]},
    "TryLock": {"store_name": "lock_redis", "resource_id": "bench", "lock_owner": "bench", "expire": 1},
    "GetNextId": {"store_name": "sequencer_redis", "key": "bench"},
}
IN_MEMORY = {"GetState": BASE_CALLS["GetState"], "SaveState": BASE_CALLS["SaveState"]}
# What redis-py does directly for each rpc: the one command the component sends.
DIRECT = {
    "GetState": ("HMGET", "direct-bench", "data", "version"),
    "SaveState": ("HSET", "direct-bench", "data", b"bench-value"),
    "TryLock": ("SET", "direct-lock", "bench", "NX", "PX", "1000"),
    "GetNextId": ("INCR", "direct-seq"),
}


def meshload_call(binary: Path, server: Any, rpc: str, body: dict[str, object], seconds: float) -> tuple[Row, float]:
    """One round of ``rpc`` at one in flight, timed by meshload's gRPC client; with the share
    of its calls that were timed (the rest were its warm-up's, in Redis' CPU too)."""
    request = json_format.ParseDict(body, getattr(runtime_pb2, f"{rpc}Request")())
    run = run_runtime_call(binary, server.port, rpc, request, seconds, server)
    row = Row(server.name, rpc, 1, run.ok, run.errors, run.per_second, run.p50_us, run.p99_us,
              run.proxy_cpu_us, float("nan"))  # fmt: skip
    return row, run.ok / max(run.answers, 1)


def _all_timed(timed: Callable[[], Row]) -> tuple[Row, float]:
    """``timed``'s row, every call of which was timed (ghz: no warm-up within a run)."""
    return timed(), 1.0


def layotto_config(grpc_port: int, actuator_port: int, redis_address: str, log_path: Path) -> dict[str, object]:
    """A Layotto (MOSN) configuration with this module's stores under the sidecar's names."""
    redis = {"type": "redis", "metadata": {"redisHost": redis_address, "redisPassword": ""}}
    runtime = {
        "state": {"redis": redis, "in-memory": {"type": "in-memory", "metadata": {}}},
        "lock": {"lock_redis": redis},
        "sequencer": {"sequencer_redis": redis},
    }
    grpc = {"type": "grpc", "config": {"server_name": "runtime", "grpc_config": runtime}}
    actuator = {
        "type": "proxy",
        "config": {"downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "actuator"},
    }
    listeners = [
        {"name": "grpc", "address": f"127.0.0.1:{grpc_port}", "bind_port": True,
         "filter_chains": [{"filters": [grpc]}]},
        {"name": "actuator", "address": f"127.0.0.1:{actuator_port}", "bind_port": True,
         "filter_chains": [{"filters": [actuator]}], "stream_filters": [{"type": "actuator_filter"}]},
    ]  # fmt: skip
    server = {"default_log_path": str(log_path), "default_log_level": "ERROR",
              "routers": [{"router_config_name": "actuator"}], "listeners": listeners}  # fmt: skip
    return {"servers": [server]}


class Layotto(Child):
    """Layotto's own Go server (``LAYOTTO_BIN``), ready once its actuator says UP."""

    def __init__(self, binary: str, folder: Path, redis_address: str) -> None:
        self.name, self.port = "Layotto (Go)", free_port()
        actuator_port = free_port()
        config = folder / "layotto.json"
        log_path = folder / "layotto.log"
        config.write_text(json.dumps(layotto_config(self.port, actuator_port, redis_address, log_path)))
        with open(folder / "layotto.out", "w") as output:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [binary, "start", "-c", str(config)], cwd=folder, stdout=output, stderr=subprocess.STDOUT, text=True
            )
        readiness = f"http://127.0.0.1:{actuator_port}/actuator/health/readiness"
        try:
            wait_for_ready(readiness, b'"status":"UP"', self.process)
        except BaseException:
            self.stop()
            raise


@dataclass
class Direct:
    rpc: str
    in_flight: int
    calls: int
    p50_us: float
    p99_us: float
    calls_per_s: float
    redis_cpu_us: float


async def direct_round(address: str, command: tuple[object, ...], in_flight: int, calls: int) -> list[float]:
    import redis.asyncio as aioredis

    host, port = address.rsplit(":", 1)
    client = aioredis.Redis(host=host, port=int(port), max_connections=in_flight)
    latencies: list[float] = []
    per_worker = calls // in_flight

    async def worker() -> None:
        for _ in range(per_worker):
            started = time.perf_counter()
            await client.execute_command(*command)
            latencies.append(time.perf_counter() - started)

    await client.ping()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    await client.aclose()
    return latencies


def raw_round(address: str, command: tuple[object, ...], calls: int) -> list[float]:
    """The same command at one in flight over a blocking socket, its reply read by hiredis:
    Redis' own round trip with next to no client, for scale beside redis-py's."""
    import hiredis

    host, port = address.rsplit(":", 1)
    parts = [part if isinstance(part, bytes) else str(part).encode() for part in command]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    latencies: list[float] = []
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = hiredis.Reader()
        for _ in range(calls):
            started = time.perf_counter()
            sock.sendall(request)
            reply = False
            while reply is False:
                reader.feed(sock.recv(65536))
                reply = reader.gets()
            latencies.append(time.perf_counter() - started)
    return latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1e6


class Scenario(NamedTuple):
    server: str  # "sidecar", or "Layotto (Go)"
    store: str  # "redis" or "in-memory"
    rpc: str
    in_flight: int
    client: str  # the load generator that timed it: ghz or meshload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30000, help="calls per scenario at 64 in flight")
    parser.add_argument("--calls-serial", type=int, default=10000, help="calls per scenario at 1 in flight")
    parser.add_argument("--rounds", type=int, default=5, help="rounds a scenario at 64 in flight is split into")
    # p50 at one in flight is the median round's: more, shorter rounds let a drift of the
    # shared cores touch the Redis, in-memory and direct runs of a round alike.
    parser.add_argument("--rounds-serial", type=int, default=10, help="rounds a scenario at 1 in flight is split into")
    parser.add_argument("--seconds-serial", type=float, default=0.5, help="meshload's time per round at 1 in flight")
    options = parser.parse_args()
    ghz, descriptors, meshload = ghz_binary(), protoset(), build_meshload()
    layotto_binary = os.environ.get("LAYOTTO_BIN")

    rows: dict[Scenario, list[Row]] = {}
    redis_cpu: dict[Scenario, float] = {}
    raw: dict[str, list[float]] = {}  # p50 µs of each round of the raw-socket round trip, by rpc
    directs: dict[tuple[str, int], list[tuple[list[float], float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis_server:
        redis_server.start()
        redis_pid = redis_server.pid
        assert redis_pid is not None
        folder = Path(tmp) / "components"
        folder.mkdir()
        (folder / "redis.yaml").write_text(MANIFESTS.format(address=redis_server.address))
        grpc_port, actuator_port = free_port(), free_port()
        args = serve_command(grpc_port, actuator_port, "--log-level", "warning", "--resources-path", str(folder))
        readiness = f"http://127.0.0.1:{actuator_port}/actuator/health/readiness"
        servers: dict[str, Child] = {"sidecar": Server("sidecar native", args, readiness, grpc_port)}
        try:
            if layotto_binary:
                servers["Layotto (Go)"] = Layotto(layotto_binary, Path(tmp), redis_server.address)
            for server in servers.values():
                for rpc in CALLS:  # warm-up
                    run_ghz_call(ghz, descriptors, server, rpc, CALLS[rpc], 64, 2000)
            for rpc in CALLS:
                for in_flight in (1, 64):
                    total = options.calls_serial if in_flight == 1 else options.calls
                    rounds = options.rounds_serial if in_flight == 1 else options.rounds
                    calls = total // rounds
                    for _ in range(rounds):
                        stores = [("redis", CALLS[rpc])]
                        if rpc in IN_MEMORY:
                            stores.append(("in-memory", IN_MEMORY[rpc]))
                        for (name, server), (store, body) in itertools.product(servers.items(), stores):
                            by_ghz = partial(run_ghz_call, ghz, descriptors, server, rpc, body, in_flight, calls)
                            timers: list[tuple[str, Callable[[], tuple[Row, float]]]] = [
                                ("ghz", partial(_all_timed, by_ghz))
                            ]
                            if in_flight == 1:
                                seconds = options.seconds_serial
                                # meshload's warm-up is in Redis' CPU too: counted out, by its own count
                                timers.append(
                                    ("meshload", partial(meshload_call, meshload, server, rpc, body, seconds))
                                )
                            for client, timed in timers:
                                scenario = Scenario(name, store, rpc, in_flight, client)
                                before = process_cpu_seconds(redis_pid)
                                row, share = timed()
                                rows.setdefault(scenario, []).append(row)
                                used = (process_cpu_seconds(redis_pid) - before) * share
                                redis_cpu[scenario] = redis_cpu.get(scenario, 0.0) + used
                        before = process_cpu_seconds(redis_pid)
                        started = time.perf_counter()
                        latencies = asyncio.run(direct_round(redis_server.address, DIRECT[rpc], in_flight, calls))
                        elapsed = time.perf_counter() - started
                        directs.setdefault((rpc, in_flight), []).append(
                            (latencies, elapsed, process_cpu_seconds(redis_pid) - before)
                        )
                        if in_flight == 1:
                            raw.setdefault(rpc, []).append(
                                statistics.median(raw_round(redis_server.address, DIRECT[rpc], calls)) * 1e6
                            )
        finally:
            for server in servers.values():
                server.stop()

    print("| server | rpc | in flight | OK calls | errors | calls/s | p50 µs | p99 µs | server CPU/call µs "
          "| redis-server CPU/call µs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    combined: dict[Scenario, Row] = {}
    for scenario, runs in sorted(rows.items(), key=lambda item: list(servers).index(item[0].server)):
        row = combined[scenario] = combine(runs)
        redis_us = redis_cpu[scenario] / max(row.calls_ok, 1) * 1e6
        print(
            f"| {scenario.server} ({scenario.store}), {scenario.client} | {scenario.rpc} | {scenario.in_flight} "
            f"| {row.calls_ok} | {row.errors} | {row.calls_per_s:,.0f} "
            f"| {row.p50_us:,.0f} | {row.p99_us:,.0f} | {row.server_cpu_us:.1f} | {redis_us:.1f} |"
        )
    direct_rows: dict[tuple[str, int], Direct] = {}
    for (rpc, in_flight), runs in directs.items():
        calls = sum(len(latencies) for latencies, _, _ in runs)
        median = statistics.median
        direct = direct_rows[(rpc, in_flight)] = Direct(
            rpc,
            in_flight,
            calls,
            median(percentile(latencies, 0.50) for latencies, _, _ in runs),
            median(percentile(latencies, 0.99) for latencies, _, _ in runs),
            median(len(latencies) / elapsed for latencies, elapsed, _ in runs),
            sum(cpu for _, _, cpu in runs) / max(calls, 1) * 1e6,
        )
        print(
            f"| redis-py direct | {' '.join(map(str, DIRECT[rpc][:1]))} ({rpc}) | {in_flight} | {calls} | 0 "
            f"| {direct.calls_per_s:,.0f} | {direct.p50_us:,.0f} | {direct.p99_us:,.0f} | - "
            f"| {direct.redis_cpu_us:.1f} |"
        )

    checks: list[tuple[str, bool]] = []
    infos: list[str] = []
    for rpc in ("GetState", "SaveState"):
        scenario = Scenario("sidecar", "redis", rpc, 64, "ghz")
        row = combined[scenario]
        redis_us = redis_cpu[scenario] / max(row.calls_ok, 1) * 1e6
        checks.append((f"[#14] {rpc} @64 over Redis: sidecar CPU/call {row.server_cpu_us:.1f} µs (<= 30 µs)",
                       row.server_cpu_us <= 30))  # fmt: skip
        checks.append((f"[#14] {rpc} @64 over Redis: redis-server CPU/call {redis_us:.1f} µs (<= 8 µs)",
                       redis_us <= 8))  # fmt: skip
        direct = direct_rows[(rpc, 1)].p50_us
        bare = statistics.median(raw[rpc])
        infos.append(f"[info] {rpc} @1: redis-py's p50 {direct:.0f} µs, the same command over a bare socket "
                     f"{bare:.0f} µs (for scale: the issue's baseline is redis-py's, whose own cost is the "
                     f"difference, {direct - bare:.0f} µs)")  # fmt: skip
        for client in ("meshload", "ghz"):
            redis = combined[Scenario("sidecar", "redis", rpc, 1, client)]
            in_memory = combined[Scenario("sidecar", "in-memory", rpc, 1, client)]
            extra = redis.p50_us - in_memory.p50_us - direct
            text = f"[#14] {rpc} @1 over Redis: p50 {extra:+.0f} µs over in-memory p50 + redis-py p50"
            if client == "meshload":
                checks.append((f"{text}, sidecar timed by meshload (<= 30 µs)", extra <= 30))
            else:
                infos.append(f"[info] {text}, sidecar timed by ghz (ghz's own wake-ups included)")
        if "Layotto (Go)" in servers:
            layotto = combined[Scenario("Layotto (Go)", "redis", rpc, 64, "ghz")]
            infos.append(f"[info] {rpc} @64 over Redis, CPU/call: sidecar {row.server_cpu_us:.1f} µs, "
                         f"Layotto (Go) {layotto.server_cpu_us:.1f} µs")  # fmt: skip
    checks.append(("no errors in any Redis run", all(r.errors == 0 for r in combined.values())))
    print()
    for text, passed in checks:
        print(f"[{'PASS' if passed else 'MISS'}] {text}")
    for text in infos:
        print(text)
    return 0


def run_ghz_call(ghz: str, descriptors: Path, server: Any, rpc: str, body: object, n: int, total: int) -> Row:
    """run_ghz with this module's request bodies."""
    saved = dict(BASE_CALLS)
    BASE_CALLS[rpc] = body  # type: ignore[assignment]
    try:
        return run_ghz(ghz, descriptors, server, rpc, n, total)
    finally:
        BASE_CALLS.clear()
        BASE_CALLS.update(saved)


if __name__ == "__main__":
    raise SystemExit(main())
