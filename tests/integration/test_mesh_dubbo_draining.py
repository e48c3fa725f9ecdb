"""A Dubbo provider that says it is shutting down (the read-only event Java sends on each
connection first) gets no new requests from the mesh; its cluster's other hosts take them.
The providers are fakes of the test's own (``tests/mesh/dubbo_fake.py``), so that which host
answered and when the event went out are known exactly; the same with a real Java provider
is in ``tests/interop/test_mesh_java.py``."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import sidecar as sidecar_process
from tests.mesh.dubbo_fake import NamedProvider, call, mesh_config, named_providers
from tests.mesh.fault_upstream import wait_for


@pytest.fixture
def providers() -> Iterator[list[NamedProvider]]:
    with named_providers("a", "b") as both:
        yield both


def test_a_provider_that_announces_its_shutdown_gets_no_new_requests(
    tmp_path: Path, providers: list[NamedProvider]
) -> None:
    a, b = providers
    port = sidecar_process.free_port()
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(mesh_config(port, [a.address, b.address])))
    sidecar = sidecar_process.start(tmp_path, "--config", str(path))
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert {call(client, i) for i in range(6)} == {"a", "b"}, "round robin over both"
        wait_for(lambda: len(a.writers) == 1)
        a.shut_down()
        wait_for(lambda: call(client, 99) == "b")  # the event has been read
        answers = [call(client, 100 + i) for i in range(20)]
        assert answers == ["b"] * 20, "nothing new went to the provider that is shutting down"
        _, body = sidecar.http("/actuator/info")
        hosts = {h["address"]: h for h in json.loads(body)["mesh"]["clusters"][0]["hosts"]}
        assert hosts[a.address]["ejected"] and not hosts[b.address]["ejected"], hosts
    finally:
        sidecar.stop()
