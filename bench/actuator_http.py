"""Micro-benchmark of the actuator HTTP protocol: compiled (Cython) vs pure Python.

    python bench/actuator_http.py            # parse+respond and end-to-end over loopback
    python bench/actuator_http.py --quick    # shorter runs
    python bench/actuator_http.py --no-e2e   # parse+respond only

(a) parse+respond: ``data_received`` on a fake transport whose ``write`` is a
    ``list.append`` (so the protocol's own cost is what is timed), for a
    typical ~120-byte GET with a few headers: one request per call, 16
    pipelined per call, and each request split across 3 calls.
(b) end to end: the server runs in a child process on uvloop (127.0.0.1,
    ephemeral port) and an asyncio/uvloop client in this process keeps N
    connections busy, one request in flight per connection or 16 pipelined.
    ``wrk`` is used as well when it is on PATH.

Everything is measured in this run; nothing is hard-coded.  Traffic goes to
127.0.0.1 only, and every loop is bounded in time.
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
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REQUEST = (
    b"GET /actuator/health HTTP/1.1\r\n"
    b"Host: 127.0.0.1:34999\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"\r\n"
)
BODY = b'{"status":"UP"}'
ROUTES = {"/actuator/health": (200, b"application/json", BODY)}
NOT_FOUND = (404, b"application/json", b'{"error":"not found"}')
EXPECTED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
SERVER_MAX_LIFETIME = 300.0  # a served child stops by itself after this many seconds


def router(method: str, path: str) -> tuple[int, bytes, bytes]:
    return ROUTES.get(path, NOT_FOUND)


def load_impls() -> dict[str, types.ModuleType]:
    from layotto_fast.actuator import http_protocol_py

    impls = {"python": http_protocol_py}
    try:
        from layotto_fast.actuator import http_protocol
    except ImportError as exc:
        print(
            f"compiled module not available ({exc}); build it with:\n"
            "  cythonize -i -3 layotto_fast/actuator/http_protocol.pyx\n",
            file=sys.stderr,
        )
    else:
        impls["cython"] = http_protocol
    return impls


# -- (a) parse + respond on a fake transport --------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.write = self.out.append  # C-level callable: time the protocol, not the fake

    def close(self) -> None:
        raise AssertionError("the benchmark's requests must keep the connection alive")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def bench_parse(mod: types.ModuleType, chunks: list[bytes], reqs_per_round: int, seconds: float) -> float:
    """Best requests/s over several timed batches of feeding ``chunks`` repeatedly."""
    proto = mod.HttpProtocol(router)
    transport = FakeTransport()
    proto.connection_made(transport)
    for c in chunks:
        proto.data_received(c)
    got = b"".join(transport.out)
    assert got == EXPECTED * reqs_per_round, got[:200]
    data_received = proto.data_received
    out = transport.out
    # size a batch to ~20 ms
    rounds = 1
    while True:
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


def parse_scenarios() -> list[tuple[str, list[bytes], int]]:
    r = REQUEST
    third = len(r) // 3
    return [
        ("1 request per data_received", [r], 1),
        ("16 pipelined per data_received", [r * 16], 16),
        ("each request split in 3 reads", [r[:third], r[third : 2 * third], r[2 * third :]], 1),
    ]


# -- (b) end to end over loopback ---------------------------------------------------


def serve(impl: str) -> None:
    """Child process: serve on 127.0.0.1:0, print the port, stop on stdin EOF or after a while."""
    import uvloop

    mod = load_impls()[impl]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: mod.HttpProtocol(router), "127.0.0.1", 0, backlog=128)
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

    def __init__(self, depth: int, deadline: float, done: asyncio.Future[None], counts: list[int]) -> None:
        self.depth = depth
        self.deadline = deadline
        self.done = done
        self.counts = counts
        self.rx = 0
        self.in_flight = 0
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport.write(REQUEST * self.depth)
        self.in_flight = self.depth

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        n, self.rx = divmod(self.rx, len(EXPECTED))
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


async def drive(port: int, conns: int, depth: int, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    counts = [0]
    deadline = loop.time() + seconds
    dones: list[asyncio.Future[None]] = [loop.create_future() for _ in range(conns)]
    t0 = time.perf_counter()
    transports = []
    for done in dones:

        def factory(done: asyncio.Future[None] = done) -> LoadClient:
            return LoadClient(depth, deadline, done, counts)

        tr, _ = await loop.create_connection(factory, "127.0.0.1", port)
        transports.append(tr)
    await asyncio.wait_for(asyncio.gather(*dones), seconds + 10)
    dt = time.perf_counter() - t0
    for tr in transports:
        tr.close()
    return counts[0] / dt


def check_server(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(REQUEST)
        buf = b""
        while len(buf) < len(EXPECTED):
            chunk = s.recv(4096)
            assert chunk, "server closed"
            buf += chunk
        assert buf == EXPECTED, buf


def run_wrk(port: int, seconds: float) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    out = subprocess.run(
        [wrk, "-t1", "-c8", f"-d{max(1, int(seconds))}s", f"http://127.0.0.1:{port}/actuator/health"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    ).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    return float(m.group(1)) if m else None


def bench_e2e(impl: str, scenarios: list[tuple[str, int, int]], seconds: float) -> dict[str, float]:
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
        check_server(port)
        results: dict[str, float] = {}
        for name, conns, depth in scenarios:
            results[name] = uvloop.run(drive(port, conns, depth, seconds))
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


# -- report -------------------------------------------------------------------------------


def table(title: str, rows: list[tuple[str, dict[str, float]]], impls: list[str]) -> None:
    print(f"\n{title}")
    head = f"  {'scenario':<40}" + "".join(f"{name + ' req/s':>16}" for name in impls)
    if len(impls) == 2:
        head += f"{'ratio':>9}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for name, res in rows:
        line = f"  {name:<40}" + "".join(f"{res.get(i, float('nan')):>16,.0f}" for i in impls)
        if len(impls) == 2 and res.get(impls[0]):
            line += f"{res[impls[1]] / res[impls[0]]:>8.1f}x"
        print(line)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    ap.add_argument("--no-e2e", action="store_true", help="skip the loopback benchmark")
    ap.add_argument("--serve", metavar="IMPL", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return

    impls = load_impls()
    names = list(impls)
    secs = 0.3 if args.quick else 1.0
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"request {len(REQUEST)} bytes, response {len(EXPECTED)} bytes; implementations: {', '.join(names)}"
    )

    rows: list[tuple[str, dict[str, float]]] = []
    for label, chunks, per_round in parse_scenarios():
        res: dict[str, float] = {}
        for name, mod in impls.items():
            res[name] = bench_parse(mod, chunks, per_round, secs)
        rows.append((label, res))
    table(f"(a) parse + respond, fake transport (best ~20 ms batch over {secs:g} s per cell)", rows, names)

    if args.no_e2e:
        return
    e2e_secs = 1.0 if args.quick else 3.0
    scenarios = [("4 connections, 1 in flight each", 4, 1), ("4 connections, 16 pipelined each", 4, 16)]
    per_impl = {name: bench_e2e(name, scenarios, e2e_secs) for name in names}
    keys = list(dict.fromkeys(k for r in per_impl.values() for k in r))
    rows = [(k, {name: per_impl[name][k] for name in names if k in per_impl[name]}) for k in keys]
    table(f"(b) end to end over 127.0.0.1, uvloop server in a child process ({e2e_secs:.0f} s each)", rows, names)


if __name__ == "__main__":
    main()
