"""Start the real ``layotto-fast serve`` process for a test, on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from layotto_fast._proto import runtime_pb2_grpc

REPO = Path(__file__).resolve().parent.parent


# Ports this process was given lately: once a probe socket is closed the kernel may hand the
# same port out again at once, and two listeners of one sidecar (its gRPC and actuator ports)
# would then collide.
_GIVEN: deque[int] = deque(maxlen=1024)


def free_port() -> int:
    """A free loopback port, none of the last ones this process was given."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.append(port)
            return port
    raise RuntimeError("no free loopback port that was not given out lately")


def command() -> list[str]:
    """The installed ``layotto-fast`` of the interpreter running the tests (the checkout's venv)."""
    script = Path(sys.executable).parent / "layotto-fast"
    return [str(script)] if script.exists() else [sys.executable, "-m", "layotto_fast"]


@dataclass
class Sidecar:
    grpc_port: int
    actuator_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    uds: str = ""
    actuator_host: str = "127.0.0.1"
    _channel: grpc.Channel | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stub(self) -> runtime_pb2_grpc.RuntimeStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.target)
        return runtime_pb2_grpc.RuntimeStub(self._channel)

    def http(self, path: str) -> tuple[int, bytes]:
        url = f"http://{self.actuator_host}:{self.actuator_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 10.0, want: str = "UP") -> float:
        """Seconds until readiness reports ``want``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise AssertionError(f"sidecar exited {self.process.returncode}:\n{self.log()}")
            try:
                _, body = self.http("/actuator/health/readiness")
                # The sidecar's own status, not one of its components'.
                if json.loads(body).get("status") == want:
                    return time.monotonic() - started
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        raise AssertionError(f"readiness never became {want}:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int:
        if self._channel is not None:
            self._channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def serve_command(grpc_port: int, actuator_port: int, *extra: str) -> list[str]:
    """``layotto-fast serve`` on the given ports, with the repo's components unless told otherwise."""
    args = [*command(), "serve", "--grpc-port", str(grpc_port), "--actuator-port", str(actuator_port), *extra]
    if "--resources-path" not in extra:
        args += ["--resources-path", str(REPO / "components")]
    return args


def start_with_config(tmp: Path, config: dict[str, Any], *extra: str) -> Sidecar:
    """``start`` with ``config`` written as the ``--config`` YAML file."""
    path = tmp / f"config-{free_port()}.yaml"
    path.write_text(yaml.safe_dump(config))
    return start(tmp, "--config", str(path), *extra)


def start(tmp: Path, *extra: str, env: dict[str, str] | None = None, wait: bool = True) -> Sidecar:
    grpc_port, actuator_port = free_port(), free_port()
    log_path = tmp / f"sidecar-{grpc_port}.log"
    args = serve_command(grpc_port, actuator_port, *extra)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp, env={**os.environ, **(env or {})}
        )
    sidecar = Sidecar(grpc_port, actuator_port, process, log_path)
    if wait:
        try:
            sidecar.wait_ready()
        except BaseException:
            sidecar.stop()
            raise
    return sidecar
