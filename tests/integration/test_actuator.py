"""The actuator endpoints of the running sidecar."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import grpc
import orjson
import pytest

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast._proto import runtime_pb2_grpc
from tests.sidecar import Sidecar


def test_liveness_and_readiness_up(sidecar: Sidecar) -> None:
    for path in ("/actuator/health/liveness", "/actuator/health/readiness"):
        status, body = sidecar.http(path)
        document = orjson.loads(body)
        assert status == 200 and document["status"] == "UP", body
    _, body = sidecar.http("/actuator/health/readiness")
    components = orjson.loads(body)["components"]
    assert components["in-memory"] == {
        "status": "UP", "reason": "", "type": "state.in-memory", "required": True,
        "details": {"reason": ""},  # where Layotto's actuator puts the reason
    }  # fmt: skip
    assert set(components) >= {"helloworld", "config_demo", "lock_demo", "sequencer_demo", "secret_demo"}


def configuration_subscriptions(sidecar: Sidecar) -> int:
    return int(orjson.loads(sidecar.http("/actuator/info")[1])["configuration_subscriptions"])


def wait_subscriptions(sidecar: Sidecar, count: int) -> None:
    """Until ``/actuator/info`` counts ``count`` open SubscribeConfiguration streams (10 s at most)."""
    deadline = time.monotonic() + 10
    while (now := configuration_subscriptions(sidecar)) != count:
        assert time.monotonic() < deadline, f"configuration_subscriptions stayed {now}, want {count}"
        time.sleep(0.01)


def test_info(sidecar: Sidecar, transport: str) -> None:
    """``configuration_subscriptions`` counts the SubscribeConfiguration streams open now: none
    before this test (no test before it on this sidecar leaves one open), one while it holds one,
    none again once it is cancelled."""
    status, body = sidecar.http("/actuator/info")
    info = orjson.loads(body)
    assert status == 200
    assert info["grpc_transport"] == transport
    assert info["app_id"] == "layotto-fast" and info["version"]
    assert {"name": "in-memory", "type": "state.in-memory", "version": "v1"} in info["components"]
    assert info["uptime_seconds"] > 0 and info["configuration_subscriptions"] == 0
    request = pb.SubscribeConfigurationRequest(store_name="config_demo", app_id="actuator-info", keys=["k"])
    with grpc.insecure_channel(sidecar.target) as channel:
        call = runtime_pb2_grpc.RuntimeStub(channel).SubscribeConfiguration(iter([request]))
        wait_subscriptions(sidecar, 1)
        call.cancel()
        wait_subscriptions(sidecar, 0)


def test_metrics_count_rpcs_by_status(sidecar: Sidecar) -> None:
    stub = sidecar.stub()
    stub.GetState(pb.GetStateRequest(store_name="in-memory", key="metrics"))
    with pytest.raises(grpc.RpcError):
        stub.GetState(pb.GetStateRequest(store_name="", key="metrics"))
    status, body = sidecar.http("/metrics")
    text = body.decode()
    assert status == 200
    assert 'layotto_fast_grpc_requests_total{code="OK",method="GetState"}' in text
    assert 'layotto_fast_grpc_requests_total{code="INVALID_ARGUMENT",method="GetState"}' in text
    assert 'layotto_fast_grpc_request_duration_seconds_bucket{le="0.001",method="GetState"}' in text
    assert 'layotto_fast_component_up{name="in-memory",type="state.in-memory"} 1.0' in text
    assert "process_resident_memory_bytes" in text


def test_unknown_path_is_404(sidecar: Sidecar) -> None:
    status, _ = sidecar.http("/actuator/nothing")
    assert status == 404


def test_head_answers_without_a_body(sidecar: Sidecar) -> None:
    url = f"http://127.0.0.1:{sidecar.actuator_port}/actuator/health/liveness"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(sidecar.http("/actuator/health/liveness")[1])
        assert response.read() == b""


def test_the_actuator_binds_an_address_of_its_own(tmp_path: Path) -> None:
    """Probes reach the actuator on its address (the pod's, in Kubernetes) while the gRPC API
    stays on the listen address; the port it bound is the one logged."""
    from tests import sidecar as sidecar_process

    sidecar = sidecar_process.start(tmp_path, "--actuator-listen-address", "127.0.0.2", wait=False)
    sidecar.actuator_host = "127.0.0.2"
    try:
        sidecar.wait_ready()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{sidecar.actuator_port}/actuator/health/liveness", timeout=2)
        assert sidecar.stub().SayHello(pb.SayHelloRequest(service_name="helloworld"), timeout=5).hello
        assert f"actuator on 127.0.0.2:{sidecar.actuator_port}" in sidecar.log()
    finally:
        sidecar.stop()


def test_a_request_body_past_a_kibibyte_is_refused_at_its_head(sidecar: Sidecar) -> None:
    """Every route is GET or HEAD; a body is only dropped. Before, each connection could make
    the actuator hold 4 MiB of one, a byte every few seconds."""
    import socket

    with socket.create_connection(("127.0.0.1", sidecar.actuator_port), timeout=5) as client:
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n")
        assert client.recv(64).startswith(b"HTTP/1.1 413 ")
