"""Micro-benchmark of the actuator's HTTP protocol (layotto_fast.http on httptools).

    python bench/actuator_http.py            # protocol alone, then end to end over loopback
    python bench/actuator_http.py --quick    # shorter runs
    python bench/actuator_http.py --no-e2e   # protocol alone only

The request is ``GET /actuator/health/liveness`` answered by the real ActuatorRoutes.
Each figure stands beside a floor measured in the same run: a protocol that answers
every blank line with a canned response, so the difference is what llhttp, the
router, the Request/Response records and the encoding cost.

(a) protocol alone: ``data_received`` on a fake transport whose ``write`` is a
    ``list.append``: one request per read, 16 pipelined per read, and each request
    split across 3 reads.
(b) end to end: the server runs in a child process on uvloop (127.0.0.1, ephemeral
    port) and a uvloop client here keeps N connections busy, one request in flight
    each or 16 pipelined. ``wrk`` is run as well when it is on PATH.

Traffic goes to 127.0.0.1 only, and every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REQUEST = (
    b"GET /actuator/health/liveness HTTP/1.1\r\n"
    b"Host: 127.0.0.1:34999\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"\r\n"
)
SERVER_MAX_LIFETIME = 300.0  # a served child stops by itself after this many seconds
IMPLS = ("httptools", "floor")

ProtocolFactory = Callable[[], asyncio.Protocol]


def httptools_factory() -> ProtocolFactory:
    from layotto_fast.actuator.metrics import Metrics
    from layotto_fast.actuator.routes import ActuatorRoutes
    from layotto_fast.http import HttpProtocol
    from layotto_fast.runtime.lifecycle import Components

    components = Components([])
    routes = ActuatorRoutes(components, Metrics(components), {"app_id": "bench"}, lambda: 0)
    return lambda: HttpProtocol(routes.router)


class FloorProtocol(asyncio.Protocol):
    """Not HTTP: one canned answer per blank line, the least a protocol object can do."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._write = transport.write  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        data = self._tail + data
        count = data.count(b"\r\n\r\n")
        self._tail = data[data.rfind(b"\r\n\r\n") + 4 :] if count else data
        if count:
            self._write(self._answer * count)


def expected_answer() -> bytes:
    """What the real protocol answers to REQUEST: the floor's canned answer and the clients' check."""

    async def ask() -> bytes:  # the protocol arms its timers on the running loop
        transport = FakeTransport()
        proto = httptools_factory()()
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.data_received(REQUEST)
        assert len(transport.out) == 1 and transport.out[0].startswith(b"HTTP/1.1 200 OK\r\n"), transport.out
        return transport.out[0]

    return asyncio.run(ask())


def factory(impl: str, answer: bytes) -> ProtocolFactory:
    if impl == "httptools":
        return httptools_factory()
    return lambda: FloorProtocol(answer)


# -- (a) the protocol alone, on a fake transport ----------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.write = self.out.append  # C-level callable: time the protocol, not the fake

    def close(self) -> None:
        raise AssertionError("the benchmark's requests must keep the connection alive")

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def bench_protocol(impl: str, chunks: list[bytes], reqs_per_round: int, seconds: float, answer: bytes) -> float:
    """Best requests/s over several timed batches of feeding ``chunks`` repeatedly."""
    proto = factory(impl, answer)()
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    for c in chunks:
        proto.data_received(c)
    got = b"".join(transport.out)
    assert got == answer * reqs_per_round, got[:200]
    data_received = proto.data_received
    out = transport.out
    rounds = 1
    while True:  # size a batch to ~20 ms
        t0 = time.perf_counter()
        for _ in range(rounds):
            for c in chunks:
                data_received(c)
        dt = time.perf_counter() - t0
        out.clear()
        if dt > 0.02:
            break
        rounds *= 2
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(rounds):
            for c in chunks:
                data_received(c)
        dt = time.perf_counter() - t0
        assert len(out) == rounds  # every scenario answers with one write per round
        out.clear()
        best = max(best, rounds * reqs_per_round / dt)
    return best


def protocol_scenarios() -> list[tuple[str, list[bytes], int]]:
    r = REQUEST
    third = len(r) // 3
    return [
        ("1 request per data_received", [r], 1),
        ("16 pipelined per data_received", [r * 16], 16),
        ("each request split in 3 reads", [r[:third], r[third : 2 * third], r[2 * third :]], 1),
    ]


# -- (b) end to end over loopback -------------------------------------------------------------------


def serve(impl: str) -> None:
    """Child process: serve on 127.0.0.1:0, print the port, stop on stdin EOF or after a while."""
    import uvloop

    make_protocol = factory(impl, expected_answer())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(make_protocol, "127.0.0.1", 0, backlog=128)
        print(server.sockets[0].getsockname()[1], flush=True)
        stop: asyncio.Future[None] = loop.create_future()

        def on_stdin() -> None:
            if not stop.done():
                stop.set_result(None)

        loop.add_reader(sys.stdin.fileno(), on_stdin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop, SERVER_MAX_LIFETIME)
        server.close()

    uvloop.run(main())


class LoadClient(asyncio.Protocol):
    """Keeps ``depth`` requests in flight until the deadline; counts whole responses."""

    def __init__(
        self, depth: int, deadline: float, done: asyncio.Future[None], counts: list[int], answer_size: int
    ) -> None:
        self.depth = depth
        self.deadline = deadline
        self.done = done
        self.counts = counts
        self.answer_size = answer_size
        self.rx = 0
        self.in_flight = 0
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport.write(REQUEST * self.depth)
        self.in_flight = self.depth

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        n, self.rx = divmod(self.rx, self.answer_size)
        if not n:
            return
        self.counts[0] += n
        if self.loop.time() < self.deadline:
            self.transport.write(REQUEST * n if n > 1 else REQUEST)
        else:
            self.in_flight -= n
            if self.in_flight <= 0 and not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"server closed the connection: {exc}"))


async def drive(port: int, conns: int, depth: int, seconds: float, answer_size: int) -> float:
    loop = asyncio.get_running_loop()
    counts = [0]
    deadline = loop.time() + seconds
    dones: list[asyncio.Future[None]] = [loop.create_future() for _ in range(conns)]
    t0 = time.perf_counter()
    transports = []
    for done in dones:

        def client(done: asyncio.Future[None] = done) -> LoadClient:
            return LoadClient(depth, deadline, done, counts, answer_size)

        tr, _ = await loop.create_connection(client, "127.0.0.1", port)
        transports.append(tr)
    await asyncio.wait_for(asyncio.gather(*dones), seconds + 10)
    dt = time.perf_counter() - t0
    for tr in transports:
        tr.close()
    return counts[0] / dt


def check_server(port: int, answer: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(REQUEST)
        buf = b""
        while len(buf) < len(answer):
            chunk = s.recv(4096)
            assert chunk, "server closed"
            buf += chunk
        assert buf == answer, buf


def run_wrk(port: int, seconds: float) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    out = subprocess.run(
        [wrk, "-t1", "-c8", f"-d{max(1, int(seconds))}s", f"http://127.0.0.1:{port}/actuator/health/liveness"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    ).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    return float(m.group(1)) if m else None


def bench_e2e(impl: str, scenarios: list[tuple[str, int, int]], seconds: float, answer: bytes) -> dict[str, float]:
    import uvloop

    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", impl],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        check_server(port, answer)
        results: dict[str, float] = {}
        for name, conns, depth in scenarios:
            results[name] = uvloop.run(drive(port, conns, depth, seconds, len(answer)))
        wrk = run_wrk(port, seconds)
        if wrk is not None:
            results["wrk -t1 -c8 (1 in flight each)"] = wrk
        return results
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- report -----------------------------------------------------------------------------------------


def table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    head = f"  {'scenario':<40}" + "".join(f"{name + ' req/s':>18}" for name in IMPLS) + f"{'of floor':>10}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for name, res in rows:
        line = f"  {name:<40}" + "".join(f"{res.get(i, float('nan')):>18,.0f}" for i in IMPLS)
        if res.get("floor"):
            line += f"{res.get('httptools', 0.0) / res['floor']:>9.0%}"
        print(line)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    ap.add_argument("--no-e2e", action="store_true", help="skip the loopback benchmark")
    ap.add_argument("--serve", metavar="IMPL", choices=IMPLS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return

    import uvloop

    answer = expected_answer()
    secs = 0.3 if args.quick else 1.0
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"request {len(REQUEST)} bytes, response {len(answer)} bytes"
    )
    rows: list[tuple[str, dict[str, float]]] = []
    for label, chunks, per_round in protocol_scenarios():
        res = {impl: uvloop.run(bench_protocol(impl, chunks, per_round, secs, answer)) for impl in IMPLS}
        rows.append((label, res))
    table(f"(a) the protocol alone, fake transport (best ~20 ms batch over {secs:g} s per cell)", rows)

    if args.no_e2e:
        return
    e2e_secs = 1.0 if args.quick else 3.0
    scenarios = [("4 connections, 1 in flight each", 4, 1), ("4 connections, 16 pipelined each", 4, 16)]
    per_impl = {impl: bench_e2e(impl, scenarios, e2e_secs, answer) for impl in IMPLS}
    keys = list(dict.fromkeys(k for r in per_impl.values() for k in r))
    rows = [(k, {impl: per_impl[impl][k] for impl in IMPLS if k in per_impl[impl]}) for k in keys]
    table(f"(b) end to end over 127.0.0.1, uvloop server in a child process ({e2e_secs:.0f} s each)", rows)


if __name__ == "__main__":
    main()
