"""``make bench``, pub/sub part: publishing and delivery through the sidecar over Redis Streams
and NATS JetStream, beside the same publish and consume done directly against the backend,
in the same run.

The load generator is ``bench/pubload`` (Go; built here, cached under ``bench/.tools``): one
process and one client stack for both paths. Through the sidecar it calls PublishEvent over
gRPC and receives as the app's AppCallback server (OnTopicEvent answered SUCCESS); directly it
publishes with go-redis (XADD of the CloudEvent the sidecar would store) or nats.go (JetStream
publish awaiting the PubAck) and consumes with XREADGROUP + XACK or a JetStream pull consumer
with explicit acks. Every message carries its send time: delivery is publish-to-delivery.

Loads: 1000 publishes/s open loop (each starts on time, whatever the others do), then closed loops
with 1 and 64 publishes in flight. At 1000/s and 64 in flight the sidecar is also measured
publishing to a topic nobody subscribes to (publish alone, no delivery meanwhile), and once a
round, at 1000/s, four figures for scale: GetState of the sidecar's in-memory store (its gRPC hop
alone); GetState of the native floor (``bench/echo_server.py --kind native-floor``: the native gRPC
front answering in Rust, no handler, the least a gRPC hop costs this client); GetState of grpc-go's
server answering with no work (``pubload --serve-floor``: the same hop with another
implementation's server); a round trip to a bare TCP echo (``bench/mesh_echo.py tcp``: the least
any hop between two processes costs). The sidecar's path has one gRPC hop more than the direct
client's. At 64 in flight pubload also publishes directly to the backend on the topic the sidecar
delivers to the app, so that the sidecar's CPU in that row is delivery's alone, and publishes
through the sidecar to a second component of the same backend whose subscription delivers 64
messages at once (the default is 10 over Redis, 16 over JetStream). Delivery at 64 in flight
includes the backlog: the publishers outrun the consumers, and a row ends only once all it
published was delivered ("delivered msg/s" shows the pace).

Each figure is the median of the rounds (``--rounds``), which alternate the paths' order. CPU
per message is the process CPU clock (``bench.run.process_cpu_seconds``) of the sidecar, the
backend server and pubload around each row (its warm-up and delivery drain included), divided
by the messages published in it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Child, Server, process_cpu_seconds, start_baseline  # noqa: E402
from tests.backends.servers import NatsServer, RedisServer  # noqa: E402
from tests.sidecar import free_port, serve_command  # noqa: E402

PUBLOAD = ROOT / "bench" / "pubload"
BUILD = ROOT / "bench" / ".tools" / "pubload"
BACKENDS = ("redis", "jetstream")
COMPONENT_TYPES = {"redis": ("pubsub.redis", "redisHost"), "jetstream": ("pubsub.jetstream", "natsURL")}
BACKEND_PROCESS = {"redis": "redis-server", "jetstream": "nats-server"}


@dataclass(frozen=True)
class Load:
    name: str
    rate: float  # > 0: open loop at this many publishes a second
    in_flight: int  # closed loop otherwise


OPEN_1000 = Load("1000/s", 1000.0, 1)
SERIAL = Load("1 in flight", 0.0, 1)
PARALLEL = Load("64 in flight", 0.0, 64)
LOADS = (OPEN_1000, SERIAL, PARALLEL)
DIRECT, SIDECAR, PUBLISH_ONLY = "direct", "sidecar", "sidecar, no subscriber"
# Published directly to the backend, on the topic the sidecar delivers to the app: the
# sidecar's CPU per message in this row is delivery's alone.
DELIVERY_ONLY = "direct publish, sidecar delivers"
# Through the sidecar both ways, to a component whose subscriptions deliver up to WIDE_CONCURRENCY
# messages at once instead of the default: what matching delivery to the publishers' 64 in flight
# does to the sidecar's CPU per message (each batch of deliveries costs the sidecar a wake-up).
WIDE_CONCURRENCY = 64
WIDE = f"sidecar, delivery concurrency {WIDE_CONCURRENCY}"
DELIVERED = (DIRECT, SIDECAR, DELIVERY_ONLY, WIDE)  # the paths whose messages someone consumes
# For scale: GetState of the sidecar's in-memory store through the same client, at 1000/s:
# the gRPC hop with almost nothing behind it, the part of "added" no pub/sub work can remove.
HOP, HOP_STORE = "GetState in-memory", "in-memory"
# For scale, through the same client at 1000/s: GetState of the native front answering in Rust (the
# least a gRPC hop costs), and a round trip to a bare uvloop TCP echo (the least any hop costs).
GRPC_FLOOR, TCP_FLOOR = "GetState of the native floor", "bare TCP round trip"
# For scale: the same GetState answered with no work by grpc-go's server (``pubload --serve-floor``),
# so that the native floor stands beside another implementation's gRPC hop, not alone.
GO_FLOOR = "GetState of the grpc-go floor"
SCALE = (HOP, GRPC_FLOOR, GO_FLOOR, TCP_FLOOR)  # measured once a round, at 1000/s
NO_SIDECAR = (DIRECT, GRPC_FLOOR, GO_FLOOR, TCP_FLOOR)  # the paths that never reach the sidecar
# A row ends once every message it published was delivered: at 64 in flight the publishers
# outrun the consumers and the backlog drains after the last publish. Given up after this
# many seconds, or this many times the row's publishing time when that is longer.
DRAIN_SECONDS, DRAIN_FACTOR = 60.0, 20.0

# Targets of the issue.
ADDED_P50_US, ADDED_P99_US = 100.0, 300.0  # publish latency over the direct client at 1000/s
CPU_PER_MESSAGE_US = 30.0  # the sidecar's, at 64 in flight
DELIVERY_P50_US = 1000.0  # end to end over Redis Streams at one in flight


def topics(backend: str) -> dict[str, str]:
    """The topic each path publishes to: the direct consumer's, the app's (through the sidecar), nobody's,
    and the app's through the component that delivers WIDE_CONCURRENCY at once."""
    return {DIRECT: f"pubload-direct-{backend}", SIDECAR: f"pubload-sidecar-{backend}",
            PUBLISH_ONLY: f"pubload-nosub-{backend}", WIDE: f"pubload-wide-{backend}"}  # fmt: skip


def wide(backend: str) -> str:
    """The name of ``backend``'s component that delivers WIDE_CONCURRENCY messages at once."""
    return f"{backend}-wide"


def paths_of(load: Load) -> tuple[str, ...]:
    """The paths measured at ``load``: publish alone too where a target is about publishing, and
    delivery alone where one is about CPU."""
    if load is SERIAL:
        return (DIRECT, SIDECAR)
    if load is PARALLEL:
        return (DIRECT, SIDECAR, PUBLISH_ONLY, DELIVERY_ONLY, WIDE)
    return (DIRECT, SIDECAR, PUBLISH_ONLY)


@dataclass
class Measured:
    """One row of one round: pubload's report and the CPU read around it."""

    per_second: float
    publish_p50_us: float
    publish_p99_us: float
    delivery_p50_us: float  # -1: not delivered (no subscriber)
    delivery_p99_us: float
    delivered_per_second: float  # from the first publish to the last delivery
    published_total: int
    errors: int
    undelivered: int
    sidecar_cpu_us: float  # per published message; NaN on the direct path
    backend_cpu_us: float
    pubload_cpu_us: float
    first_error: str = ""
    late_p50_us: float = -1.0  # open loop: how late pubload started its publishes (-1: closed loop)
    late_p99_us: float = -1.0


def median_of(runs: list[Measured]) -> Measured:
    def med(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in runs))

    return Measured(
        per_second=med("per_second"),
        publish_p50_us=med("publish_p50_us"),
        publish_p99_us=med("publish_p99_us"),
        delivery_p50_us=med("delivery_p50_us"),
        delivery_p99_us=med("delivery_p99_us"),
        delivered_per_second=med("delivered_per_second"),
        late_p50_us=med("late_p50_us"),
        late_p99_us=med("late_p99_us"),
        published_total=sum(r.published_total for r in runs),
        errors=sum(r.errors for r in runs),
        undelivered=sum(r.undelivered for r in runs),
        sidecar_cpu_us=med("sidecar_cpu_us"),
        backend_cpu_us=med("backend_cpu_us"),
        pubload_cpu_us=med("pubload_cpu_us"),
        first_error=next((r.first_error for r in runs if r.first_error), ""),
    )


def round_order(round_index: int, paths: tuple[str, ...]) -> tuple[str, ...]:
    """The paths of one row group, reversed every other round so drift touches them alike."""
    return paths if round_index % 2 == 0 else tuple(reversed(paths))


def per_message_us(cpu_seconds: float, messages: int) -> float:
    return cpu_seconds / max(messages, 1) * 1e6


# --- processes -------------------------------------------------------------------------------------


def build_pubload() -> Path:
    if shutil.which("go") is None:
        raise SystemExit("bench/pubsub.py needs Go to build its load generator (bench/pubload): go not found on PATH")
    BUILD.mkdir(parents=True, exist_ok=True)
    binary = BUILD / "pubload"
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=PUBLOAD, check=True, env=env)
    return binary


class Pubload(Child):
    """The Go load generator: one JSON command a line in, one JSON result a line out."""

    def __init__(self, binary: Path, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
        ready = self._read()
        if not ready.get("ready"):
            raise SystemExit(f"pubload did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"pubload exited {self.process.wait()}:\n{self.log.read_text(errors='replace')}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise SystemExit(f"pubload: {answer['error']} (command {command})")
        return answer

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # its way to end by itself
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SidecarProcess(Child):
    def __init__(self, folder: Path, app_port: int, log: Path) -> None:
        self.grpc_port, self.actuator_port = free_port(), free_port()
        args = serve_command(
            self.grpc_port, self.actuator_port, "--resources-path", str(folder), "--app-port", str(app_port),
            "--log-level", "warning",
        )  # fmt: skip
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.wait_for(lambda body: body.get("status") == "UP", "/actuator/health/readiness", "readiness UP")

    def wait_for(self, done: Any, path: str, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"sidecar exited {self.process.returncode}:\n{self.log.read_text(errors='replace')}")
            try:
                url = f"http://127.0.0.1:{self.actuator_port}{path}"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if done(json.loads(response.read())):
                        return
            except urllib.error.HTTPError as error:
                if done(json.loads(error.read() or b"{}")):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise SystemExit(f"sidecar: no {what} after {timeout:.0f} s:\n{self.log.read_text(errors='replace')}")


def manifests(addresses: dict[str, str]) -> str:
    documents = []
    for backend, address in addresses.items():
        kind, key = COMPONENT_TYPES[backend]
        for name, extra in ((backend, ""), (wide(backend), f', {{name: concurrency, value: "{WIDE_CONCURRENCY}"}}')):
            documents.append(
                "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
                f"metadata: {{name: {name}}}\nspec:\n  type: {kind}\n  version: v1\n"
                f'  metadata: [{{name: {key}, value: "{address}"}}{extra}]\n'
            )
    documents.append(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        f"metadata: {{name: {HOP_STORE}}}\nspec:\n  type: state.in-memory\n  version: v1\n"
    )
    return "---\n".join(documents)


# --- the run -----------------------------------------------------------------------------------------


def measure(pubload: Pubload, sidecar: SidecarProcess, backend_pid: int, backend: str, path: str, load: Load,
            seconds: float, warmup: float) -> Measured:  # fmt: skip
    if path == HOP:
        target = {"path": "hop", "pubsub": HOP_STORE, "topic": "bench"}
    elif path == GRPC_FLOOR:
        target = {"path": "floor", "pubsub": HOP_STORE, "topic": "bench"}
    elif path == GO_FLOOR:
        target = {"path": "go-floor", "pubsub": HOP_STORE, "topic": "bench"}
    elif path == TCP_FLOOR:
        target = {"path": "echo", "pubsub": "-", "topic": "-"}
    elif path == DELIVERY_ONLY:
        target = {"path": DIRECT, "pubsub": backend, "topic": topics(backend)[SIDECAR]}
    elif path == WIDE:
        target = {"path": SIDECAR, "pubsub": wide(backend), "topic": topics(backend)[WIDE]}
    else:
        target = {"path": DIRECT if path == DIRECT else SIDECAR, "pubsub": backend, "topic": topics(backend)[path]}
    before = (sidecar.cpu_seconds(), process_cpu_seconds(backend_pid), pubload.cpu_seconds())
    report = pubload.run(
        backend=backend, **target, rate=load.rate, in_flight=load.in_flight, seconds=seconds, warmup=warmup,
        deliver=path in DELIVERED, drain_seconds=max(DRAIN_SECONDS, DRAIN_FACTOR * (seconds + warmup)),
    )  # fmt: skip
    after = (sidecar.cpu_seconds(), process_cpu_seconds(backend_pid), pubload.cpu_seconds())
    total = int(report["published_total"])
    return Measured(
        per_second=float(report["per_second"]),
        publish_p50_us=float(report["publish_p50_us"]),
        publish_p99_us=float(report["publish_p99_us"]),
        delivery_p50_us=float(report["delivery_p50_us"]),
        delivery_p99_us=float(report["delivery_p99_us"]),
        delivered_per_second=float(report["delivered_per_second"]) if path in DELIVERED else -1.0,
        late_p50_us=float(report["late_p50_us"]),
        late_p99_us=float(report["late_p99_us"]),
        published_total=total,
        errors=int(report["errors"]),
        undelivered=int(report["undelivered"]),
        sidecar_cpu_us=float("nan") if path in NO_SIDECAR else per_message_us(after[0] - before[0], total),
        backend_cpu_us=float("nan") if path in SCALE else per_message_us(after[1] - before[1], total),
        pubload_cpu_us=per_message_us(after[2] - before[2], total),
        first_error=str(report.get("first_error") or ""),
    )


def rows_of(backends: tuple[str, ...]) -> Iterator[tuple[str, Load, str]]:
    for backend in backends:
        for load in LOADS:
            for path in paths_of(load):
                yield backend, load, path


def number(value: float, digits: int = 0) -> str:
    if value != value or value < 0:  # NaN: not measured; -1: nothing delivered
        return "-"
    return f"{value:,.{digits}f}"


def print_table(table: dict[tuple[str, str, str], Measured], backends: tuple[str, ...]) -> None:
    print("| backend | path | load | published msg/s | publish p50 µs | publish p99 µs | delivered msg/s "
          "| delivery p50 µs | delivery p99 µs | sidecar CPU µs/msg | backend CPU µs/msg | pubload CPU µs/msg "
          "| errors | undelivered |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for backend, load, path in rows_of(backends):
        row = table[(backend, load.name, path)]
        cells = [
            backend, path, load.name, number(row.per_second), number(row.publish_p50_us), number(row.publish_p99_us),
            number(row.delivered_per_second), number(row.delivery_p50_us), number(row.delivery_p99_us),
            number(row.sidecar_cpu_us, 1), number(row.backend_cpu_us, 1), number(row.pubload_cpu_us, 1),
            str(row.errors), str(row.undelivered),
        ]  # fmt: skip
        print(f"| {' | '.join(cells)} |")
    print("\nadded by the sidecar (sidecar minus direct, same load, medians):\n")
    print("| backend | load | publish p50 | publish p99 | delivery p50 | delivery p99 |")
    print("|---|---|---|---|---|---|")
    for backend in backends:
        for load in LOADS:
            ours, theirs = table[(backend, load.name, SIDECAR)], table[(backend, load.name, DIRECT)]
            print(f"| {backend} | {load.name} | {ours.publish_p50_us - theirs.publish_p50_us:+,.0f} µs "
                  f"| {ours.publish_p99_us - theirs.publish_p99_us:+,.0f} µs "
                  f"| {ours.delivery_p50_us - theirs.delivery_p50_us:+,.0f} µs "
                  f"| {ours.delivery_p99_us - theirs.delivery_p99_us:+,.0f} µs |")  # fmt: skip
    hop = table.get(("-", OPEN_1000.name, HOP))
    if hop is not None:
        print(f"\nfor scale, {HOP} through the same client @1000/s (the gRPC hop with almost nothing behind it): "
              f"p50 {hop.publish_p50_us:,.0f} µs, p99 {hop.publish_p99_us:,.0f} µs, "
              f"sidecar CPU {hop.sidecar_cpu_us:.1f} µs/call")  # fmt: skip
    for path, what in ((GRPC_FLOOR, "the native front answering in Rust, no handler: the least a gRPC hop costs"),
                       (GO_FLOOR, "grpc-go's server answering with no work: the same hop in Go"),
                       (TCP_FLOOR, "to a bare uvloop echo: the least any hop costs")):  # fmt: skip
        floor = table.get(("-", OPEN_1000.name, path))
        if floor is not None:
            print(f"for scale, {path} through the same client @1000/s ({what}): "
                  f"p50 {floor.publish_p50_us:,.0f} µs, p99 {floor.publish_p99_us:,.0f} µs")  # fmt: skip


def checks(table: dict[tuple[str, str, str], Measured], backends: tuple[str, ...]) -> list[tuple[str, bool | None]]:
    """(text, passed); None for a figure printed beside a target, not checked against it."""
    out: list[tuple[str, bool | None]] = []
    for backend in backends:
        ours, theirs = table[(backend, OPEN_1000.name, SIDECAR)], table[(backend, OPEN_1000.name, DIRECT)]
        p50 = ours.publish_p50_us - theirs.publish_p50_us
        p99 = ours.publish_p99_us - theirs.publish_p99_us
        out.append((f"{backend}: added publish p50 @1000/s {p50:+.0f} µs (<= {ADDED_P50_US:.0f} µs)",
                    p50 <= ADDED_P50_US))  # fmt: skip
        out.append((f"{backend}: added publish p99 @1000/s {p99:+.0f} µs (<= {ADDED_P99_US:.0f} µs)",
                    p99 <= ADDED_P99_US))  # fmt: skip
        out.append((f"{backend}: @1000/s pubload started its publishes late by p50 / p99 {ours.late_p50_us:.0f} / "
                    f"{ours.late_p99_us:.0f} µs through the sidecar, {theirs.late_p50_us:.0f} / "
                    f"{theirs.late_p99_us:.0f} µs direct (for scale: the latencies count from the send, so a path "
                    "whose load delays the generator more would show here)", None))  # fmt: skip
        alone = table[(backend, OPEN_1000.name, PUBLISH_ONLY)]
        alone_p50 = alone.publish_p50_us - theirs.publish_p50_us
        alone_p99 = alone.publish_p99_us - theirs.publish_p99_us
        out.append((f"{backend}: added publish p50 / p99 @1000/s to a topic nobody subscribes to {alone_p50:+.0f} / "
                    f"{alone_p99:+.0f} µs (for scale: the sidecar delivering nothing meanwhile)", None))  # fmt: skip
        cpu = table[(backend, PARALLEL.name, SIDECAR)].sidecar_cpu_us
        out.append((f"{backend}: sidecar CPU per published message @64 in flight, delivery included {cpu:.1f} µs "
                    f"(<= {CPU_PER_MESSAGE_US:.0f} µs)", cpu <= CPU_PER_MESSAGE_US))  # fmt: skip
        alone = table[(backend, PARALLEL.name, PUBLISH_ONLY)].sidecar_cpu_us
        out.append((f"{backend}: sidecar CPU per published message @64 in flight, no subscriber {alone:.1f} µs "
                    f"(for scale beside the {CPU_PER_MESSAGE_US:.0f} µs target)", None))  # fmt: skip
        delivering = table[(backend, PARALLEL.name, DELIVERY_ONLY)].sidecar_cpu_us
        out.append((f"{backend}: sidecar CPU per delivered message @64 in flight, published directly to the "
                    f"backend {delivering:.1f} µs (for scale: delivery alone)", None))  # fmt: skip
        matched = table[(backend, PARALLEL.name, WIDE)].sidecar_cpu_us
        out.append((f"{backend}: sidecar CPU per published message @64 in flight, delivery included, the "
                    f"subscription's concurrency {WIDE_CONCURRENCY} {matched:.1f} µs (for scale: the default "
                    f"concurrency is the target's line)", None))  # fmt: skip
    floor = table.get(("-", OPEN_1000.name, GRPC_FLOOR))
    if floor is not None:
        out.append((f"{GRPC_FLOOR} @1000/s, a gRPC hop with no work behind it, the hop the sidecar's path adds to "
                    f"the direct one: p50 {floor.publish_p50_us:.0f} / p99 {floor.publish_p99_us:.0f} µs (for scale "
                    f"beside the {ADDED_P50_US:.0f} / {ADDED_P99_US:.0f} µs added-latency targets)", None))  # fmt: skip
    go_floor = table.get(("-", OPEN_1000.name, GO_FLOOR))
    if go_floor is not None:
        out.append((f"{GO_FLOOR} @1000/s, the same hop served by grpc-go: p50 {go_floor.publish_p50_us:.0f} / p99 "
                    f"{go_floor.publish_p99_us:.0f} µs (for scale beside the native floor)", None))  # fmt: skip
    if "redis" in backends:
        delivery = table[("redis", SERIAL.name, SIDECAR)].delivery_p50_us
        out.append((f"redis: delivery p50 end to end @1 in flight {delivery:.0f} µs (<= {DELIVERY_P50_US:.0f} µs)",
                    0 <= delivery <= DELIVERY_P50_US))  # fmt: skip
    faults = sum(r.errors + r.undelivered for r in table.values())
    out.append((f"no publish errors and every message delivered ({faults} faults)", faults == 0))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds of each row in each round")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds published before each row's measurement")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: redis, jetstream")
    parser.add_argument("--json", metavar="FILE", help="also write every round's figures here")
    args = parser.parse_args()
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = set(backends) - set(BACKENDS)
    if unknown or not backends:
        parser.error(f"--backends: choose among {', '.join(BACKENDS)}")

    binary = build_pubload()
    started, load_before = time.monotonic(), os.getloadavg()[0]
    runs: dict[tuple[str, str, str], list[Measured]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pubsub-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        addresses: dict[str, str] = {}
        pids: dict[str, int] = {}
        if "redis" in backends:
            redis = stack.enter_context(RedisServer(tmp / "redis"))
            addresses["redis"], pids["redis"] = redis.address, redis.pid or 0
        if "jetstream" in backends:
            nats = stack.enter_context(NatsServer(tmp / "nats"))
            addresses["jetstream"], pids["jetstream"] = nats.url, nats.pid or 0
        folder = tmp / "components"
        folder.mkdir()
        (folder / "pubsub.yaml").write_text(manifests(addresses))

        echo_port = free_port()
        echo = Server("tcp echo", [sys.executable, "bench/mesh_echo.py", "tcp", str(echo_port)], None, echo_port)
        stack.callback(echo.stop)
        grpc_floor = start_baseline("native-floor")
        stack.callback(grpc_floor.stop)
        go_floor_port = free_port()
        go_floor = Server("grpc-go floor", [str(binary), "--serve-floor", f"127.0.0.1:{go_floor_port}"], None,
                          go_floor_port)  # fmt: skip
        stack.callback(go_floor.stop)
        app_port = free_port()
        # The app's subscriptions, "pubsub/topic": each backend's default component and its wide one.
        subscriptions = [f"{p}/{topics(b)[path]}" for b in backends for p, path in ((b, SIDECAR), (wide(b), WIDE))]
        sidecar = SidecarProcess(folder, app_port, tmp / "sidecar.log")
        stack.callback(sidecar.stop)
        load_args = [
            "--sidecar", f"127.0.0.1:{sidecar.grpc_port}", "--app-port", str(app_port),
            "--subscribe", ",".join(subscriptions), "--echo", f"127.0.0.1:{echo_port}",
            "--grpc-floor", f"127.0.0.1:{grpc_floor.port}", "--grpc-go-floor", f"127.0.0.1:{go_floor.port}",
        ]  # fmt: skip
        if "redis" in backends:
            load_args += ["--redis", addresses["redis"], "--redis-topic", topics("redis")[DIRECT]]
        if "jetstream" in backends:
            load_args += ["--nats", addresses["jetstream"], "--nats-topic", topics("jetstream")[DIRECT]]
        pubload = Pubload(binary, load_args, tmp / "pubload.log")
        stack.callback(pubload.stop)
        sidecar.wait_for(lambda body: set(subscriptions) <= set(body.get("app", {}).get("subscriptions", [])),
                         "/actuator/info", "subscriptions of the app")  # fmt: skip
        idle_rss = sidecar.rss_mib()

        for backend in backends:  # warm-up: connections, streams, consumers, code paths
            for path in (DIRECT, SIDECAR, PUBLISH_ONLY, WIDE):
                measure(pubload, sidecar, pids[backend], backend, path, PARALLEL, 0.5, 0.0)
        for round_index in range(args.rounds):
            for backend in backends:
                for load in LOADS:
                    for path in round_order(round_index, paths_of(load)):
                        runs.setdefault((backend, load.name, path), []).append(
                            measure(pubload, sidecar, pids[backend], backend, path, load, args.seconds, args.warmup)
                        )
            for path in round_order(round_index, SCALE):
                runs.setdefault(("-", OPEN_1000.name, path), []).append(
                    measure(pubload, sidecar, pids[backends[0]], "-", path, OPEN_1000, args.seconds, args.warmup)
                )
        loaded_rss = sidecar.rss_mib()

    table = {key: median_of(value) for key, value in runs.items()}
    versions = ", ".join(
        subprocess.run([BACKEND_PROCESS[b], "--version"], capture_output=True, text=True).stdout.strip().split("\n")[0]
        for b in backends
    )
    print(f"\n### pub/sub: sidecar beside the direct client, {args.rounds} rounds of {args.seconds:g} s "
          f"(+{args.warmup:g} s warm-up) per row, medians; {os.cpu_count()} cores; {versions}\n")  # fmt: skip
    print_table(table, backends)
    print(f"\nsidecar RSS: {idle_rss:.0f} MiB idle, {loaded_rss:.0f} MiB after the loaded runs; "
          f"whole run {time.monotonic() - started:.0f} s; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (this run's own processes count in it)")  # fmt: skip
    errors = {f"{k[0]} {k[2]} {k[1]}": r.first_error for k, r in table.items() if r.first_error}
    for where, error in errors.items():
        print(f"first error, {where}: {error}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({" | ".join(key): [asdict(r) for r in value] for key, value in runs.items()}, indent=1)
        )
    print("\npub/sub targets:")
    for text, passed in checks(table, backends):
        mark = "info" if passed is None else "PASS" if passed else "MISS"
        print(f"  [{mark}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
