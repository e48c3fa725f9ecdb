"""``make bench``: the sidecar beside a bare grpc.aio echo server, same load generator, same run.

Load comes from ghz (Go; installed from the Go module proxy when missing), which is
not the bottleneck the way a Python client would be. For every scenario it prints
calls/s, p50/p99, the server's CPU time per call (its process CPU clock over the
run, divided by the calls that returned OK) and ghz's own CPU per call, then the
sidecar's idle and loaded RSS and its time from exec to readiness UP, and checks the
targets of the foundation issue (#3) and the native front (#8) against the figures of
this run.

All servers stay up through the run, and every scenario is measured in rounds that
go round the servers in turn (``--rounds``, 5; ``--rounds-serial``, 12 at one call in
flight, where rounds are short and the comparison with the floor is fine), so that a
drift of the shared machine touches them alike: p50, p99 and calls/s are the median
round's, CPU per call the total over the rounds. Servers: the sidecar on each
transport, the native floor (Rust answers alone), the sidecar's handlers behind the
native front with every call in a Task (the alternative to finishing calls in the
same pass), the same handlers behind HTTP/2 on a tokio thread with batched hand-off
to the loop (the alternative to driving HTTP/2 from the loop), and a bare grpc.aio
echo.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "bench" / ".tools"
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from tests.sidecar import free_port, serve_command  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.120.0"


@dataclass
class Row:
    server: str
    rpc: str
    in_flight: int
    calls_ok: int
    errors: int
    calls_per_s: float
    p50_us: float
    p99_us: float
    server_cpu_us: float
    ghz_cpu_us: float


# The in-memory rows before issue 14, as ratios to the Rust floor of that run (``make
# bench`` on cf64e8d, the closing note of stop 12): CPU/call @64, p50 @1. Issue 14 allows
# them to get at most 10 % worse. A figure typed in from another run, not measured in this
# one, and a ratio to a floor that shares the front's code: printed for scale, never judged.
BEFORE_ISSUE_14 = {"GetState": (12.3 / 9.1, 166 / 147), "SaveState": (13.7 / 10.3, 179 / 157)}


def ghz_binary() -> str:
    found = shutil.which("ghz") or next(
        (str(p) for p in [TOOLS / "bin" / "ghz", Path.home() / "go/bin/ghz"] if p.exists()), None
    )
    if found:
        return found
    print(f"installing ghz ({GHZ_MODULE}) ...", file=sys.stderr)
    env = {**os.environ, "GOBIN": str(TOOLS / "bin")}
    subprocess.run(["go", "install", GHZ_MODULE], check=True, env=env)
    return str(TOOLS / "bin" / "ghz")


def protoset() -> Path:
    import grpc_tools
    from grpc_tools import protoc

    TOOLS.mkdir(parents=True, exist_ok=True)
    out = TOOLS / "runtime.protoset"
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        "runtime.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed building the descriptor set for ghz")
    return out


def process_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid``, all its threads, ended ones included.

    Read from the process's CPU-time clock (``clock_getcpuclockid``), which counts in
    nanoseconds: /proc/PID/stat reports the same kernel total rounded to clock ticks
    (10 ms), a fifth of a 50 ms round's CPU. /proc is the fallback where the clock is
    refused."""
    try:
        return time.clock_gettime(process_cpu_clock(pid))
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_cpu_clock(pid: int) -> int:
    """The id of ``pid``'s CPU-time clock, as glibc's clock_getcpuclockid makes it:
    the pid complemented and shifted, and the "scheduler runtime" clock type (2)."""
    return ((~pid) << 3) | 2


def process_status_kib(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Child:
    """A child process a benchmark measures: its CPU (``process_cpu_seconds``), memory from /proc, and its end."""

    process: subprocess.Popen[Any]

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def rss_mib(self) -> float:
        return process_status_kib(self.process.pid, "VmRSS") / 1024

    def reset_peak_rss(self) -> None:
        """From now on ``peak_rss_mib`` is the peak since this call (Linux's clear_refs "5")."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_rss_mib(self) -> float:
        return process_status_kib(self.process.pid, "VmHWM") / 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Server(Child):
    def __init__(self, name: str, args: list[str], ready_url: str | None, port: int) -> None:
        self.name, self.port = name, port
        started = time.monotonic()
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if ready_url is None:
            assert self.process.stdout is not None
            self.process.stdout.readline()  # "ready"
        else:
            wait_for_ready(ready_url, b'"status":"UP"', self.process)
        self.ready_after = time.monotonic() - started

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory_kib(self, field: str) -> int:
        return process_status_kib(self.pid, field)


def wait_for_ready(url: str, marker: bytes, process: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if marker in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"{url} never answered {marker!r}")


def start_sidecar(transport: str) -> Server:
    grpc_port, actuator_port = free_port(), free_port()
    args = serve_command(grpc_port, actuator_port, "--log-level", "warning", "--grpc-transport", transport)
    return Server(
        f"sidecar {transport}", args, f"http://127.0.0.1:{actuator_port}/actuator/health/readiness", grpc_port
    )


def start_baseline(kind: str) -> Server:
    port = free_port()
    name = {
        "grpcio": "bare grpc.aio echo",
        "native-floor": "native floor (Rust only)",
        "native-task": "native, every call a Task",
        "thread-handoff": "thread hand-off (tokio)",
    }[kind]
    args = [sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port", str(port), "--kind", kind]
    return Server(name, args, None, port)


CALLS = {
    "SayHello": {"service_name": "helloworld", "name": "bench"},
    "GetState": {"store_name": "in-memory", "key": "bench"},
    "SaveState": {"store_name": "in-memory", "states": [{"key": "bench", "value": "YmVuY2gtdmFsdWU="}]},
}


def run_ghz(ghz: str, descriptors: Path, server: Server, rpc: str, in_flight: int, total: int) -> Row:
    args = [
        ghz,
        "--insecure",
        "--protoset",
        str(descriptors),
        "--call",
        f"spec.proto.runtime.v1.Runtime.{rpc}",
        "-d",
        json.dumps(CALLS[rpc]),
        "-c",
        str(in_flight),
        "-n",
        str(total),
        "-O",
        "json",
        f"127.0.0.1:{server.port}",
    ]
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_server = server.cpu_seconds()
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    server_cpu = server.cpu_seconds() - before_server
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    ghz_cpu = (after_children.ru_utime + after_children.ru_stime) - (
        before_children.ru_utime + before_children.ru_stime
    )
    report = json.loads(result.stdout)
    statuses = report.get("statusCodeDistribution") or {}
    ok = int(statuses.get("OK", 0))
    latency = {p["percentage"]: p["latency"] / 1000 for p in report.get("latencyDistribution") or []}
    return Row(
        server=server.name,
        rpc=rpc,
        in_flight=in_flight,
        calls_ok=ok,
        errors=sum(statuses.values()) - ok,
        calls_per_s=report["rps"],
        p50_us=latency.get(50, float("nan")),
        p99_us=latency.get(99, float("nan")),
        server_cpu_us=server_cpu / max(ok, 1) * 1e6,
        ghz_cpu_us=ghz_cpu / max(ok, 1) * 1e6,
    )


RPCS = ("GetState", "SaveState", "SayHello")
IN_FLIGHT = (1, 16, 64)


def combine(runs: list[Row]) -> Row:
    """One figure per scenario from its rounds: latencies and rate are the median round's,
    CPU per call is the rounds' total over their total calls (finer than one round's ticks)."""
    ok = sum(r.calls_ok for r in runs)
    return Row(
        server=runs[0].server,
        rpc=runs[0].rpc,
        in_flight=runs[0].in_flight,
        calls_ok=ok,
        errors=sum(r.errors for r in runs),
        calls_per_s=statistics.median(r.calls_per_s for r in runs),
        p50_us=statistics.median(r.p50_us for r in runs),
        p99_us=statistics.median(r.p99_us for r in runs),
        server_cpu_us=sum(r.server_cpu_us * r.calls_ok for r in runs) / max(ok, 1),
        ghz_cpu_us=sum(r.ghz_cpu_us * r.calls_ok for r in runs) / max(ok, 1),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=35000, help="calls per scenario at 16 and 64 in flight")
    parser.add_argument("--calls-serial", type=int, default=12000, help="calls per scenario at 1 in flight")
    parser.add_argument("--rounds", type=int, default=5, help="rounds a scenario at 16 or 64 in flight is split into")
    parser.add_argument("--rounds-serial", type=int, default=12, help="rounds a scenario at 1 in flight is split into")
    parser.add_argument("--starts", type=int, default=3, help="sidecar starts timed for readiness")
    options = parser.parse_args()

    ghz, descriptors = ghz_binary(), protoset()
    ready_times = []
    for _ in range(options.starts - 1):
        probe = start_sidecar("native")
        ready_times.append(probe.ready_after)
        probe.stop()

    starters = [
        lambda: start_sidecar("native"),
        lambda: start_sidecar("grpcio"),
        lambda: start_baseline("native-floor"),
        lambda: start_baseline("native-task"),
        lambda: start_baseline("thread-handoff"),
        lambda: start_baseline("grpcio"),
    ]
    # Every server is up for the whole run and the scenarios go round them in turn, a
    # round at a time: a drift of the machine (2 shared cores) then touches every server
    # alike instead of whichever ran during it. The others sit idle meanwhile.
    servers: list[Server] = []
    rows: list[Row] = []
    memory: dict[str, tuple[int, int]] = {}
    idle: dict[str, int] = {}
    try:
        for starter in starters:
            servers.append(starter())
        ready_times.append(servers[0].ready_after)
        time.sleep(1.0)
        for server in servers:
            idle[server.name] = server.memory_kib("VmRSS")
        for server in servers:
            for rpc in RPCS:
                run_ghz(ghz, descriptors, server, rpc, 64, max(options.calls // 10, 500))  # warm-up
        runs: dict[tuple[str, str, int], list[Row]] = {}
        for rpc in RPCS:
            for in_flight in IN_FLIGHT:
                rounds = options.rounds_serial if in_flight == 1 else options.rounds
                calls = (options.calls_serial if in_flight == 1 else options.calls) // rounds
                for _ in range(rounds):
                    for server in servers:
                        row = run_ghz(ghz, descriptors, server, rpc, in_flight, calls)
                        runs.setdefault((server.name, rpc, in_flight), []).append(row)
        rows = [combine(runs[(server.name, rpc, n)]) for server in servers for rpc in RPCS for n in IN_FLIGHT]
        for server in servers:
            # The high-water mark, or the resident size now if the kernel's HWM lags it.
            memory[server.name] = (idle[server.name], max(server.memory_kib("VmHWM"), server.memory_kib("VmRSS")))
    finally:
        for server in servers:
            server.stop()

    print(
        "| server | rpc | in flight | OK calls | errors | calls/s | p50 µs | p99 µs "
        "| server CPU/call µs | ghz CPU/call µs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.server} | {r.rpc} | {r.in_flight} | {r.calls_ok} | {r.errors} | {r.calls_per_s:,.0f} | "
            f"{r.p50_us:,.0f} | {r.p99_us:,.0f} | {r.server_cpu_us:.1f} | {r.ghz_cpu_us:.1f} |"
        )
    print()
    print("| server | idle RSS MB | peak RSS under load MB | growth MB |")
    print("|---|---|---|---|")
    for name, (idle, peak) in memory.items():
        print(f"| {name} | {idle / 1024:.1f} | {peak / 1024:.1f} | {(peak - idle) / 1024:.1f} |")
    ready_ms = statistics.median(ready_times) * 1000
    print()
    print(
        f"exec to readiness UP (native sidecar): median {ready_ms:.0f} ms of {len(ready_times)} starts "
        f"({', '.join(f'{t * 1000:.0f}' for t in ready_times)} ms)"
    )

    def pick(server: str, rpc: str, in_flight: int = 64) -> Row:
        return next(r for r in rows if r.server == server and r.rpc == rpc and r.in_flight == in_flight)

    native, grpcio, floor, echo = "sidecar native", "sidecar grpcio", "native floor (Rust only)", "bare grpc.aio echo"
    checks: list[tuple[str, bool]] = []
    for sidecar in (native, grpcio):
        ratio = pick(sidecar, "GetState").calls_per_s / pick(echo, "GetState").calls_per_s
        checks.append((f"[#3] {sidecar}: GetState calls/s {ratio:.0%} of the bare echo's (>= 85%)", ratio >= 0.85))
    idle, peak = memory[native]
    checks += [
        (f"[#3/#8] {native}: idle RSS {idle / 1024:.1f} MB (<= 60 MB)", idle <= 60 * 1024),
        (f"[#3/#8] {native}: RSS growth under load {(peak - idle) / 1024:.1f} MB (<= 15 MB)", peak - idle <= 15 * 1024),
        (f"[#3] readiness UP {ready_ms:.0f} ms after exec (<= 1000 ms)", ready_ms <= 1000),
        ("no errors in any run", all(r.errors == 0 for r in rows)),
    ]
    for rpc in ("SayHello", "GetState"):
        cpu, slow = pick(native, rpc).server_cpu_us, pick(grpcio, rpc).server_cpu_us
        checks.append((f"[#8] {rpc} @64: native CPU/call {cpu:.1f} µs (<= 20 µs)", cpu <= 20))
        checks.append((f"[#8] {rpc} @64: grpcio/native CPU ratio {slow / cpu:.1f}x (>= 12x)", slow / cpu >= 12))
    for rpc in RPCS:
        extra = pick(native, rpc, 1).p50_us - pick(floor, rpc, 1).p50_us
        checks.append((f"[#8] {rpc} @1: native p50 {extra:+.0f} µs over the floor (<= 25 µs)", extra <= 25))
        ratio = pick(native, rpc).p99_us / pick(floor, rpc).p99_us
        checks.append((f"[#8] {rpc} @64: native p99 {ratio:.2f}x the floor's (<= 1.2x)", ratio <= 1.2))
    infos: list[str] = []
    for rpc, (cpu_before, p50_before) in BEFORE_ISSUE_14.items():
        cpu_ratio = pick(native, rpc).server_cpu_us / pick(floor, rpc).server_cpu_us
        p50_ratio = pick(native, rpc, 1).p50_us / pick(floor, rpc, 1).p50_us
        infos.append(
            f"[#14] {rpc} in-memory @64: CPU/call {cpu_ratio:.2f}x the floor's, @1: p50 {p50_ratio:.2f}x "
            f"(for scale: before #14, in cf64e8d's run, not this one, {cpu_before:.2f}x and {p50_before:.2f}x)"
        )
    print()
    for text, passed in checks:
        print(f"[{'PASS' if passed else 'MISS'}] {text}")
    for text in infos:
        print(f"[info] {text}")
    print()
    print("the sidecar's design against the alternatives, same handlers (CPU/call @64, p50 @1):")
    for rpc in RPCS:
        cells = [
            f"{name} {pick(server, rpc).server_cpu_us:.1f} µs, {pick(server, rpc, 1).p50_us:.0f} µs"
            for name, server in (
                ("loop-driven, same pass (sidecar)", native),
                ("loop-driven, Task per call", "native, every call a Task"),
                ("tokio thread + batched hand-off", "thread hand-off (tokio)"),
            )
        ]
        print(f"  {rpc}: " + "; ".join(cells))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "rows": [asdict(r) for r in rows],
                "memory_kib": memory,
                "ready_ms": ready_ms,
                "checks": [{"check": t, "passed": p} for t, p in checks],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
