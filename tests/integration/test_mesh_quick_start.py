"""The README's mesh quick start, served as it is: ``layotto-fast serve --config
examples/mesh.yaml`` routes Bolt on 12220 to 12200 and Dubbo on 20882 to 20880, and answers
any other service in each protocol's own words. The ports are the example's, so the test
skips when one of them is taken."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from layotto_fast_native import encode_dubbo_request

from tests import sidecar as sc
from tests.mesh import dubbo_fake
from tests.mesh.fault_upstream import BoltClient, FaultUpstream

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mesh.yaml"
BOLT_IN, DUBBO_IN, BOLT_UPSTREAM, DUBBO_UPSTREAM = 12220, 20882, 12200, 20880
BOLT_SUCCESS, BOLT_NO_PROCESSOR = 0x0, 0x6
DUBBO_SERVICE_NOT_FOUND = 60


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_the_quick_start_routes_bolt_and_dubbo_and_refuses_the_rest(tmp_path: Path) -> None:
    taken = [port for port in (BOLT_IN, DUBBO_IN, BOLT_UPSTREAM, DUBBO_UPSTREAM) if _taken(port)]
    if taken:
        pytest.skip(f"ports {taken}, fixed by examples/mesh.yaml, are in use")
    bolt_upstream = FaultUpstream().start(BOLT_UPSTREAM)
    try:
        with dubbo_fake.named_providers("dubbo-echo", port=DUBBO_UPSTREAM):
            sidecar = sc.start(tmp_path, "--config", str(EXAMPLE))
            try:
                bolt = BoltClient(("127.0.0.1", BOLT_IN))
                bolt.send(bolt.request(1, "com.example.EchoService:1.0", content=b"hello"))
                request_id, status, header, content = bolt.responses(1)[0]
                assert (request_id, status, content) == (1, BOLT_SUCCESS, b"hello")
                assert header["upstream"] == str(BOLT_UPSTREAM)
                bolt.send(bolt.request(2, "com.example.Other:1.0"))
                assert bolt.responses(1)[0][:2] == (2, BOLT_NO_PROCESSOR)
                bolt.close()

                with socket.create_connection(("127.0.0.1", DUBBO_IN), timeout=5) as dubbo:
                    assert dubbo_fake.call(dubbo, 1) == "dubbo-echo"
                    other = encode_dubbo_request(2, "com.example.Other", "1.0", "echo", "Ljava/lang/String;", ["hi"])
                    dubbo.sendall(other)
                    assert dubbo_fake.read_response(dubbo)[:2] == (2, DUBBO_SERVICE_NOT_FOUND)
            finally:
                sidecar.stop()
    finally:
        bolt_upstream.stop()
