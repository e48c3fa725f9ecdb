"""Checks shared by the fault tests: is the sidecar alive, serving, and how big is it."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from layotto_fast._proto import runtime_pb2, runtime_pb2_grpc
from tests import sidecar as sidecar_process

MIB = 1024 * 1024


def start_native(tmp_path: Path, *flags: str) -> sidecar_process.Sidecar:
    return sidecar_process.start(tmp_path, "--grpc-transport", "native", *flags)


def stop_cleanly(running: sidecar_process.Sidecar) -> None:
    alive = running.process.poll() is None
    code = running.stop()
    assert alive, f"the sidecar died during the test (exit {code}):\n{running.log()[-4000:]}"
    assert code == 0, f"the sidecar exited {code} on SIGTERM:\n{running.log()[-4000:]}"


def rss_bytes(running: sidecar_process.Sidecar) -> int:
    """VmRSS of the sidecar process."""
    with open(f"/proc/{running.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


class RssSampler:
    """Peak RSS over repeated ``sample()`` calls, relative to a baseline taken first."""

    def __init__(self, running: sidecar_process.Sidecar) -> None:
        self.running = running
        self.baseline = rss_bytes(running)
        self.peak = self.baseline

    def sample(self) -> int:
        now = rss_bytes(self.running)
        self.peak = max(self.peak, now)
        return now

    def sample_for(self, seconds: float, every: float = 0.1) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sample()
            time.sleep(every)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def assert_growth_below(self, limit: int) -> None:
        self.sample()
        assert self.growth < limit, (
            f"RSS grew {self.growth / MIB:.1f} MiB (from {self.baseline / MIB:.1f} to {self.peak / MIB:.1f}),"
            f" limit {limit / MIB:.0f} MiB"
        )


def assert_serving(running: sidecar_process.Sidecar, name: str = "x") -> None:
    """The process is alive and a SayHello on a fresh grpcio channel answers."""
    assert running.process.poll() is None, f"the sidecar exited {running.process.returncode}:\n{running.log()[-4000:]}"
    with grpc.insecure_channel(running.target) as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.SayHello(runtime_pb2.SayHelloRequest(service_name="helloworld", name=name), timeout=5)
    assert reply.hello == f"greetings, {name}"
