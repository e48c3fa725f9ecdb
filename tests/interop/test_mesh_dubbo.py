"""A Dubbo client (dubbo-ssl-python) calls a Dubbo provider (dubbo-py) through the sidecar's
Dubbo listener, routed by service path and version; heartbeats both ways."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import sidecar as sidecar_process
from tests.mesh import dubbo_peers
from tests.mesh.dubbo_peers import SERVICE


@pytest.fixture(scope="module")
def dubbo_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("dubbo")
    with dubbo_peers.start_echo_provider() as provider:
        host, port = provider.address
        mesh_port = sidecar_process.free_port()
        route = {"name": "echo", "match": {"service": SERVICE, "version": "1.0"}, "cluster": "echo"}
        config = {
            "mesh": {
                "listeners": [{"protocol": "dubbo", "address": f"127.0.0.1:{mesh_port}", "routes": [route]}],
                "clusters": [{"name": "echo", "protocol": "dubbo", "hosts": [f"{host}:{port}"]}],
            }
        }
        sidecar = sidecar_process.start_with_config(tmp, config)
        try:
            yield ("127.0.0.1", mesh_port)
        finally:
            sidecar.stop()


def test_calls_reach_the_provider_and_heartbeats_are_answered(dubbo_address: tuple[str, int]) -> None:
    report = dubbo_peers.run_calls(dubbo_address, 20, concurrency=4, heartbeat=True)
    assert report["replies"] == [f"echo-{i}" for i in range(20)]
    assert report["heartbeat"] is True


def test_text_survives_the_hop(dubbo_address: tuple[str, int]) -> None:
    # Characters beyond the BMP are left out: these two peers garble them even when
    # talking directly (the proxy forwards the body untouched either way).
    texts = ["héllo wörld", "x" * 3000, "中文 ünïcode", ""]
    assert dubbo_peers.echo_calls(dubbo_address, 0, texts=texts) == texts


def test_an_unrouted_version_gets_service_not_found(dubbo_address: tuple[str, int]) -> None:
    client = dubbo_peers.client(dubbo_address, version="2.0")
    with pytest.raises(Exception, match="no route for service") as caught:
        client.call("echo", "x", timeout=5)
    assert "com.example.EchoService" in str(caught.value)


def test_a_malformed_dubbo_frame_closes_only_its_connection(dubbo_address: tuple[str, int]) -> None:
    import socket

    offender = socket.create_connection(dubbo_address, timeout=5)
    offender.sendall(b"\xda\xbcnot dubbo at all")  # wrong magic
    assert offender.recv(100) == b"", "the sidecar closes the offender's connection"
    oversized = socket.create_connection(dubbo_address, timeout=5)
    oversized.sendall(b"\xda\xbb\xc2\x00" + bytes(8) + (2**30).to_bytes(4, "big"))  # over max_frame_size
    assert oversized.recv(100) == b""
    assert dubbo_peers.echo_calls(dubbo_address, 3) == ["echo-0", "echo-1", "echo-2"], "others carry on"
