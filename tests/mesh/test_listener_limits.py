"""A mesh listener's bounds on its clients, in the real sidecar: ``max_connections`` open at
once, and ``max_incomplete_bytes`` of frames not yet whole held by all of them together."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from layotto_fast.errors import StartupError
from layotto_fast.mesh.config import parse
from layotto_fast.mesh.proxy import Mesh
from tests import sidecar as sidecar_process
from tests.mesh.fault_upstream import BoltClient, fault_upstream, wait_for

SERVICE = "com.example.EchoService:1.0"
STATUS_SUCCESS = 0
KIB = 1024


@contextmanager
def bolt_mesh(tmp: Path, **listener: Any) -> Iterator[tuple[sidecar_process.Sidecar, int]]:
    """A sidecar whose Bolt listener, with ``listener``'s settings, routes ``SERVICE`` to an
    echoing upstream; the sidecar and the listener's port."""
    port = sidecar_process.free_port()
    with fault_upstream() as upstream:
        config = {
            "mesh": {
                "listeners": [
                    {
                        "protocol": "bolt",
                        "address": f"127.0.0.1:{port}",
                        **listener,
                        "routes": [{"name": "echo", "match": {"service": SERVICE}, "cluster": "c"}],
                    }
                ],
                "clusters": [{"name": "c", "protocol": "bolt", "hosts": [upstream.address]}],
            }
        }
        path = tmp / "mesh.yaml"
        path.write_text(yaml.safe_dump(config))
        sidecar = sidecar_process.start(tmp, "--config", str(path))
        try:
            yield sidecar, port
        finally:
            sidecar.stop()


def metric(sidecar: sidecar_process.Sidecar, name: str) -> float:
    status, body = sidecar.http("/metrics")
    assert status == 200
    found = re.search(rf'^{name}{{listener="bolt"}} (\S+)$', body.decode(), re.MULTILINE)
    assert found, f"no {name} in /metrics"
    return float(found.group(1))


def rss_mib(sidecar: sidecar_process.Sidecar) -> float:
    for line in Path(f"/proc/{sidecar.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def closed_at_once(client: BoltClient) -> bool:
    """The sidecar closed ``client`` (what it may have sent is ignored) within 3 s: no
    request, no idle timeout."""
    try:
        return client.closed_by_peer(timeout=3.0)
    except OSError:
        return True


def tcp_queues() -> dict[tuple[int, int], tuple[int, int]]:
    """(bytes unsent, bytes unread) of each loopback TCP socket by (its port, its peer's)."""
    queues = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        unsent, unread = (int(queue, 16) for queue in fields[4].split(":"))
        queues[(local, remote)] = (unsent, unread)
    return queues


def read_by_the_sidecar(client: socket.socket) -> bool:
    """Everything ``client`` sent has left its socket and been read from the sidecar's, so
    the sidecar's counts include it."""
    ours, theirs = client.getsockname()[1], client.getpeername()[1]
    queues = tcp_queues()
    sending, receiving = queues.get((ours, theirs)), queues.get((theirs, ours))
    return sending is not None and receiving is not None and sending[0] == 0 and receiving[1] == 0


def settled(client: socket.socket) -> bool:
    """What ``client`` sent was read by the sidecar, or its connection is closed."""
    try:
        ours, theirs = client.getsockname()[1], client.getpeername()[1]
    except OSError:
        return True  # reset
    queues = tcp_queues()
    sending, receiving = queues.get((ours, theirs), (0, 0)), queues.get((theirs, ours), (0, 0))
    return sending[0] == 0 and receiving[1] == 0


def request(request_id: int, length: int) -> bytes:
    """A Bolt request for ``SERVICE`` exactly ``length`` bytes long."""
    head = len(BoltClient.request(request_id, SERVICE, b""))
    frame = BoltClient.request(request_id, SERVICE, b"x" * (length - head))
    assert len(frame) == length
    return frame


def send_part(port: int, part: bytes) -> BoltClient:
    """A client that sent ``part`` (of a frame), perhaps cut off on the way."""
    client = BoltClient(("127.0.0.1", port))
    with contextlib.suppress(OSError):  # closed by the sidecar meanwhile
        client.send(part)
    return client


def test_a_connection_past_max_connections_is_closed_at_once(tmp_path: Path) -> None:
    with bolt_mesh(tmp_path, max_connections=2) as (sidecar, port):
        first, second = BoltClient(("127.0.0.1", port)), BoltClient(("127.0.0.1", port))
        wait_for(lambda: metric(sidecar, "layotto_fast_mesh_open_connections") == 2)
        third = BoltClient(("127.0.0.1", port))
        assert closed_at_once(third), "the third connection is closed"
        for request_id, client in enumerate((first, second), 1):
            client.send(client.request(request_id, SERVICE))
            assert client.responses(1)[0][:2] == (request_id, STATUS_SUCCESS)
        assert metric(sidecar, "layotto_fast_mesh_max_connections_closed_total") == 1
        # A connection that ends gives its place back.
        first.close()
        wait_for(lambda: metric(sidecar, "layotto_fast_mesh_open_connections") == 1)
        fourth = BoltClient(("127.0.0.1", port))
        fourth.send(fourth.request(4, SERVICE))
        assert fourth.responses(1)[0][:2] == (4, STATUS_SUCCESS)
        assert metric(sidecar, "layotto_fast_mesh_max_connections_closed_total") == 1


def test_the_connection_that_takes_partial_frames_past_max_incomplete_bytes_is_closed(tmp_path: Path) -> None:
    with bolt_mesh(tmp_path, max_frame_size=512 * KIB, max_incomplete_bytes=1024 * KIB) as (sidecar, port):
        frames = [request(request_id, 500 * KIB) for request_id in (1, 2)]
        holding = []
        for frame in frames:  # 800 KiB of partial frames, under the bound
            client = send_part(port, frame[: 400 * KIB])
            wait_for(lambda client=client: read_by_the_sidecar(client.sock))
            holding.append(client)
        third = send_part(port, request(3, 500 * KIB)[: 400 * KIB])
        assert closed_at_once(third), "the third connection, past 1 MiB together, is closed"
        for request_id, (client, frame) in enumerate(zip(holding, frames, strict=True), 1):
            client.send(frame[400 * KIB :])
            answer = client.responses(1)[0]
            assert answer[:2] == (request_id, STATUS_SUCCESS)
            assert answer[3] == b"x" * (len(frame) - len(BoltClient.request(request_id, SERVICE, b"")))
        assert metric(sidecar, "layotto_fast_mesh_incomplete_closed_total") == 1
        assert metric(sidecar, "layotto_fast_mesh_bad_frames_total") == 0


def test_partial_frames_from_many_clients_stay_within_max_incomplete_bytes(tmp_path: Path) -> None:
    """The fuzzing run's attack: many clients each send most of a large frame, then
    nothing. What the sidecar holds for them grows to the bound and no further."""
    with bolt_mesh(tmp_path, max_frame_size=512 * KIB, max_incomplete_bytes=1024 * KIB) as (sidecar, port):
        warm = BoltClient(("127.0.0.1", port))
        warm.send(request(1, 500 * KIB))
        assert warm.responses(1)[0][:2] == (1, STATUS_SUCCESS)
        warm.close()
        wait_for(lambda: metric(sidecar, "layotto_fast_mesh_open_connections") == 0)
        before = rss_mib(sidecar)
        part = request(2, 500 * KIB)[: 400 * KIB]
        clients = []
        for _ in range(40):  # 16 MiB sent, of frames never finished
            clients.append(send_part(port, part))
        wait_for(lambda: all(settled(c.sock) for c in clients), timeout=10)
        grown = rss_mib(sidecar) - before
        closed = metric(sidecar, "layotto_fast_mesh_incomplete_closed_total")
        assert closed == 40 - 2, "all but the two that fit in 1 MiB are closed"
        assert grown < 1 + 4, f"the sidecar grew {grown:.1f} MiB for 1 MiB of partial frames allowed"


def mesh_yaml(**listener: Any) -> dict[str, Any]:
    return {
        "listeners": [{"protocol": "bolt", "routes": [{"name": "r", "cluster": "echo"}], **listener}],
        "clusters": [{"name": "echo", "protocol": "bolt", "hosts": ["127.0.0.1:12200"]}],
    }


def test_the_limits_default_to_no_connection_limit_and_256_mib_of_partial_frames() -> None:
    listener = parse(mesh_yaml(), "f.yaml").listeners[0]
    assert (listener.max_connections, listener.max_incomplete_bytes) == (0, 256 * 1024 * 1024)
    # a larger max_frame_size, valid before the setting existed, stays valid
    big = parse(mesh_yaml(max_frame_size=2**30), "f.yaml").listeners[0]
    assert big.max_incomplete_bytes == 2**30
    native = parse(mesh_yaml(max_connections=5, max_incomplete_bytes=2**25), "f.yaml").to_native()["listeners"][0]
    assert (native["max_connections"], native["max_incomplete_bytes"]) == (5, 2**25)


@pytest.mark.parametrize(
    ("listener", "field", "problem"),
    [
        ({"max_connections": -1}, "max_connections", "must be an integer from 0"),
        ({"max_connections": "10"}, "max_connections", "must be an integer from 0"),
        ({"max_connections": True}, "max_connections", "must be an integer from 0"),
        ({"max_incomplete_bytes": 1.5}, "max_incomplete_bytes", "must be an integer"),
        ({"max_incomplete_bytes": 1024}, "max_incomplete_bytes", "must be at least max_frame_size (16777216)"),
        (
            {"max_frame_size": 2**20, "max_incomplete_bytes": 2**20 - 1},
            "max_incomplete_bytes",
            "must be at least max_frame_size (1048576), got 1048575",
        ),
    ],
)
def test_a_bad_limit_is_named_by_file_and_field(listener: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(StartupError) as raised:
        parse(mesh_yaml(**listener), "f.yaml")
    assert str(raised.value).startswith(f"f.yaml: mesh.listeners[0].{field}: "), str(raised.value)
    assert problem in str(raised.value)


@pytest.mark.parametrize("changed", [{"max_connections": 10}, {"max_incomplete_bytes": 2**29}])
def test_changing_a_limit_needs_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, changed: dict[str, int]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"mesh": mesh_yaml(address="127.0.0.1:0")}))
    mesh = Mesh(parse(mesh_yaml(address="127.0.0.1:0"), str(path)), str(path))
    mesh.start()
    try:
        path.write_text(yaml.safe_dump({"mesh": mesh_yaml(address="127.0.0.1:0", **changed)}))
        with caplog.at_level(logging.ERROR, logger="layotto_fast.mesh"):
            assert not mesh.reload()
        assert mesh.refused_reloads == 1
        assert "max_connections, max_incomplete_bytes, max_frame_size" in caplog.text
        assert "changed: restart" in caplog.text
    finally:
        mesh.stop()
