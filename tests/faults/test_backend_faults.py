"""A real sidecar on a real Redis: the backend stopped, slow, or refusing the password.

Each case: a clear error naming the component, readiness telling the truth within
5 s, nothing hanging, and recovery without restarting the sidecar.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest

from layotto_fast._proto import runtime_pb2 as pb
from tests import sidecar as sidecar_process
from tests.backends.servers import RedisServer

MANIFEST = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: redis
spec:
  type: state.redis
  metadata:
    - name: redisHost
      value: {address}
{extra}"""


def start(tmp: Path, address: str, extra: str = "", wait: bool = True) -> sidecar_process.Sidecar:
    folder = tmp / "components"
    folder.mkdir(exist_ok=True)
    (folder / "redis.yaml").write_text(MANIFEST.format(address=address, extra=extra))
    return sidecar_process.start(tmp, "--resources-path", str(folder), wait=wait)


def readiness(sidecar: sidecar_process.Sidecar) -> dict[str, object]:
    document: dict[str, object] = orjson.loads(sidecar.http("/actuator/health/readiness")[1])
    return document


def wait_for(what: str, sidecar: sidecar_process.Sidecar, timeout: float, since: float | None = None) -> float:
    """Seconds from ``since`` (a ``time.monotonic()``, by default now) until readiness is ``what``;
    fails once ``timeout`` seconds from ``since`` have passed without it."""
    started = time.monotonic() if since is None else since
    while time.monotonic() - started < timeout:
        if readiness(sidecar)["status"] == what:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"readiness never became {what} within {timeout} s: {readiness(sidecar)}")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    # DEBUG SLEEP plays the slow backend.
    with RedisServer(tmp_path / "redis", extra_args=["--enable-debug-command", "yes"]) as server:
        server.start()
        yield server


def test_redis_stopped_mid_run_then_back(tmp_path: Path, own_redis: RedisServer) -> None:
    sidecar = start(tmp_path, own_redis.address)
    try:
        stub = sidecar.stub()
        stub.SaveState(pb.SaveStateRequest(store_name="redis", states=[pb.StateItem(key="k", value=b"v")]))
        own_redis.stop()
        stopped = time.monotonic()  # the 5 s readiness has to tell the truth run from here
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetState(pb.GetStateRequest(store_name="redis", key="k"), timeout=10)
        error = raised.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error  # type: ignore[attr-defined]
        assert "redis" in error.details() and own_redis.address in error.details()  # type: ignore[attr-defined]
        assert wait_for("DOWN", sidecar, 5.0, since=stopped) < 5.0
        reason = readiness(sidecar)["components"]["redis"]["reason"]  # type: ignore[index]
        assert own_redis.address in reason, reason
        own_redis.start()  # same port, empty (no persistence)
        wait_for("UP", sidecar, 10.0)
        stub.SaveState(pb.SaveStateRequest(store_name="redis", states=[pb.StateItem(key="k", value=b"again")]))
        assert stub.GetState(pb.GetStateRequest(store_name="redis", key="k")).data == b"again"
    finally:
        assert sidecar.stop() == 0, sidecar.log()


def test_redis_down_at_start_comes_up_by_itself(tmp_path: Path, own_redis: RedisServer) -> None:
    own_redis.stop()
    sidecar = start(tmp_path, own_redis.address, wait=False)
    try:
        sidecar.wait_ready(want="DOWN", timeout=20)
        with pytest.raises(grpc.RpcError) as raised:
            sidecar.stub().GetState(pb.GetStateRequest(store_name="redis", key="k"), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert "state component 'redis'" in raised.value.details()  # type: ignore[attr-defined]
        own_redis.start()
        wait_for("UP", sidecar, 10.0)
        assert sidecar.stub().GetState(pb.GetStateRequest(store_name="redis", key="k")).data == b""
    finally:
        assert sidecar.stop() == 0, sidecar.log()


def test_a_slow_redis_is_bounded_by_the_callers_deadline(tmp_path: Path, own_redis: RedisServer) -> None:
    sidecar = start(tmp_path, own_redis.address)
    try:
        stub = sidecar.stub()
        # its answer comes after the 2 s asked: a read timeout of 2 s raced it
        sleeper = threading.Thread(target=lambda: own_redis.command("DEBUG", "SLEEP", "2", timeout=10))
        sleeper.start()
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetState(pb.GetStateRequest(store_name="redis", key="k"), timeout=0.5)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        assert time.monotonic() - started < 1.5
        sleeper.join()
        assert stub.GetState(pb.GetStateRequest(store_name="redis", key="k"), timeout=5).data == b""
    finally:
        assert sidecar.stop() == 0, sidecar.log()


def test_a_wrong_password_is_down_with_the_reason(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", password="right") as server:
        server.start()
        extra = "    - name: redisPassword\n      value: wrong\n"
        sidecar = start(tmp_path, server.address, extra, wait=False)
        try:
            sidecar.wait_ready(want="DOWN", timeout=20)
            reason = readiness(sidecar)["components"]["redis"]["reason"]  # type: ignore[index]
            assert "authentication" in str(reason).lower() or "password" in str(reason).lower(), reason
        finally:
            assert sidecar.stop() == 0, sidecar.log()
