"""Start-up, bad configuration, readiness states, the Unix socket and SIGTERM."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import hpack
import orjson
import pytest

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast._proto import runtime_pb2_grpc
from tests import sidecar as sidecar_process
from tests.backends.servers import RedisServer

MANIFEST = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: {type}
  version: v1
{extra}"""


def write(folder: Path, name: str, type_: str, extra: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(MANIFEST.format(name=name, type=type_, extra=extra))
    return path


def run_check(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sidecar_process.command(), "serve", "--grpc-port", "0", "--actuator-port", "0", *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        (
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {}\nspec: {type: state.in-memory}\n",
            ["metadata.name"],
        ),
        (
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: a}\nspec: {type: state.nosuch}\n",
            ["spec.type", "state.nosuch"],
        ),
        ("kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: a}\nspec: {type: nodot}\n", ["spec.type"]),
        ("kind: Component\napiVersion: v9\nmetadata: {name: a}\nspec: {type: state.in-memory}\n", ["apiVersion"]),
        (
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: a}\n"
            "spec: {type: state.in-memory, version: v7}\n",
            ["spec.version", "v7"],
        ),
        (
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: a}\n"
            "spec: {type: sequencer.in-memory, metadata: [{name: biggerThan, value: abc}]}\n",
            ["spec.metadata.biggerThan", "abc"],
        ),
        ("kind: [unclosed\n", ["yaml"]),
    ],
)
def test_bad_manifest_exits_2_naming_file_and_field(tmp_path: Path, manifest: str, words: list[str]) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "bad.yaml").write_text(manifest)
    result = run_check(tmp_path, "--resources-path", str(folder))
    assert result.returncode == 2, result.stderr
    assert "bad.yaml" in result.stderr
    for word in words:
        assert word in result.stderr


def test_duplicate_component_name_exits_2(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    write(folder, "one", "state.in-memory")
    (folder / "two.yaml").write_text(MANIFEST.format(name="one", type="lock.in-memory", extra=""))
    result = run_check(tmp_path, "--resources-path", str(folder))
    assert result.returncode == 2 and "metadata.name" in result.stderr and "one.yaml" in result.stderr


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("grpc_port: http\n", ["grpc_port", "integer"]),
        ("no_such_setting: 1\n", ["no_such_setting", "unknown"]),
        ("actuator_port: 70000\n", ["actuator_port", "70000"]),
        ("log_level: loud\n", ["log_level", "loud"]),
        ("- a list\n", ["mapping"]),
    ],
)
def test_bad_config_exits_2(tmp_path: Path, config: str, words: list[str]) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(config)
    result = subprocess.run(
        [*sidecar_process.command(), "serve", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "sidecar.yaml" in result.stderr
    for word in words:
        assert word in result.stderr


def test_help_documents_flags() -> None:
    result = subprocess.run([*sidecar_process.command(), "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for flag in (
        "--app-id",
        "--grpc-port",
        "--actuator-port",
        "--app-port",
        "--resources-path",
        "--config",
        "--log-level",
        "--grpc-uds",
    ):
        assert flag in result.stdout


def test_readiness_up_within_a_second_of_start(tmp_path: Path) -> None:
    """Starting the embedded components takes the sidecar well under a second, by its own clock
    (``uptime_seconds`` counts from when its components were built, read right after readiness
    first said UP). From the Popen it is measured loosely: interpreter start-up and imports
    are the machine's speed, not the sidecar's."""
    started = time.monotonic()
    sidecar = sidecar_process.start(tmp_path, wait=False)
    try:
        sidecar.wait_ready(timeout=10)
        elapsed = time.monotonic() - started
        uptime = orjson.loads(sidecar.http("/actuator/info")[1])["uptime_seconds"]
        assert uptime < 1.0, f"readiness UP {uptime:.2f}s after the sidecar started"
        assert elapsed < 5.0, f"readiness UP {elapsed:.2f}s after the process was started"
    finally:
        assert sidecar.stop() == 0


def test_embedded_components_when_no_folder(tmp_path: Path) -> None:
    sidecar = sidecar_process.start(tmp_path, "--resources-path", "", wait=False)
    try:
        sidecar.wait_ready()
        assert sidecar.stub().SayHello(pb.SayHelloRequest(service_name="helloworld")).hello == "greetings"
    finally:
        assert sidecar.stop() == 0


def test_config_file_and_flags(tmp_path: Path) -> None:
    folder = tmp_path / "comps"
    write(folder, "store", "state.in-memory")
    config = tmp_path / "sidecar.yaml"
    config.write_text("app_id: from-file\nresources_path: comps\n")
    sidecar = sidecar_process.start(
        tmp_path, "--config", str(config), "--resources-path", str(folder), "--app-id", "from-flag"
    )
    try:
        info = orjson.loads(sidecar.http("/actuator/info")[1])
        assert info["app_id"] == "from-flag"
        assert [c["name"] for c in info["components"]] == ["store"]
    finally:
        assert sidecar.stop() == 0


def test_a_component_is_served_only_to_the_app_ids_in_its_scopes(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    theirs = write(folder, "theirs", "state.in-memory", "scopes: [billing]\n")
    write(folder, "ours", "state.in-memory", "scopes: [billing, orders]\n")
    sidecar = sidecar_process.start(tmp_path, "--resources-path", str(folder), "--app-id", "orders")
    try:
        stub = sidecar.stub()
        stub.SaveState(pb.SaveStateRequest(store_name="ours", states=[pb.StateItem(key="k", value=b"v")]))
        assert stub.GetState(pb.GetStateRequest(store_name="ours", key="k")).data == b"v"
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetState(pb.GetStateRequest(store_name="theirs", key="k"))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "no state component of that name (known: ours)" in raised.value.details()  # type: ignore[attr-defined]
        assert f"{theirs}: component theirs is scoped to billing, not to app id orders" in sidecar.log()
    finally:
        assert sidecar.stop() == 0


def test_failed_required_component_makes_readiness_down(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    write(folder, "store", "state.in-memory")
    bad = tmp_path / "s.json"
    bad.write_text("not json")
    write(folder, "vault", "secretstores.local.file", f"  metadata:\n    - name: secretsFile\n      value: {bad}\n")
    sidecar = sidecar_process.start(tmp_path, "--resources-path", str(folder), wait=False)
    try:
        sidecar.wait_ready(want="DOWN")
        status, body = sidecar.http("/actuator/health/readiness")
        document = orjson.loads(body)
        assert status == 503
        assert document["components"]["vault"]["status"] == "DOWN"
        assert f"{bad}" in document["components"]["vault"]["reason"]
        assert document["components"]["store"]["status"] == "UP"
        # The rest keeps serving.
        assert sidecar.stub().GetState(pb.GetStateRequest(store_name="store", key="k")).data == b""
    finally:
        assert sidecar.stop() == 0


def test_failed_optional_component_keeps_readiness_up(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    bad = tmp_path / "s.json"
    bad.write_text("not json")
    write(
        folder,
        "vault",
        "secretstores.local.file",
        f"  ignoreErrors: true\n  metadata:\n    - name: secretsFile\n      value: {bad}\n",
    )
    sidecar = sidecar_process.start(tmp_path, "--resources-path", str(folder))
    try:
        document = orjson.loads(sidecar.http("/actuator/health/readiness")[1])
        assert document["status"] == "UP" and document["components"]["vault"]["status"] == "DOWN"
    finally:
        assert sidecar.stop() == 0


def test_grpc_over_unix_socket(tmp_path: Path, transport: str) -> None:
    socket_path = tmp_path / "layotto.sock"
    sidecar = sidecar_process.start(tmp_path, "--grpc-uds", str(socket_path), "--grpc-transport", transport)
    try:
        # grpc-go and Layotto's SDKs send "localhost" as the authority on a Unix socket.
        options = [("grpc.default_authority", "localhost")]
        with grpc.insecure_channel(f"unix:{socket_path}", options=options) as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            assert stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="uds")).hello == "greetings, uds"
    finally:
        assert sidecar.stop() == 0
    assert not socket_path.exists()


def serve_exit(tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``serve`` expected to stop at start-up: its exit code and output."""
    args = sidecar_process.serve_command(sidecar_process.free_port(), sidecar_process.free_port(), *flags)
    return subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=tmp)


def test_grpc_uds_never_removes_a_file_or_a_socket_in_use(tmp_path: Path) -> None:
    """Before, the path was unlinked whatever it was: a config file given by mistake, or the
    live socket of another sidecar (whose new clients then got ENOENT)."""
    not_a_socket = tmp_path / "config.yaml"
    not_a_socket.write_text("keep me\n")
    result = serve_exit(tmp_path, "--grpc-uds", str(not_a_socket))
    assert result.returncode == 2 and "grpc_uds" in result.stderr and "is not a socket" in result.stderr
    assert not_a_socket.read_text() == "keep me\n"

    in_use = tmp_path / "other.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(in_use))
        other.listen()
        result = serve_exit(tmp_path, "--grpc-uds", str(in_use))
        assert result.returncode == 2 and "another process is serving" in result.stderr, result.stderr
        assert in_use.exists()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(in_use))  # still the other process's


def test_a_socket_left_by_a_process_that_is_gone_is_taken_over(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(stale))  # closed without unlinking, as a killed process leaves it
    sidecar = sidecar_process.start(tmp_path, "--grpc-uds", str(stale))
    try:
        with grpc.insecure_channel(f"unix:{stale}") as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            assert stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="u"), timeout=5).hello
    finally:
        assert sidecar.stop() == 0
    assert not stale.exists()


def test_sighup_without_a_mesh_does_not_end_the_sidecar(tmp_path: Path) -> None:
    """SIGHUP's default action ended the process (no drain) when there was no mesh to reload."""
    sidecar = sidecar_process.start(tmp_path)
    try:
        sidecar.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert sidecar.process.poll() is None
        assert sidecar.stub().SayHello(pb.SayHelloRequest(service_name="helloworld", name="h"), timeout=5).hello
        assert "SIGHUP: nothing to reload" in sidecar.log()
    finally:
        assert sidecar.stop() == 0


def test_an_ipv6_listen_address_on_either_transport(tmp_path: Path, transport: str) -> None:
    """grpcio read "::1:<port>" as another address and could not bind."""
    sidecar = sidecar_process.start(tmp_path, "--listen-address", "::1", "--grpc-transport", transport, wait=False)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://[::1]:{sidecar.actuator_port}/actuator/health/readiness") as r:
                    assert r.status == 200
                    break
            except OSError:
                assert sidecar.process.poll() is None, sidecar.log()
                assert time.monotonic() < deadline, sidecar.log()
                time.sleep(0.1)
        with grpc.insecure_channel(f"[::1]:{sidecar.grpc_port}") as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            assert stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="v6"), timeout=5).hello
    finally:
        assert sidecar.stop() == 0


def test_unix_socket_with_grpc_core_default_authority(tmp_path: Path, transport: str) -> None:
    """grpc-core sends the socket path as :authority; h2 alone would reset the stream (hyperium/h2#487)."""
    socket_path = tmp_path / "layotto.sock"
    sidecar = sidecar_process.start(tmp_path, "--grpc-uds", str(socket_path), "--grpc-transport", transport)
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            for name in ("a", "b", "c"):  # later requests reuse the client's HPACK table
                reply = stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name=name), timeout=5)
                assert reply.hello == f"greetings, {name}"
    finally:
        assert sidecar.stop() == 0


def held_call(stub: runtime_pb2_grpc.RuntimeStub, target: str) -> threading.Thread:
    """An InvokeService to ``target`` (an http target whose upstream never answers), in flight
    on a thread of its own: a call the shutdown's grace is spent on."""

    def call() -> None:
        with contextlib.suppress(grpc.RpcError):  # cut at the end of the grace
            stub.InvokeService(pb.InvokeServiceRequest(id=target, message=pb.CommonInvokeRequest(method="m")))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def silent_upstream() -> socket.socket:
    """A listening socket the kernel completes connections on; nothing reads or answers them."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    return silent


def test_sigterm_turns_readiness_down_ends_subscriptions_and_drains(tmp_path: Path, transport: str) -> None:
    """On SIGTERM readiness goes DOWN during the grace; a configuration subscription (a stream
    that never ends by itself) is ended at once with UNAVAILABLE, so that its client subscribes
    again elsewhere (before, it held the stop for the whole grace and was then cut); a call in
    flight gets the grace, and the process exits 0 once that is spent, not long after."""
    grace = 3.0
    with silent_upstream() as silent:
        config = {"invoke": {"targets": [
            {"id": "slow", "channel": "http", "address": f"127.0.0.1:{silent.getsockname()[1]}", "timeout_ms": 60_000},
        ]}}  # fmt: skip
        sidecar = sidecar_process.start_with_config(
            tmp_path, config, "--shutdown-grace-seconds", f"{grace:g}", "--grpc-transport", transport
        )
        channel = grpc.insecure_channel(sidecar.target)
        try:
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            call = stub.SubscribeConfiguration(
                iter([pb.SubscribeConfigurationRequest(store_name="config_demo", keys=["k"])])
            )
            ended: queue.Queue[tuple[grpc.StatusCode, str, float]] = queue.Queue()

            def drain() -> None:
                try:
                    for _ in call:
                        pass
                except grpc.RpcError as error:
                    ended.put((error.code(), error.details() or "", time.monotonic()))  # type: ignore[attr-defined]
                else:
                    ended.put((grpc.StatusCode.OK, "", time.monotonic()))

            def subscriptions() -> int:
                return int(orjson.loads(sidecar.http("/actuator/info")[1])["configuration_subscriptions"])

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            deadline = time.monotonic() + 10
            while subscriptions() != 1:  # the stream's handler runs: it is open on the server
                assert time.monotonic() < deadline, f"the subscription never showed in actuator/info:\n{sidecar.log()}"
                time.sleep(0.01)
            held_call(stub, "slow")
            time.sleep(0.2)  # the call reaches the sidecar (it waits on the silent upstream)
            exited: list[float] = []

            def wait_exit() -> None:
                sidecar.process.wait()
                exited.append(time.monotonic())

            waiter = threading.Thread(target=wait_exit, daemon=True)
            signalled = time.monotonic()
            sidecar.process.send_signal(signal.SIGTERM)
            waiter.start()
            saw_down = False
            while sidecar.process.poll() is None and time.monotonic() - signalled < grace + 10:
                try:
                    status, body = sidecar.http("/actuator/health/readiness")
                    if status == 503 and b"shutting down" in body:
                        saw_down = True
                except OSError:
                    pass
                time.sleep(0.02)
            waiter.join(grace + 10)
            assert sidecar.process.poll() == 0, sidecar.log()
            took = exited[0] - signalled
            assert grace <= took < grace + 1.5, f"exited {took:.2f}s after SIGTERM, the grace being {grace:g}s"
            assert saw_down, sidecar.log()
            code, details, at = ended.get(timeout=5)
            assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "the sidecar is shutting down"), sidecar.log()
            assert at - signalled < 1.0, f"the subscription ended {at - signalled:.2f}s after SIGTERM, not at once"
        finally:
            channel.close()
            if sidecar.process.returncode is None:  # it did not exit: the test failed, do not leave it
                sidecar.process.kill()
                sidecar.process.wait()


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        (
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: 42}\nspec: {type: state.in-memory}\n",
            ["metadata.name", "must be a string", "int"],
        ),
        (
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: ids}\nspec:\n  type: sequencer.in-memory\n"
            "  metadata:\n    - name: biggerThan\n      value: 1e30\n",
            ["spec.metadata.biggerThan", "1e30"],
        ),
        (
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: v}\n"
            "spec:\n  type: secretstores.local.file\n"
            "  metadata:\n    - name: secretsFile\n      value: /nonexistent/s.json\n",
            ["spec.metadata.secretsFile", "/nonexistent/s.json", "does not exist"],
        ),
        (
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: r}\nspec:\n  type: state.redis\n"
            "  metadata:\n    - name: redisHost\n      value: localhost:notaport\n",
            ["spec.metadata.redisHost", "host:port"],
        ),
    ],
)
def test_check_runs_every_validation_serve_does(tmp_path: Path, manifest: str, words: list[str]) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "one.yaml").write_text(manifest)
    for command in ("check", "serve"):
        result = subprocess.run(
            [*sidecar_process.command(), command, "--grpc-port", "0", "--actuator-port", "0",
             "--resources-path", str(folder)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "one.yaml" in result.stderr and all(word in result.stderr for word in words), result.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--listen-address", "999.1.1.1"], ["--listen-address", "999.1.1.1", "not an IP address"]),
        (["--grpc-uds", "/nonexistent-folder/x.sock"], ["--grpc-uds", "/nonexistent-folder/x.sock", "does not exist"]),
        (["--grpc-port", "40123", "--actuator-port", "40123"], ["--actuator-port: 40123 is also the --grpc-port"]),
    ],
)
def test_start_up_errors_name_their_cause(tmp_path: Path, flags: list[str], words: list[str]) -> None:
    result = subprocess.run(
        [*sidecar_process.command(), "check", *flags], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 2 and all(word in result.stderr for word in words), result.stderr


REDIS_WITH_SECRET = """  metadata:
    - name: redisHost
      value: {address}
    - name: redisPassword
      secretKeyRef:
        name: redis
        key: {key}
auth:
  secretStore: vault
"""


def secret_folder(tmp: Path, address: str, key: str) -> Path:
    """A local file secret store holding the Redis password, and a state.redis reading it from there."""
    folder = tmp / "components"
    write(folder, "vault", "secretstores.local.file", "  metadata:\n    - name: multiValued\n      value: true\n"
          "    - name: secretsFile\n      value: secrets.json\n")  # fmt: skip
    (folder / "secrets.json").write_text('{"redis": {"password": "s3cret-pw"}}')
    write(folder, "store", "state.redis", REDIS_WITH_SECRET.format(address=address, key=key))
    return folder


def check(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sidecar_process.command(), "check", "--resources-path", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_resources_path_given_twice_or_comma_separated_reads_every_folder(tmp_path: Path) -> None:
    """As daprd takes --resources-path: a second one replaced the first, whose components were
    then missing without a word."""
    first, second = tmp_path / "one", tmp_path / "two"
    write(first, "a", "state.in-memory")
    write(second, "b", "lock.in-memory")
    both = subprocess.run(
        [*sidecar_process.command(), "check", "--resources-path", str(first), "--resources-path", str(second)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert both.returncode == 0 and both.stdout.strip() == "ok: 2 components", (both.stdout, both.stderr)
    assert check(Path(f"{first},{second}")).stdout.strip() == "ok: 2 components"
    write(second, "a", "state.in-memory")  # the same name in both: refused, naming the first
    clash = check(Path(f"{first},{second}"))
    assert clash.returncode == 2 and "already declared" in clash.stderr, clash.stderr


def test_check_reports_a_secret_store_that_does_not_start(tmp_path: Path) -> None:
    """Nothing references the store, but the app reads it with GetSecret: serve runs with it
    DOWN (and readiness DOWN). Before, check started secret stores only for references, and
    said ok."""
    folder = tmp_path / "components"
    store = "  metadata:\n    - name: secretsFile\n      value: secrets.json\n"
    write(folder, "vault", "secretstores.local.file", store)
    (folder / "secrets.json").write_text("{not json")
    result = check(folder)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "vault.yaml" in result.stderr and "not valid JSON" in result.stderr, result.stderr
    (folder / "secrets.json").write_text('{"k": "v"}')
    assert check(folder).returncode == 0


def readiness(sidecar: sidecar_process.Sidecar) -> dict[str, Any]:
    try:
        document: dict[str, Any] = orjson.loads(sidecar.http("/actuator/health/readiness")[1])
    except OSError:  # not listening yet
        return {"status": "", "components": {}}
    return document


def test_secret_key_ref_gives_redis_its_password(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", password="s3cret-pw") as server:
        server.start()
        folder = secret_folder(tmp_path, server.address, "password")
        result = check(folder)
        assert result.returncode == 0 and "ok: 2 components" in result.stdout, result.stderr
        sidecar = sidecar_process.start(tmp_path, "--resources-path", str(folder), wait=False)
        try:
            # Not wait_ready(): it also matches a component's "status":"UP" (the vault's, here).
            deadline = time.monotonic() + 10
            while (document := readiness(sidecar))["status"] != "UP" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert document["status"] == "UP" and document["components"]["store"]["status"] == "UP", sidecar.log()
            stub = sidecar.stub()
            stub.SaveState(pb.SaveStateRequest(store_name="store", states=[pb.StateItem(key="k", value=b"v")]))
            assert stub.GetState(pb.GetStateRequest(store_name="store", key="k")).data == b"v"
            assert "s3cret-pw" not in sidecar.log()
        finally:
            assert sidecar.stop() == 0, sidecar.log()
        # The write went through the password-protected server, the key as given (Layotto's default).
        assert server.command("EXISTS", "k") == 1


def test_a_missing_secret_key_stops_start_up_naming_file_and_field(tmp_path: Path) -> None:
    # Nothing listens there: the reference fails before the component would connect.
    folder = secret_folder(tmp_path, f"127.0.0.1:{sidecar_process.free_port()}", "no-such-key")
    for result in (check(folder), run_check(tmp_path, "--resources-path", str(folder))):
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "store.yaml: spec.metadata[1].secretKeyRef" in result.stderr, result.stderr
        assert "'no-such-key'" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_check_reads_scopes_as_serve_does(tmp_path: Path) -> None:
    folder = secret_folder(tmp_path, "127.0.0.1:6379", "password")
    vault = (folder / "vault.yaml").read_text()
    (folder / "vault.yaml").write_text(vault + "scopes: [billing]\n")
    assert check(folder, "--app-id", "billing").returncode == 0  # the store is billing's
    for result in (
        check(folder, "--app-id", "orders"),
        run_check(tmp_path, "--resources-path", str(folder), "--app-id", "orders"),
    ):
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "auth.secretStore 'vault'" in result.stderr, result.stderr


def test_an_unknown_secret_store_is_a_bad_manifest(tmp_path: Path) -> None:
    folder = secret_folder(tmp_path, "127.0.0.1:6379", "password")
    (folder / "vault.yaml").unlink()
    result = check(folder)
    assert result.returncode == 2 and "store.yaml: spec.metadata[1].secretKeyRef" in result.stderr, result.stderr
    assert "auth.secretStore 'vault'" in result.stderr, result.stderr


@pytest.mark.parametrize("type_", ["state.in-memory", "lock.in-memory", "sequencer.in-memory"])
def test_a_key_prefix_with_the_separator_stops_check_and_serve(tmp_path: Path, type_: str) -> None:
    folder = tmp_path / "components"
    write(folder, "store", type_, "  metadata:\n    - name: keyPrefix\n      value: a||b\n")
    for result in (check(folder), run_check(tmp_path, "--resources-path", str(folder))):
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "store.yaml: spec.metadata.keyPrefix: 'a||b' contains '||'" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr


def test_a_shared_folder_may_declare_one_name_for_different_app_ids(tmp_path: Path) -> None:
    """``statestore`` for billing in a.yaml and for orders in b.yaml: ``serve --app-id orders``
    exited 2 ("already declared in a.yaml"), names being compared before scopes applied."""
    folder = tmp_path / "components"
    folder.mkdir()
    for file, app_id in (("a.yaml", "billing"), ("b.yaml", "orders")):
        (folder / file).write_text(
            MANIFEST.format(name="statestore", type="state.in-memory", extra=f"scopes: [{app_id}]\n")
        )
    sidecar = sidecar_process.start(tmp_path, "--resources-path", str(folder), "--app-id", "orders")
    try:
        stub = sidecar.stub()
        stub.SaveState(pb.SaveStateRequest(store_name="statestore", states=[pb.StateItem(key="k", value=b"v")]))
        assert stub.GetState(pb.GetStateRequest(store_name="statestore", key="k")).data == b"v"
        assert f"{folder / 'a.yaml'}: component statestore is scoped to billing, not to app id orders" in sidecar.log()
    finally:
        assert sidecar.stop() == 0
    # One that every app loads collides with each app's own, in check as in serve.
    (folder / "c.yaml").write_text(MANIFEST.format(name="statestore", type="state.in-memory", extra=""))
    for result, first in (
        (check(folder, "--app-id", "billing"), "a.yaml"),
        (run_check(tmp_path, "--resources-path", str(folder), "--app-id", "orders"), "b.yaml"),
    ):
        assert result.returncode == 2, (result.stdout, result.stderr)
        problem = f"c.yaml: metadata.name: 'statestore' is already declared in {folder / first}"
        assert problem in result.stderr, result.stderr


def test_a_stop_during_start_up_abandons_the_inits_and_never_dials_the_app(tmp_path: Path) -> None:
    """A component's "Redis" listens and never answers, so its init would run for the whole init
    timeout (10 s). Before, SIGTERM then waited for it (readiness INIT all along), dialled the app
    and only then stopped. Now readiness turns DOWN "shutting down" at once, the app is never
    dialled, and the process exits 0 within the grace: here spent on an InvokeService call to an
    upstream that never answers."""
    grace = 1.0
    with socket.socket() as silent, socket.socket() as app:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the connections; nothing reads or answers them
        app.bind(("127.0.0.1", 0))
        app.listen(16)
        app.setblocking(False)
        folder = tmp_path / "components"
        write(folder, "cfg", "configuration.in-memory")
        write(folder, "store", "state.redis", "  metadata:\n"
              f"    - name: redisHost\n      value: 127.0.0.1:{silent.getsockname()[1]}\n"
              "    - name: readTimeout\n      value: 60s\n    - name: maxRetries\n      value: 0\n")  # fmt: skip
        config = tmp_path / "config.yaml"
        config.write_text(orjson.dumps({"invoke": {"targets": [
            {"id": "slow", "channel": "http", "address": f"127.0.0.1:{silent.getsockname()[1]}"},
        ]}}).decode())  # fmt: skip
        sidecar = sidecar_process.start(
            tmp_path, "--resources-path", str(folder), "--app-port", str(app.getsockname()[1]),
            "--shutdown-grace-seconds", f"{grace:g}", "--config", str(config), wait=False,
        )  # fmt: skip
        channel = grpc.insecure_channel(sidecar.target)
        try:
            deadline = time.monotonic() + 10
            while (document := readiness(sidecar)).get("components", {}).get("cfg", {}).get("status") != "UP":
                assert time.monotonic() < deadline and sidecar.process.poll() is None, sidecar.log()
                time.sleep(0.02)
            assert document["status"] == "INIT" and document["components"]["store"]["status"] == "INIT"
            held_call(runtime_pb2_grpc.RuntimeStub(channel), "slow")
            time.sleep(0.2)  # the call reaches the sidecar (it waits on the silent upstream)

            signalled = time.monotonic()
            sidecar.process.send_signal(signal.SIGTERM)
            seen: list[tuple[str, str]] = []
            while sidecar.process.poll() is None and time.monotonic() - signalled < grace + 3:
                document = readiness(sidecar)
                if document["status"] and time.monotonic() - signalled > 0.2:
                    seen.append((document["status"], document["components"].get("sidecar", {}).get("reason", "")))
                time.sleep(0.02)
            took = time.monotonic() - signalled
            assert sidecar.process.poll() == 0, sidecar.log()
            assert took < grace + 1, f"exited {took:.2f}s after SIGTERM, the grace being {grace:g}s:\n{sidecar.log()}"
            assert seen and set(seen) == {("DOWN", "shutting down")}, (seen, sidecar.log())
            with pytest.raises(BlockingIOError):
                app.accept()  # never dialled
            assert "stopping during start-up" in sidecar.log()
        finally:
            channel.close()
            if sidecar.process.poll() is None:
                sidecar.process.kill()
                sidecar.process.wait()


# --- metadata names in any case, what check counts, what serve says it read -----------------------


def test_metadata_names_are_read_whatever_their_case(tmp_path: Path) -> None:
    """A Dapr manifest spelling ``redisdb``, ``keyprefix`` and a ``redispassword`` secret in lower
    case: Dapr reads them, this sidecar ignored them (keys in database 0, unprefixed, and no
    password: readiness DOWN)."""
    with RedisServer(tmp_path / "redis", password="s3cret-pw") as server:
        server.start()
        folder = tmp_path / "components"
        write(folder, "vault", "secretstores.local.file", "  metadata:\n    - name: MultiValued\n      value: true\n"
              "    - name: secretsfile\n      value: secrets.json\n")  # fmt: skip
        (folder / "secrets.json").write_text('{"redis": {"password": "s3cret-pw"}}')
        write(folder, "store", "state.redis", f"  metadata:\n    - name: redisHost\n      value: {server.address}\n"
              "    - name: redisdb\n      value: 3\n    - name: keyprefix\n      value: appid\n"
              "    - name: redispassword\n      secretKeyRef: {name: redis, key: password}\n"
              "auth:\n  secretStore: vault\n")  # fmt: skip
        sidecar = sidecar_process.start(tmp_path, "--resources-path", str(folder), "--app-id", "shop", wait=False)
        try:
            deadline = time.monotonic() + 10
            while (document := readiness(sidecar))["status"] not in ("UP", "DOWN") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert document["status"] == "UP", (document, sidecar.log())
            stub = sidecar.stub()
            stub.SaveState(pb.SaveStateRequest(store_name="store", states=[pb.StateItem(key="k", value=b"v")]))
        finally:
            assert sidecar.stop() == 0, sidecar.log()
        assert server.cli("-n", "3", "EXISTS", "shop||k") == "1"
        assert server.command("DBSIZE") == 0


@pytest.mark.parametrize(
    ("items", "words"),
    [
        ("[{name: biggerthan, value: abc}]", ["spec.metadata.biggerthan", "must be an integer", "'abc'"]),
        (
            "[{name: biggerThan, value: 1}, {name: BiggerThan, value: 2}]",
            ["spec.metadata[1].name", "'BiggerThan' and 'biggerThan' (spec.metadata[0])"],
        ),
    ],
)
def test_check_reads_metadata_names_whatever_their_case(tmp_path: Path, items: str, words: list[str]) -> None:
    folder = tmp_path / "components"
    write(folder, "seq", "sequencer.in-memory", f"  metadata: {items}\n")
    result = check(folder)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert all(word in result.stderr for word in words) and "seq.yaml" in result.stderr, result.stderr


def test_check_counts_the_components_this_app_id_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--app-id billing`` with a store scoped to billing and one to orders printed
    ``ok: 2 components``, though serve loads one; the one of another namespace was not counted."""
    folder = tmp_path / "components"
    write(folder, "billing-store", "state.in-memory", "scopes: [billing]\n")
    orders = write(folder, "orders-store", "state.in-memory", "scopes: [orders]\n")
    write(folder, "shared", "lock.in-memory")
    write(folder, "staging", "lock.in-memory").write_text(
        MANIFEST.format(name="staging", type="lock.in-memory", extra="").replace(
            "  name: staging\n", "  name: staging\n  namespace: staging\n"
        )
    )
    monkeypatch.setenv("NAMESPACE", "shop")
    result = check(folder, "--app-id", "billing")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: 2 components (1 more scoped to other app ids: checked, not loaded)\n"
    assert f"{orders}: component orders-store is scoped to orders, not to app id billing" in result.stderr
    assert check(folder, "--app-id", "cart").stdout.startswith("ok: 1 components (2 more")
    monkeypatch.delenv("NAMESPACE")
    assert check(folder, "--app-id", "orders").stdout.startswith("ok: 3 components (1 more")


def test_serve_logs_its_resources_path_and_how_many_components_it_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "comps"
    write(folder, "store", "state.in-memory")
    write(folder, "theirs", "state.in-memory", "scopes: [billing]\n")
    sidecar = sidecar_process.start(tmp_path, "--resources-path", str(folder), "--app-id", "orders")
    try:
        assert f"INFO layotto_fast: resources path {folder}: 1 components loaded for app id orders" in sidecar.log()
        assert "WARNING" not in sidecar.log(), sidecar.log()
    finally:
        assert sidecar.stop() == 0
    # No folder given and no ./components: the embedded set, said so.
    sidecar = sidecar_process.start(tmp_path, "--resources-path", "")
    try:
        line = "resources path none given and no ./components folder: the embedded in-memory set: "
        assert line in sidecar.log() and "WARNING" not in sidecar.log(), sidecar.log()
    finally:
        assert sidecar.stop() == 0


def test_a_resources_folder_without_manifests_is_warned_about(tmp_path: Path) -> None:
    """A project's ./components of front-end code is read as the default resources path: the
    sidecar started with no component and readiness UP, saying nothing, and the first call
    failed saying no state component was configured."""
    default = tmp_path / "components"
    default.mkdir()
    (default / "Button.tsx").write_text("export const Button = () => null;\n")
    sidecar = sidecar_process.start(tmp_path, "--resources-path", "")
    try:
        log = sidecar.log()
        warning = f"WARNING layotto_fast: resources path {default} (the default, ./components) holds no component"
        assert warning in log, log
        assert "give --resources-path DIR (or resources_path in the --config file)" in log, log
        assert f"resources path {default} (the default, ./components): 0 components loaded" in log, log
    finally:
        assert sidecar.stop() == 0
    # One given, with YAML of other kinds only: no component manifest either.
    given = tmp_path / "config"
    given.mkdir()
    (given / "tracing.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: t}\n")
    result = check(given)
    assert result.returncode == 0 and result.stdout == "ok: 0 components\n", result.stderr
    assert f"WARNING layotto_fast: resources path {given} holds no component manifests" in result.stderr


def test_a_grpcio_server_that_ends_by_itself_stops_the_sidecar_with_exit_1(tmp_path: Path) -> None:
    """grpcio's server loop raises on a request path that is not UTF-8 and ends every
    connection; the sidecar must not stay up, healthy by its probes, serving nothing."""
    sidecar = sidecar_process.start(tmp_path, "--grpc-transport", "grpcio")
    try:
        headers = hpack.Encoder().encode(
            [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/spec.proto.runtime.v1.Runtime/GetSt\xe1"),
             (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
        )  # fmt: skip

        def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
            return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

        with socket.create_connection(("127.0.0.1", sidecar.grpc_port), timeout=5) as client:
            client.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 4, 1, headers)
                           + frame(0, 1, 1, b"\0\0\0\0\0"))  # fmt: skip
        assert sidecar.process.wait(timeout=20) == 1, sidecar.log()
        assert "the gRPC server (grpcio transport) ended by itself" in sidecar.log()
    finally:
        if sidecar.process.returncode is None:
            sidecar.process.kill()
            sidecar.process.wait()


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_a_grpc_port_in_use_stops_start_up_with_a_message_not_a_traceback(tmp_path: Path, transport: str) -> None:
    """grpcio raises RuntimeError for a port it cannot bind, which start-up did not expect."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = sidecar_process.serve_command(port, sidecar_process.free_port(), "--grpc-transport", transport)
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "cannot start" in result.stderr and str(port) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_grpc_port_0_serves_on_a_port_chosen_and_logged(tmp_path: Path, transport: str) -> None:
    """With port 0 the grpcio watch dialled port 0, found it refused and stopped the sidecar
    as if its server had ended; the log named port 0, so no client could find it."""
    config = {"health_check_interval_seconds": 0.1}
    sidecar = sidecar_process.start_with_config(tmp_path, config, "--grpc-port", "0", "--grpc-transport", transport)
    try:
        time.sleep(1.0)  # ten watches
        assert sidecar.process.poll() is None, sidecar.log()
        [port] = re.findall(rf"serving gRPC \({transport} transport\) on 127\.0\.0\.1:(\d+)", sidecar.log())
        assert int(port) != 0
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=5)
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            assert stub.SayHello(pb.SayHelloRequest(service_name="helloworld", name="z")).hello
    finally:
        assert sidecar.stop() == 0, sidecar.log()
