"""anthunder (SOFA's Python Bolt library, PyPI) on both sides of the sidecar's Bolt listener:
its clients call its provider through the mesh, and its heartbeats are answered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import sidecar as sidecar_process
from tests.mesh import bolt_peers
from tests.mesh.bolt_peers import INTERFACE

STATUS_UNKNOWN, STATUS_NO_PROCESSOR = 3, 6


@pytest.fixture(scope="module")
def bolt_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("anthunder")
    with bolt_peers.start_echo_provider() as provider:
        host, port = provider.address
        mesh_port = sidecar_process.free_port()
        config = {
            "mesh": {
                "listeners": [
                    {
                        "protocol": "bolt",
                        "address": f"127.0.0.1:{mesh_port}",
                        "routes": [{"name": "echo", "match": {"service": INTERFACE}, "cluster": "echo"}],
                    }
                ],
                "clusters": [{"name": "echo", "protocol": "bolt", "hosts": [f"{host}:{port}"]}],
            }
        }
        sidecar = sidecar_process.start_with_config(tmp, config)
        try:
            yield ("127.0.0.1", mesh_port)
        finally:
            sidecar.stop()


@pytest.mark.parametrize("mode", ["aio-sync", "aio-async", "sock"])
def test_anthunder_clients_reach_the_anthunder_provider(bolt_address: tuple[str, int], mode: str) -> None:
    report = bolt_peers.run_calls(bolt_address, 20, mode=mode, heartbeat=True)
    assert report["replies"] == [f"echo-{i}" for i in range(20)]
    assert report["heartbeat"] is True


def test_statuses_from_the_provider_and_from_the_sidecar(bolt_address: tuple[str, int]) -> None:
    with bolt_peers.aio_client(bolt_address) as client:
        assert bolt_peers.call(client, "héllo") == (0, "héllo")
        status, _ = bolt_peers.call(client, "x", method="fail")
        assert status == STATUS_UNKNOWN, "the provider's own error status comes through"
        status, _ = bolt_peers.call(client, "x", interface="com.example.Unrouted:1.0")
        assert status == STATUS_NO_PROCESSOR, "no route: the sidecar answers in Bolt's terms"
        assert bolt_peers.heartbeat(bolt_address, client)
