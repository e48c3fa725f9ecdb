"""``make bench``, mesh part: a Bolt and a Dubbo echo upstream called directly, through
HAProxy in TCP mode (the floor for any proxy hop), and through the sidecar's mesh, in the
same run, at one connection with one request in flight, 64 x 1 and 64 x 16.

The load generator is ``bench/meshload`` (Rust; its own CPU share is printed), sending
the request frames recorded from anthunder and dubbo-ssl-python with fresh ids. Each
figure is the median of the rounds (five by default); rounds alternate the paths so that the
machine's drift touches them alike. A p99 at one request in flight moves by tens of µs from
one 3-second round to the next here (ten Bolt rounds in one run: 121 to 211 µs through the
sidecar, 114 to 154 µs direct), so a median of three let one or two rounds decide a line.
Proxy CPU per request is its process CPU clock over the run (the sidecar's whole process);
RSS is read after the loaded runs.

InvokeService to the Bolt and HTTP upstreams is timed twice: by ghz, as the other gRPC
rows of ``make bench`` are, and by meshload's own gRPC client, the client of the direct
Bolt rows. The target (added p99 over calling the upstream directly) is checked on the
second pair, where one client times both sides; ghz's figure is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Child  # noqa: E402
from tests.sidecar import free_port, serve_command  # noqa: E402

LOADS = ((1, 1), (64, 1), (64, 16))
WARMUP_SECONDS = 0.3  # meshload runs this long before it starts timing
MESHLOAD = ROOT / "bench" / "meshload"
TEMPLATES = {"bolt": "bolt_request_echo", "dubbo": "dubbo_request_echo"}
SERVICES = {"bolt": {"service": "com.example.EchoService:1.0"}, "dubbo": {"service": "com.example.EchoService"}}
HAPROXY_CONFIG = """global
    maxconn 4096
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend mesh
    bind 127.0.0.1:{port}
    default_backend upstream
backend upstream
    server echo 127.0.0.1:{upstream}
"""


@dataclass
class Run:
    ok: int
    errors: int
    per_second: float
    p50_us: float
    p99_us: float
    proxy_cpu_us: float
    load_cpu_share: float
    answers: int = 0  # every answer meshload counted: the timed ones, the failed and the warm-up's


class Process(Child):
    def __init__(self, args: list[str], port: int, ready_line: bool = False) -> None:
        self.port = port
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if ready_line:
            assert self.process.stdout is not None
            self.process.stdout.readline()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{args[0]} exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"{args[0]} never listened on {port}")


def build_meshload() -> Path:
    target = ROOT / "bench" / ".tools" / "meshload-target"
    subprocess.run(["cargo", "build", "--release", "--quiet", "--target-dir", str(target)], cwd=MESHLOAD, check=True)
    return target / "release" / "meshload"


def haproxy_binary() -> str | None:
    found = shutil.which("haproxy")
    if found is None and shutil.which("apt-get") and Path("/proc/self").exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "haproxy"], capture_output=True)
        found = shutil.which("haproxy")
    return found


def run_load(binary: Path, protocol: str, port: int, template: str, load: tuple[int, int], seconds: float,
             proxy: Child | None, path: str = "") -> Run:  # fmt: skip
    """meshload's run; ``protocol`` grpc sends ``template`` as the message of unary calls to ``path``."""
    connections, depth = load
    before = proxy.cpu_seconds() if proxy else 0.0
    result = subprocess.run(
        [str(binary), "--address", f"127.0.0.1:{port}", "--protocol", protocol, "--template", template,
         "--connections", str(connections), "--depth", str(depth), "--seconds", str(seconds),
         "--warmup", str(WARMUP_SECONDS),
         *(("--path", path) if path else ())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    after = proxy.cpu_seconds() if proxy else 0.0
    report = json.loads(result.stdout)
    # The proxy's CPU is read around the whole run, warm-up included: divided by every answer
    # meshload counted, those of the warm-up and the failed ones too.
    total = max(report["ok"] + report["errors"] + report["warmup_answers"], 1)
    return Run(
        ok=report["ok"],
        errors=report["errors"],
        per_second=report["ok"] / report["seconds"],
        p50_us=report["p50_us"],
        p99_us=report["p99_us"],
        proxy_cpu_us=(after - before) / total * 1e6 if proxy else float("nan"),
        # meshload runs on one thread: its share of that one core (near 100%: it was the bottleneck)
        load_cpu_share=report["cpu_seconds"] / report["seconds"],
        answers=total,
    )


def run_runtime_call(binary: Path, port: int, rpc: str, request: Message, seconds: float, server: Child) -> Run:
    """meshload's run of unary ``rpc`` of Layotto's runtime API at one call in flight."""
    return run_load(binary, "grpc", port, request.SerializeToString().hex(), (1, 1), seconds, server,
                    f"/spec.proto.runtime.v1.Runtime/{rpc}")  # fmt: skip


def median_added(through: list[Run], direct: list[Run], pct: str) -> float:
    """The median over rounds of each round's figure through a proxy less the direct one of
    the same round: rounds alternate the paths so that the machine's drift cancels, which a
    difference of the two paths' own medians (perhaps of different rounds) would undo."""
    return statistics.median(float(getattr(t, pct) - getattr(d, pct)) for t, d in zip(through, direct, strict=True))


def median_run(runs: list[Run]) -> Run:
    return Run(
        ok=sum(r.ok for r in runs),
        errors=sum(r.errors for r in runs),
        per_second=statistics.median(r.per_second for r in runs),
        p50_us=statistics.median(r.p50_us for r in runs),
        p99_us=statistics.median(r.p99_us for r in runs),
        proxy_cpu_us=statistics.median(r.proxy_cpu_us for r in runs),
        load_cpu_share=statistics.median(r.load_cpu_share for r in runs),
    )


def mesh_config(protocol: str, port: int, upstream: int) -> str:
    route = {"name": "echo", "match": SERVICES[protocol], "cluster": "echo"}
    return json.dumps(
        {
            "mesh": {
                "listeners": [{"protocol": protocol, "address": f"127.0.0.1:{port}", "routes": [route]}],
                "clusters": [{"name": "echo", "protocol": protocol, "hosts": [f"127.0.0.1:{upstream}"]}],
            }
        }
    )


def bench_protocol(protocol: str, binary: Path, haproxy: str | None, rounds: int, seconds: float,
                   tmp: Path) -> list[tuple[str, str, bool | None]]:  # fmt: skip
    vectors = json.loads((ROOT / "tests" / "mesh" / "golden" / "vectors.json").read_text())
    template = vectors[TEMPLATES[protocol]]["hex"]
    upstream_port = free_port()
    upstream = Process([sys.executable, "bench/mesh_echo.py", protocol, str(upstream_port)], upstream_port, True)
    paths: dict[str, tuple[int, Process | None]] = {"direct": (upstream_port, None)}
    started: list[Process] = [upstream]
    try:
        if haproxy:
            port = free_port()
            config = tmp / f"haproxy-{protocol}.cfg"
            config.write_text(HAPROXY_CONFIG.format(port=port, upstream=upstream_port))
            paths["haproxy"] = (port, Process([haproxy, "-f", str(config), "-db"], port))
            started.append(paths["haproxy"][1])  # type: ignore[arg-type]
        port = free_port()
        config = tmp / f"mesh-{protocol}.yaml"
        config.write_text(mesh_config(protocol, port, upstream_port))
        args = serve_command(free_port(), free_port(), "--config", str(config), "--log-level", "warning")
        sidecar = Process(args, port)
        started.append(sidecar)
        paths["sidecar"] = (port, sidecar)
        idle_rss = sidecar.rss_mib()
        sidecar.reset_peak_rss()
        runs: dict[tuple[str, tuple[int, int]], list[Run]] = {}
        for _ in range(rounds):
            for load in LOADS:
                for name, (port, proxy) in paths.items():
                    runs.setdefault((name, load), []).append(
                        run_load(binary, protocol, port, template, load, seconds, proxy)
                    )
        # the peak while the loads ran, not what is left once their connections are gone
        loaded_rss = sidecar.peak_rss_mib()
        haproxy_rss = paths["haproxy"][1].rss_mib() if "haproxy" in paths else float("nan")  # type: ignore[union-attr]
    finally:
        for process in reversed(started):
            process.stop()
    table = {key: median_run(value) for key, value in runs.items()}
    print(
        f"\n### {protocol}: echo upstream (Python, uvloop), {rounds} rounds of {seconds:.0f} s, medians "
        "(added: the median of each round's own difference to the direct path)\n"
    )
    print("| path | connections x in flight | requests/s | p50 µs | p99 µs | added p50 | added p99 "
          "| proxy CPU/request µs | meshload CPU (its one core) | errors |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for load in LOADS:
        for name in paths:
            row = table[(name, load)]
            through, alone = runs[(name, load)], runs[("direct", load)]
            added50 = "" if name == "direct" else f"{median_added(through, alone, 'p50_us'):+.0f}"
            added99 = "" if name == "direct" else f"{median_added(through, alone, 'p99_us'):+.0f}"
            cpu = "" if name == "direct" else f"{row.proxy_cpu_us:.2f}"
            print(f"| {name} | {load[0]}x{load[1]} | {row.per_second:,.0f} | {row.p50_us:.0f} | {row.p99_us:.0f} "
                  f"| {added50} | {added99} | {cpu} | {row.load_cpu_share:.0%} | {row.errors} |")  # fmt: skip
    print(f"\nsidecar RSS: {idle_rss:.0f} MiB idle, at most {loaded_rss:.0f} MiB during the loaded runs; "
          f"HAProxy {haproxy_rss:.0f} MiB")  # fmt: skip
    checks: list[tuple[str, str, bool | None]] = []

    def added(name: str, load: tuple[int, int], pct: str) -> float:
        return median_added(runs[(name, load)], runs[("direct", load)], pct)

    sidecar_p50, sidecar_p99 = added("sidecar", (1, 1), "p50_us"), added("sidecar", (1, 1), "p99_us")
    checks.append((protocol, f"added p99 @1x1 {sidecar_p99:.0f} µs (< 100 µs)", sidecar_p99 < 100))
    per_request = table[("sidecar", (64, 16))].proxy_cpu_us
    checks.append((protocol, f"CPU/request @64x16 {per_request:.2f} µs (<= 2.5 µs)", per_request <= 2.5))
    checks.append((protocol, f"RSS under load {loaded_rss:.0f} MiB (<= 75 MiB)", loaded_rss <= 75))
    busy = [f"{name} {c}x{d}" for (name, (c, d)), row in table.items() if row.load_cpu_share >= 0.9]
    if busy:
        checks.append((protocol, f"meshload kept its core 90%+ busy in {', '.join(busy)}: those rows' "
                       "requests/s may be the generator's, not the path's (for scale)", None))  # fmt: skip
    # the latency figures leave failed requests out: a path failing fast must not pass for fast
    failed = sum(r.errors for (name, _), rounds_run in runs.items() if name == "sidecar" for r in rounds_run)
    checks.append((protocol, f"no failed requests through the sidecar ({failed})", failed == 0))
    if "haproxy" in paths:
        floor = added("haproxy", (1, 1), "p50_us")
        text = f"added p50 @1x1 {sidecar_p50:.0f} µs (<= HAProxy's {floor:.0f} + 10)"
        checks.append((protocol, text, sidecar_p50 <= floor + 10))
        for load, share, what in (((64, 16), 0.5, "half of HAProxy's"), ((64, 1), 1.0, "HAProxy's")):
            ours, theirs = table[("sidecar", load)].per_second, table[("haproxy", load)].per_second
            checks.append(
                (protocol, f"requests/s @{load[0]}x{load[1]} {ours:,.0f} (>= {what} {theirs * share:,.0f})",
                 ours >= theirs * share)
            )  # fmt: skip
    return checks


def http_direct(port: int, calls: int) -> Run:
    """The HTTP upstream called directly at one in flight, by the channel's own client."""
    import asyncio

    from layotto_fast.http.client import HttpClient

    async def go() -> list[float]:
        client = HttpClient(f"127.0.0.1:{port}")
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            await client.request("POST", "/echo", {}, b"hi", 5)
            latencies.append((time.perf_counter() - started) * 1e6)
        client.close()
        return sorted(latencies)

    latencies = asyncio.run(go())
    return Run(calls, 0, float("nan"), latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
               float("nan"), float("nan"))  # fmt: skip


def bench_invoke(binary: Path, rounds: int, seconds: float, tmp: Path) -> list[tuple[str, str, bool | None]]:
    """InvokeService over gRPC (ghz) to a Bolt and an HTTP echo upstream, beside calling each directly."""
    from bench.run import ghz_binary, protoset
    from layotto_fast._proto import runtime_pb2 as pb

    ghz, descriptors = ghz_binary(), protoset()
    vectors = json.loads((ROOT / "tests" / "mesh" / "golden" / "vectors.json").read_text())
    bolt_port, http_port = free_port(), free_port()
    started = [
        Process([sys.executable, "bench/mesh_echo.py", "bolt", str(bolt_port)], bolt_port, True),
        Process([sys.executable, "bench/http_echo.py", str(http_port)], http_port, True),
    ]
    config = tmp / "invoke.yaml"
    config.write_text(json.dumps({
        "mesh": {"clusters": [{"name": "echo", "protocol": "bolt", "hosts": [f"127.0.0.1:{bolt_port}"]}]},
        "invoke": {"targets": [
            {"id": "bolt", "channel": "bolt", "cluster": "echo"},
            {"id": "http", "channel": "http", "address": f"127.0.0.1:{http_port}"},
        ]},
    }))  # fmt: skip
    grpc_port = free_port()
    args = serve_command(grpc_port, free_port(), "--config", str(config), "--log-level", "warning")
    sidecar = Process(args, grpc_port)
    started.append(sidecar)
    rows: dict[tuple[str, int], list[Run]] = {}
    try:
        for _ in range(rounds):
            rows.setdefault(("bolt direct", 1), []).append(
                run_load(binary, "bolt", bolt_port, vectors["bolt_request_echo"]["hex"], (1, 1), seconds, None)
            )
            rows.setdefault(("bolt direct", 64), []).append(
                run_load(binary, "bolt", bolt_port, vectors["bolt_request_echo"]["hex"], (64, 1), seconds, None)
            )
            rows.setdefault(("http direct", 1), []).append(http_direct(http_port, 2000))
            # The gRPC hop alone, for scale: GetState on the embedded in-memory store.
            get_state = tmp / "get-state.bin"
            get_state.write_bytes(pb.GetStateRequest(store_name="in-memory", key="k").SerializeToString())
            rows.setdefault(("GetState in-memory (gRPC hop alone)", 1), []).append(
                ghz_invoke(ghz, descriptors, get_state, grpc_port, 1, 3000, sidecar, "GetState")
            )
            # The same hop timed by meshload: with "bolt direct", the two hops an InvokeService
            # to Bolt is made of, each timed by the client that times the invoke row.
            rows.setdefault((MESHLOAD_HOP, 1), []).append(
                run_runtime_call(binary, grpc_port, "GetState",
                                 pb.GetStateRequest(store_name="in-memory", key="k"), seconds, sidecar)
            )  # fmt: skip
            for target in ("bolt", "http"):
                request = pb.InvokeServiceRequest(id=target, message=pb.CommonInvokeRequest(method="echo"))
                request.message.data.value = b"hi"
                body = tmp / f"invoke-{target}.bin"
                body.write_bytes(request.SerializeToString())
                for in_flight, total in ((1, 3000), (64, 20000)):
                    rows.setdefault((f"InvokeService -> {target}", in_flight), []).append(
                        ghz_invoke(ghz, descriptors, body, grpc_port, in_flight, total, sidecar)
                    )
                # The same call timed by meshload, the client of the direct Bolt rows.
                rows.setdefault((f"InvokeService -> {target} (meshload)", 1), []).append(
                    run_runtime_call(binary, grpc_port, "InvokeService", request, seconds, sidecar)
                )
    finally:
        for process in reversed(started):
            process.stop()
    print("\n### InvokeService over gRPC (ghz, and meshload's gRPC client) beside the direct call, medians\n")
    print("| path | in flight | calls/s | p50 µs | p99 µs | sidecar CPU/call µs | errors |")
    print("|---|---|---|---|---|---|---|")
    table = {key: median_run(value) for key, value in rows.items()}
    for (name, in_flight), row in sorted(table.items()):
        cpu = "" if row.proxy_cpu_us != row.proxy_cpu_us else f"{row.proxy_cpu_us:.1f}"
        rate = "" if row.per_second != row.per_second else f"{row.per_second:,.0f}"
        print(f"| {name} | {in_flight} | {rate} | {row.p50_us:.0f} | {row.p99_us:.0f} | {cpu} | {row.errors} |")
    added = median_added(rows[("InvokeService -> bolt (meshload)", 1)], rows[("bolt direct", 1)], "p99_us")
    added_ghz = median_added(rows[("InvokeService -> bolt", 1)], rows[("bolt direct", 1)], "p99_us")
    failed_calls = sum(
        r.errors for (name, _), runs_of in rows.items() if name.startswith("InvokeService") for r in runs_of
    )
    by_round = added_by_round(rows[("InvokeService -> bolt (meshload)", 1)], rows[("bolt direct", 1)])
    hops = hops_note(
        table[("InvokeService -> bolt (meshload)", 1)], table[(MESHLOAD_HOP, 1)], table[("bolt direct", 1)]
    )
    return [
        ("invoke", f"InvokeService -> bolt @1: added p99 {added:.0f} µs, both timed by meshload, median of the "
         "rounds' own differences (< 200 µs)", added < 200),
        ("invoke", f"no failed InvokeService calls ({failed_calls})", failed_calls == 0),
        ("invoke", f"InvokeService -> bolt @1: added p99 round by round {by_round} µs (for scale: the spread "
         "behind the median)", None),
        ("invoke", f"InvokeService -> bolt @1: added p99 {added_ghz:.0f} µs with ghz calling the sidecar "
         "(for scale: ghz's own cost included)", None),
        ("invoke", hops, None),
    ]  # fmt: skip


MESHLOAD_HOP = "GetState in-memory (gRPC hop alone, meshload)"


def hops_note(invoke: Run, hop: Run, direct: Run) -> str:
    """InvokeService to Bolt beside the two hops it is made of (the gRPC hop into the sidecar
    and a Bolt round trip to the upstream), all timed by meshload: what the sidecar adds
    between the two is the invoke's p50 less both hops' p50s."""
    between = invoke.p50_us - hop.p50_us - direct.p50_us
    return (f"InvokeService -> bolt @1: p50 {invoke.p50_us:.0f} µs = gRPC hop {hop.p50_us:.0f} + bolt round trip "
            f"{direct.p50_us:.0f} + {between:.0f} between them (for scale, all timed by meshload)")  # fmt: skip


def added_by_round(through: list[Run], direct: list[Run]) -> str:
    """Each round's p99 through the sidecar minus the direct p99 of the same round, in run order:
    the tail at one call in flight moves with the machine from round to round (see the README)."""
    return ", ".join(f"{t.p99_us - d.p99_us:.0f}" for t, d in zip(through, direct, strict=True))


def ghz_invoke(ghz: str, descriptors: Path, body: Path, port: int, in_flight: int, total: int,
               sidecar: Process, rpc: str = "InvokeService") -> Run:  # fmt: skip
    before = sidecar.cpu_seconds()
    result = subprocess.run(
        [ghz, "--insecure", "--protoset", str(descriptors), "--call", f"spec.proto.runtime.v1.Runtime.{rpc}",
         "-B", str(body), "-c", str(in_flight), "-n", str(total), "-O", "json", f"127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cpu = sidecar.cpu_seconds() - before
    report = json.loads(result.stdout)
    statuses = report.get("statusCodeDistribution") or {}
    ok = int(statuses.get("OK", 0))
    latency = {p["percentage"]: p["latency"] / 1000 for p in report.get("latencyDistribution") or []}
    return Run(ok, sum(statuses.values()) - ok, report["rps"], latency.get(50, float("nan")),
               latency.get(99, float("nan")), cpu / max(ok, 1) * 1e6, float("nan"))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--protocols", default="bolt,dubbo")
    parser.add_argument("--no-invoke", action="store_true", help="skip the InvokeService rows")
    args = parser.parse_args()
    binary = build_meshload()
    haproxy = haproxy_binary()
    if haproxy is None:
        print("haproxy not found and not installable: its rows and the checks against it are skipped")
    checks: list[tuple[str, str, bool | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in filter(None, args.protocols.split(",")):  # "" runs none: the InvokeService rows alone
            checks += bench_protocol(protocol, binary, haproxy, args.rounds, args.seconds, Path(tmp))
        if not args.no_invoke:
            checks += bench_invoke(binary, args.rounds, args.seconds, Path(tmp))
    print("\nmesh targets (issue 15):")
    for protocol, text, passed in checks:
        verdict = "info" if passed is None else "PASS" if passed else "MISS"
        print(f"  [{verdict}] {protocol}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
