"""Java on both sides of the sidecar's mesh listeners, built by Maven from the frameworks' own artifacts.

java_mesh/ holds two Maven modules (see its pom.xml): SOFARPC ``com.alipay.sofa:sofa-rpc-all:5.13.2``
and Apache Dubbo ``org.apache.dubbo:dubbo:3.3.4``, each with a provider and a consumer of the same
interface, ``com.example.EchoService`` (``String echo(String)``), and no registry: the consumers are
pointed straight at the sidecar's listeners, the sidecar's routes at the providers.

* SOFARPC over Bolt. SOFARPC names the service it calls in the Bolt request header ``service``
  (and ``sofa_head_target_service``) as ``interfaceId:version[:uniqueId]`` with the version
  defaulting to 1.0: here exactly ``com.example.EchoService:1.0`` (recorded off the wire), which
  the Bolt route matches. The consumer's ``uniqueId=unrouted`` makes it
  ``com.example.EchoService:1.0:unrouted``, which no route matches.
  Bolt's client sends heartbeats on a connection idle for ``bolt.tcp.heartbeat.interval`` ms
  (RpcHeartbeatTrigger, default 15000, on when ``bolt.tcp.heartbeat.switch`` is true, the default)
  and closes it after ``bolt.tcp.heartbeat.maxtimes`` (3) unanswered ones; the consumer runs with
  300 ms and sits idle mid-run, so the sidecar answers several and the connection must survive.
* Dubbo over its dubbo protocol: version 2.0.2 frames, hessian2 (serialization id 2), service path
  ``com.example.EchoService`` and service version 1.0, routed on both; QoS is off. Version 2.0 is
  routed nowhere. Dubbo's client sends a heartbeat request on a connection idle for its
  ``heartbeat`` parameter (600 ms here).

Dubbo turns any 127.x host into the machine's first non-loopback address (``NetUtils.filterLocalHost``);
the Dubbo peers pin Dubbo's idea of the local address to 127.0.0.1 so that every byte stays on loopback
(its provider still binds 0.0.0.0, as Dubbo does for any 127.x host).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import sidecar as sidecar_process
from tests.tools import tool_missing

PROJECT = Path(__file__).resolve().parent / "java_mesh"
SOFA_JAR = PROJECT / "sofa" / "target" / "sofa-peers.jar"
DUBBO_JAR = PROJECT / "dubbo" / "target" / "dubbo-peers.jar"

# What SOFARPC 5.13.2 sends as the Bolt "service" header for EchoService, version 1.0, no uniqueId.
BOLT_SERVICE = "com.example.EchoService:1.0"
DUBBO_SERVICE = "com.example.EchoService"
DUBBO_VERSION = "1.0"

# Short-lived JVMs on a 2-core machine: C1 only and the serial collector start fastest.
JVM = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss512k"]
# SOFARPC's hessian reads String internals; JDK 17 needs this to let it (else it logs and does without).
SOFA_JVM = [*JVM, "--add-opens=java.base/java.lang=ALL-UNNAMED"]
CALL_TIMEOUT_MS = 3000


@dataclass
class Peer:
    name: str
    process: subprocess.Popen[str]
    log_path: Path
    port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Mesh:
    tmp: Path
    sidecar: sidecar_process.Sidecar
    bolt_port: int
    dubbo_port: int
    peers: list[Peer] = field(default_factory=list)

    def logs(self) -> str:
        parts = [f"--- {peer.name} ---\n{peer.log()}" for peer in self.peers]
        return "\n".join([*parts, f"--- sidecar ---\n{self.sidecar.log()}"])

    def listener_counts(self, listener: str) -> dict[str, float]:
        """The mesh's per-listener counters from /metrics: connections, heartbeats, no_route, ..."""
        status, body = self.sidecar.http("/metrics")
        assert status == 200
        counts = {}
        pattern = rf'^layotto_fast_mesh_(\w+?)(?:_total)?\{{listener="{listener}"\}} (\S+)$'
        for match in re.finditer(pattern, body.decode(), re.MULTILINE):
            counts[match.group(1)] = float(match.group(2))
        return counts


def build() -> None:
    if shutil.which("mvn") is None or shutil.which("java") is None:
        tool_missing("Maven or Java not installed")
    result = subprocess.run(
        ["mvn", "-q", "-B", "package", "-DskipTests"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"maven build failed:\n{result.stdout}\n{result.stderr}"
    for jar in (SOFA_JAR, DUBBO_JAR):
        assert jar.is_file(), f"{jar} was not built"


def start_provider(tmp: Path, jvm: list[str], jar: Path, main: str) -> Peer:
    """Starts a provider on a free port and waits for its READY line."""
    port = sidecar_process.free_port()
    log_path = tmp / f"{main.rsplit('.', 1)[-1]}.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [*jvm, "-cp", str(jar), main, str(port)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=tmp,
        )
    peer = Peer(main, process, log_path, port)
    ready = threading.Event()

    def watch() -> None:
        assert process.stdout is not None
        for line in process.stdout:  # keeps draining stdout after READY
            if line.strip() == "READY":
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    if not ready.wait(60):
        peer.stop()
        raise AssertionError(f"{main} never printed READY:\n{peer.log()}")
    return peer


def mesh_config(bolt_port: int, dubbo_port: int, sofa: Peer, dubbo: Peer) -> dict[str, Any]:
    return {
        "mesh": {
            "listeners": [
                {
                    "name": "bolt",
                    "protocol": "bolt",
                    "address": f"127.0.0.1:{bolt_port}",
                    "routes": [
                        {
                            "name": "sofa-echo",
                            "match": {"service": BOLT_SERVICE},
                            "cluster": "sofa-echo",
                            "timeout_ms": CALL_TIMEOUT_MS,
                        }
                    ],
                },
                {
                    "name": "dubbo",
                    "protocol": "dubbo",
                    "address": f"127.0.0.1:{dubbo_port}",
                    "routes": [
                        {
                            "name": "dubbo-echo",
                            "match": {"service": DUBBO_SERVICE, "version": DUBBO_VERSION},
                            "cluster": "dubbo-echo",
                            "timeout_ms": CALL_TIMEOUT_MS,
                        }
                    ],
                },
            ],
            "clusters": [
                {"name": "sofa-echo", "protocol": "bolt", "hosts": [f"127.0.0.1:{sofa.port}"]},
                {"name": "dubbo-echo", "protocol": "dubbo", "hosts": [f"127.0.0.1:{dubbo.port}"]},
            ],
        },
        # InvokeService reaches the same providers through the same clusters, JSON in and out.
        "invoke": {
            "targets": [
                {"id": "sofa-echo", "channel": "bolt", "cluster": "sofa-echo", "service": BOLT_SERVICE,
                 "codec": "hessian2", "before_invoke": [{"name": "sofarpc_json"}],
                 "after_invoke": [{"name": "sofarpc_json"}]},
                # no filter: the app's data is the Bolt content, in SOFARPC's default Hessian serialization
                {"id": "sofa-hessian", "channel": "bolt", "cluster": "sofa-echo", "service": BOLT_SERVICE},
                {"id": "dubbo-echo", "channel": "dubbo", "cluster": "dubbo-echo", "service": DUBBO_SERVICE,
                 # before_invoke only, as Layotto's configs name it: the channel answers JSON
                 "version": DUBBO_VERSION, "before_invoke": [{"name": "dubbo_json_rpc"}]},
            ]
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    build()
    tmp = tmp_path_factory.mktemp("java-mesh")
    peers: list[Peer] = []
    sidecar = None
    try:
        sofa = start_provider(tmp, SOFA_JVM, SOFA_JAR, "interop.SofaProvider")
        peers.append(sofa)
        dubbo = start_provider(tmp, JVM, DUBBO_JAR, "interop.DubboProvider")
        peers.append(dubbo)
        bolt_port, dubbo_port = sidecar_process.free_port(), sidecar_process.free_port()
        path = tmp / "mesh.yaml"
        path.write_text(yaml.safe_dump(mesh_config(bolt_port, dubbo_port, sofa, dubbo)))
        sidecar = sidecar_process.start(tmp, "--config", str(path))
        yield Mesh(tmp, sidecar, bolt_port, dubbo_port, peers)
    finally:
        if sidecar is not None:
            sidecar.stop()
        for peer in peers:
            peer.stop()


def consume(mesh: Mesh, jvm: list[str], jar: Path, main: str, port: int, n: int, *options: str) -> dict[str, Any]:
    """Runs a consumer against a sidecar listener; returns its JSON report."""
    result = subprocess.run(
        [*jvm, "-cp", str(jar), main, "127.0.0.1", str(port), str(n), f"timeoutMs={CALL_TIMEOUT_MS}", *options],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=mesh.tmp,
        timeout=120,
    )
    assert result.returncode == 0, f"{main} exited {result.returncode}:\n{result.stderr}\n{mesh.logs()}"
    lines = result.stdout.strip().splitlines()
    assert lines, f"{main} printed nothing:\n{result.stderr}\n{mesh.logs()}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def test_sofarpc_consumer_reaches_the_sofarpc_provider_and_survives_heartbeats(mesh: Mesh) -> None:
    before = mesh.listener_counts("bolt")
    report = consume(
        mesh,
        [*SOFA_JVM, "-Dbolt.tcp.heartbeat.interval=300"],
        SOFA_JAR,
        "interop.SofaConsumer",
        mesh.bolt_port,
        20,
        "idleMs=1500",  # after 10 calls: ~4 heartbeats on the idle connection
    )
    after = mesh.listener_counts("bolt")
    assert report["error"] is None, f"{report}\n{mesh.logs()}"
    assert report["replies"] == [f"echo-{i}" for i in range(20)]
    assert after["heartbeats"] - before["heartbeats"] >= 2, (before, after)
    # all 20 calls and the heartbeats on one connection: none went unanswered, nothing reconnected
    assert after["connections"] - before["connections"] == 1, (before, after)


def test_sofarpc_consumer_gets_no_processor_for_an_unrouted_service(mesh: Mesh) -> None:
    before = mesh.listener_counts("bolt")
    report = consume(mesh, SOFA_JVM, SOFA_JAR, "interop.SofaConsumer", mesh.bolt_port, 1, "uniqueId=unrouted")
    after = mesh.listener_counts("bolt")
    assert report["replies"] == []
    error = report["error"]
    assert error is not None, report
    # bolt's RpcResponseResolver turns the NO_PROCESSOR status into an InvokeException
    # ("Rpc invocation exception: NO_PROCESSOR, the address is ..."), which SOFARPC wraps in a
    # SofaRpcException of type CLIENT_UNDECLARED_ERROR (299)
    assert error["type"] == "com.alipay.sofa.rpc.core.exception.SofaRpcException", error
    assert error["error_type"] == 299, error
    assert "InvokeException: Rpc invocation exception: NO_PROCESSOR" in error["message"], error
    assert report["elapsed_ms"] < CALL_TIMEOUT_MS / 2, "an answer, not a timeout"
    assert after["no_route"] - before["no_route"] == 1, (before, after)


def test_dubbo_consumer_reaches_the_dubbo_provider_and_survives_heartbeats(mesh: Mesh) -> None:
    before = mesh.listener_counts("dubbo")
    report = consume(
        mesh, JVM, DUBBO_JAR, "interop.DubboConsumer", mesh.dubbo_port, 20, "idleMs=2000", "heartbeatMs=600"
    )
    after = mesh.listener_counts("dubbo")
    assert report["error"] is None, f"{report}\n{mesh.logs()}"
    assert report["replies"] == [f"echo-{i}" for i in range(20)]
    assert after["heartbeats"] - before["heartbeats"] >= 1, (before, after)
    assert after["connections"] - before["connections"] == 1, (before, after)


def test_dubbo_consumer_gets_service_not_found_for_an_unrouted_version(mesh: Mesh) -> None:
    before = mesh.listener_counts("dubbo")
    report = consume(mesh, JVM, DUBBO_JAR, "interop.DubboConsumer", mesh.dubbo_port, 1, "version=2.0")
    after = mesh.listener_counts("dubbo")
    assert report["replies"] == []
    error = report["error"]
    assert error is not None, report
    # status 60 (SERVICE_NOT_FOUND): Dubbo's DefaultFuture raises a RemotingException with the response's
    # error message, which reaches the caller inside an RpcException
    assert error["type"] == "org.apache.dubbo.rpc.RpcException", error
    assert 'RemotingException: no route for service "com.example.EchoService" version "2.0"' in error["message"], error
    assert report["elapsed_ms"] < CALL_TIMEOUT_MS / 2, "an answer, not a timeout"
    assert after["no_route"] - before["no_route"] == 1, (before, after)


def invoke(mesh: Mesh, target: str, method: str, body: Any) -> tuple[Any, str]:
    """InvokeService over the sidecar's gRPC API with a JSON body; (decoded JSON answer, content type)."""
    from google.protobuf import any_pb2

    from layotto_fast._proto import runtime_pb2 as pb

    request = pb.InvokeServiceRequest(
        id=target,
        message=pb.CommonInvokeRequest(method=method, data=any_pb2.Any(value=json.dumps(body).encode())),
    )
    response = mesh.sidecar.stub().InvokeService(request, timeout=10)
    return json.loads(response.data.value), response.content_type


def test_invoke_service_reaches_the_sofarpc_provider_over_the_bolt_channel(mesh: Mesh) -> None:
    answer, content_type = invoke(mesh, "sofa-echo", "echo", ["from InvokeService"])
    assert (answer, content_type) == ("from InvokeService", "application/json"), mesh.logs()
    typed, _ = invoke(mesh, "sofa-echo", "echo", {"types": ["java.lang.String"], "args": ["typed"]})
    assert typed == "typed"


def test_invoke_service_reaches_the_dubbo_provider_with_a_generic_call(mesh: Mesh) -> None:
    answer, content_type = invoke(mesh, "dubbo-echo", "echo", ["from InvokeService"])
    assert (answer, content_type) == ("from InvokeService", "application/json"), mesh.logs()
    # Java's answer for a null result is its own response kind (RESPONSE_NULL_VALUE)
    nothing, _ = invoke(mesh, "dubbo-echo", "echo", {"types": ["java.lang.String"], "args": [None]})
    assert nothing is None


def test_invoke_service_reads_a_java_object_answer_of_every_field_kind(mesh: Mesh) -> None:
    """A generic call whose argument is a map realized into a Java object, and whose answer
    is that Java object as Dubbo generalizes it: a map naming its class, with a date, a
    long, a double, a boolean, a list, a nested map, a nested object and a null, read by the
    sidecar's Hessian reader from Java's own bytes."""
    sent = {"text": "hi", "count": 2, "tags": ["first"]}
    answer, _ = invoke(mesh, "dubbo-echo", "greet", {"types": ["com.example.Greeting"], "args": [sent]})
    assert answer["class"] == "com.example.Greeting", answer
    assert (answer["text"], answer["count"], answer["total"], answer["ratio"], answer["loud"]) == (
        "hi!", 3, 1 << 40, 0.25, True)  # fmt: skip
    assert answer["at"] == 1700000000123, "a date, as milliseconds since the epoch"
    assert answer["tags"] == ["first", "seen"]
    assert answer["scores"] == {"first": 1, "second": -2}
    previous = answer["previous"]
    assert (previous["text"], previous["count"], previous["tags"]) == ("hi", 2, ["first"])
    assert previous["at"] is None and previous["previous"] is None


def invoke_error(mesh: Mesh, target: str, method: str, body: Any) -> tuple[str, str]:
    """The (gRPC status name, details) InvokeService fails with."""
    import grpc

    with pytest.raises(grpc.RpcError) as caught:
        invoke(mesh, target, method, body)
    return caught.value.code().name, caught.value.details() or ""


def test_invoke_service_reports_a_java_side_failure(mesh: Mesh) -> None:
    code, details = invoke_error(mesh, "dubbo-echo", "noSuchMethod", ["x"])
    assert code == "UNKNOWN" and "noSuchMethod" in details, (code, details)
    code, details = invoke_error(mesh, "dubbo-echo", "fail", ["out of stock"])
    # the class and message the service threw, not Dubbo's GenericException around them,
    # whose message is the whole stack trace
    assert code == "UNKNOWN" and details.endswith("threw java.lang.IllegalStateException: out of stock"), details


def test_invoke_service_reports_a_sofarpc_error_answered_with_status_success(mesh: Mesh) -> None:
    """SOFARPC answers its own errors with Bolt status SUCCESS and sofa_head_response_error
    "true" in the header map: the call fails with the provider's message, not an OK whose
    data is the error."""
    code, details = invoke_error(mesh, "sofa-echo", "fail", ["out of stock"])
    assert code == "UNKNOWN" and "out of stock" in details, (code, details)
    # a call SOFARPC cannot even read is refused with a Bolt status and bolt's RpcServerException,
    # written in SOFA's Hessian dialect whatever the request's serialization
    code, details = invoke_error(mesh, "sofa-echo", "noSuchMethod", ["x"])
    assert code == "INVALID_ARGUMENT" and "status 0x0012" in details, (code, details)
    assert "RpcServerException: " in details and "[noSuchMethod]" in details, details


def test_invoke_service_reports_a_sofarpc_exception_in_hessian(mesh: Mesh) -> None:
    """The data is what SOFARPC's own consumer sent for fail('echo-0') (recorded by
    tests/mesh/make_golden.py): SOFARPC answers with the provider's exception inside a
    SofaResponse in SOFA's Hessian dialect, and the call fails with its class and message."""
    import grpc
    from google.protobuf import any_pb2
    from layotto_fast_native import decode_bolt_request

    from layotto_fast._proto import runtime_pb2 as pb

    vectors = json.loads((Path(__file__).resolve().parents[1] / "mesh" / "golden" / "vectors.json").read_text())
    content = decode_bolt_request(bytes.fromhex(vectors["bolt_request_sofarpc_fail"]["hex"]))[-1]
    request = pb.InvokeServiceRequest(
        id="sofa-hessian", message=pb.CommonInvokeRequest(method="fail", data=any_pb2.Any(value=content))
    )
    with pytest.raises(grpc.RpcError) as caught:
        mesh.sidecar.stub().InvokeService(request, timeout=10)
    code, details = caught.value.code().name, caught.value.details() or ""
    assert code == "UNKNOWN", (code, details)
    assert details.endswith("answered an error: java.lang.IllegalStateException: echo-0"), details


def test_sofarpc_consumer_gets_the_provider_exception_through_the_listener(mesh: Mesh) -> None:
    report = consume(mesh, SOFA_JVM, SOFA_JAR, "interop.SofaConsumer", mesh.bolt_port, 1, "method=fail")
    error = report["error"]
    assert error is not None, report
    # the SofaResponse crossed the mesh intact: SOFARPC rethrows the provider's own exception
    assert (error["type"], error["message"]) == ("java.lang.IllegalStateException", "echo-0"), error


def test_a_java_dubbo_provider_that_shuts_down_is_drained_without_a_failed_call(tmp_path: Path) -> None:
    """SIGTERM makes Apache Dubbo's provider send its read-only event on each connection
    before it stops: the mesh sends it nothing more (the other host, a fake answering with
    its name, takes every call, none fails), and closes that connection once it is idle,
    which lets the provider stop without waiting out its shutdown timeout."""
    from tests.mesh.dubbo_fake import call, named_providers
    from tests.mesh.dubbo_fake import mesh_config as dubbo_mesh_config

    build()
    java = start_provider(tmp_path, JVM, DUBBO_JAR, "interop.DubboProvider")
    port = sidecar_process.free_port()
    with named_providers("fake") as (fake,):
        config = dubbo_mesh_config(port, [f"127.0.0.1:{java.port}", fake.address])
        path = tmp_path / "mesh.yaml"
        path.write_text(yaml.safe_dump(config))
        sidecar = sidecar_process.start(tmp_path, "--config", str(path))
        try:
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            assert {call(client, i) for i in range(6)} == {"hi", "fake"}, "both hosts answer"
            stopping_at = time.monotonic()
            java.process.terminate()
            answers = [call(client, 100 + i) for i in range(200)]  # none may fail meanwhile
            assert java.process.wait(8) is not None
            stopped_after = time.monotonic() - stopping_at
            assert answers[-50:] == ["fake"] * 50, answers
            assert stopped_after < 8, "the provider waited for the mesh's connection to go"
        finally:
            sidecar.stop()
            java.stop()


def test_bolt_clients_of_either_protocol_version_cross_the_listener(tmp_path: Path) -> None:
    """bolt's own RpcClient (no SOFARPC: no header map, so the listener's default route) talks
    v1, v2 with ver1 1 (the CRC bit set but no CRC written) and v2 with ver1 2 (a CRC32 the
    server checks) to bolt's own RpcServer through the sidecar: every answer comes back in the
    request's version, and the client's idle-time heartbeats are answered on the one connection.
    A mesh that waited for a CRC on ver1 1 would time these calls out, and one that rewrote a
    request id without the CRC would have the server drop the frame."""
    build()
    server = start_provider(tmp_path, SOFA_JVM, SOFA_JAR, "interop.BoltEchoServer")
    port = sidecar_process.free_port()
    config = {
        "mesh": {
            "listeners": [{"name": "bolt-in", "protocol": "bolt", "address": f"127.0.0.1:{port}",
                           "routes": [{"name": "any", "cluster": "bolt-echo"}]}],
            "clusters": [{"name": "bolt-echo", "protocol": "bolt", "hosts": [f"127.0.0.1:{server.port}"]}],
        }
    }  # fmt: skip
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(config))
    sidecar = sidecar_process.start(tmp_path, "--config", str(path))
    mesh = Mesh(tmp_path, sidecar, port, 0, [server])
    try:
        for options in (["protocol=1"], ["protocol=2", "version=1"], ["protocol=2", "version=2"]):
            before = mesh.listener_counts("bolt-in")
            # idle mid-run: bolt's heartbeats, in the connection's version, answered by the sidecar
            report = consume(mesh, [*SOFA_JVM, "-Dbolt.tcp.heartbeat.interval=300"], SOFA_JAR, "interop.BoltClient",
                             port, 4, *options, "idleMs=1500")  # fmt: skip
            after = mesh.listener_counts("bolt-in")
            assert report == {"replies": [f"echo:bolt-{i}" for i in range(4)], "error": None}, (
                options, report, mesh.logs())  # fmt: skip
            assert after["heartbeats"] - before["heartbeats"] >= 2, (options, before, after)
            assert after["connections"] - before["connections"] == 1, (options, before, after)
    finally:
        sidecar.stop()
        server.stop()


def test_invoke_service_reaches_bolts_own_server_and_reports_its_exception(tmp_path: Path) -> None:
    """A bolt target with bolt's own class for the content (``class: java.lang.String``) calls
    bolt's RpcServer directly (rpc address, no cluster of the config): the Hessian string comes
    back as the answer's data; a processor that throws is answered with status SERVER_EXCEPTION
    and bolt's RpcServerException, which the call reports as UNKNOWN with the thrown message."""
    import grpc
    from google.protobuf import any_pb2

    from layotto_fast._proto import runtime_pb2 as pb

    build()
    server = start_provider(tmp_path, SOFA_JVM, SOFA_JAR, "interop.BoltEchoServer")
    path = tmp_path / "invoke.yaml"
    path.write_text(yaml.safe_dump({"invoke": {"targets": [
        {"id": "bolt-string", "channel": "bolt", "address": f"127.0.0.1:{server.port}", "service": "echo",
         "class": "java.lang.String"},
    ]}}))  # fmt: skip
    sidecar = sidecar_process.start(tmp_path, "--config", str(path))
    try:

        def call(text: str) -> pb.InvokeResponse:
            hessian = bytes([len(text)]) + text.encode()  # a compact Hessian string (under 32 chars)
            message = pb.CommonInvokeRequest(method="m", data=any_pb2.Any(value=hessian))
            return sidecar.stub().InvokeService(pb.InvokeServiceRequest(id="bolt-string", message=message), timeout=10)

        assert call("hi").data.value == b"\x07echo:hi"
        with pytest.raises(grpc.RpcError) as caught:
            call("fail:out of stock")
        code, details = caught.value.code().name, caught.value.details() or ""
        assert code == "UNKNOWN" and "status 0x0002" in details, (code, details, server.log())
        assert "IllegalStateException: out of stock" in details, details
    finally:
        sidecar.stop()
        server.stop()
