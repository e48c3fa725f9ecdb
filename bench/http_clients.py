"""The http channel's client beside aiohttp's and httpx's, one request in flight, against
``bench/http_echo.py``: the measurement behind writing the channel's own client.

Not part of ``make bench`` (it needs aiohttp and httpx, which the project does not
depend on): ``pip install aiohttp httpx`` into a scratch environment, then
``python bench/http_clients.py``. Measured 2026-12-03 on the 2-core machine, 5 000 calls
each, two rounds: ours p50 162-169 µs, 92-98 µs of client CPU per call; aiohttp 3.x
358-364 µs, 274-308 µs; httpx 1 208-1 236 µs, 1 299-1 310 µs.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from layotto_fast.http.client import HttpClient  # noqa: E402

CALLS = 5000


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(name: str, call: Callable[[], Awaitable[object]]) -> None:
    for _ in range(300):
        await call()
    latencies, before = [], cpu_seconds()
    for _ in range(CALLS):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    cpu = (cpu_seconds() - before) / CALLS * 1e6
    latencies.sort()
    p50, p99 = latencies[CALLS // 2] * 1e6, latencies[int(CALLS * 0.99)] * 1e6
    print(f"| {name} | {p50:.0f} | {p99:.0f} | {cpu:.1f} |")


async def main(port: int) -> None:
    import aiohttp
    import httpx

    url = f"http://127.0.0.1:{port}/echo"
    ours = HttpClient(f"127.0.0.1:{port}")

    async def with_ours() -> None:
        await ours.request("POST", "/echo", {}, b"hi", 5)

    async with aiohttp.ClientSession() as session, httpx.AsyncClient() as client:

        async def with_aiohttp() -> None:
            async with session.post(url, data=b"hi") as response:
                await response.read()

        async def with_httpx() -> None:
            await client.post(url, content=b"hi")

        print("| client | p50 µs | p99 µs | client CPU/call µs |\n|---|---|---|---|")
        for _ in range(2):
            await measure("ours (httptools)", with_ours)
            await measure("aiohttp", with_aiohttp)
            await measure("httpx", with_httpx)
    ours.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    port = free_port()
    echo = subprocess.Popen([sys.executable, str(ROOT / "bench" / "http_echo.py"), str(port)], stdout=subprocess.PIPE)
    assert echo.stdout is not None
    echo.stdout.readline()
    try:
        uvloop.run(main(port))
    finally:
        echo.terminate()
