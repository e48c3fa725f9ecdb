"""The mesh's Dubbo listener under faults, in the real sidecar: each refusal is Dubbo's own
status (timeout 31, no upstream 35, overloaded 100), a frame split anywhere or 50 frames in
one write are read whole, an oversized frame closes only its own connection, a body in
another serialization goes by a route that asks nothing. The provider is
the fake of ``tests/mesh/dubbo_fake.py`` (it can be told to keep quiet)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from layotto_fast_native import encode_dubbo_request

from tests import sidecar as sidecar_process
from tests.mesh.dubbo_fake import SERVICE, VERSION, call, mesh_config, named_providers, read_response, request
from tests.mesh.fault_upstream import wait_for

SERVER_TIMEOUT, CHANNEL_INACTIVE, BAD_REQUEST, THREADPOOL_EXHAUSTED = 31, 35, 40, 100


@contextmanager
def dubbo_mesh(tmp: Path, hosts: list[str], route: dict[str, Any] | None = None,
               listener: dict[str, Any] | None = None) -> Iterator[int]:  # fmt: skip
    port = sidecar_process.free_port()
    config = mesh_config(port, hosts, route, listener)
    path = tmp / "mesh.yaml"
    path.write_text(yaml.safe_dump(config))
    sidecar = sidecar_process.start(tmp, "--config", str(path))
    try:
        yield port
    finally:
        sidecar.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_refusals_are_dubbo_statuses_and_the_connection_carries_on(tmp_path: Path) -> None:
    with (
        named_providers("p") as (provider,),
        dubbo_mesh(
            tmp_path,
            [provider.address],
            route={"timeout_ms": 200, "rate_limit": {"requests_per_second": 0.01, "burst": 3}},
        ) as port,
    ):
        client = connect(port)
        assert call(client, 1) == "p"
        provider.silent = True
        client.sendall(request(2))
        started = time.monotonic()
        answered, status, outcome, message = read_response(client)
        assert (answered, status, outcome) == (2, SERVER_TIMEOUT, "error"), message
        assert 0.15 < time.monotonic() - started < 2.0
        provider.silent = False
        assert call(client, 3) == "p", "the same connection carries on"
        client.sendall(request(4))  # the burst of 3 is spent
        assert read_response(client)[:3] == (4, THREADPOOL_EXHAUSTED, "error")


def fastjson2_request(request_id: int) -> bytes:
    """A two-way call whose body is in fastjson2 (serialization 23, Dubbo 3.2's default)."""
    body = b'["2.0.2","com.example.EchoService","1.0","echo","Ljava/lang/String;","hi"]'
    return b"\xda\xbb" + bytes([0x80 | 0x40 | 23, 0]) + struct.pack(">qi", request_id, len(body)) + body


@pytest.mark.parametrize("catch_all", [True, False])
def test_a_body_in_another_serialization_goes_by_a_route_that_asks_nothing(tmp_path: Path, catch_all: bool) -> None:
    """The service of a non-Hessian2 call cannot be read: a route with no conditions still
    takes it to its cluster, and without one it is Dubbo's BAD_REQUEST."""
    with (
        named_providers("p") as (provider,),
        dubbo_mesh(tmp_path, [provider.address], route={"match": {}} if catch_all else None) as port,
    ):
        client = connect(port)
        client.sendall(fastjson2_request(5))
        answered, status, outcome, value = read_response(client)
        if catch_all:
            assert (answered, status, outcome, value) == (5, 20, "value", "p")
        else:
            assert (answered, status, outcome) == (5, BAD_REQUEST, "error"), value
        assert call(client, 6) == "p", "the connection carries on"


def test_no_reachable_upstream_is_channel_inactive(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{sidecar_process.free_port()}"
    with dubbo_mesh(tmp_path, [closed]) as port:
        client = connect(port)
        client.sendall(request(7))
        answered, status, outcome, message = read_response(client)
        assert (answered, status, outcome) == (7, CHANNEL_INACTIVE, "error")
        assert closed in str(message)


def test_split_frames_and_pipelined_frames_are_read_whole(tmp_path: Path) -> None:
    with named_providers("p") as (provider,), dubbo_mesh(tmp_path, [provider.address]) as port:
        client = connect(port)
        frame = request(1)
        for offset in range(1, len(frame)):  # every byte offset
            piece = request(offset)
            client.sendall(piece[:offset])
            time.sleep(0.001)
            client.sendall(piece[offset:])
            assert read_response(client)[:3] == (offset, 20, "value")
        client.sendall(b"".join(request(1000 + i) for i in range(50)))
        answers = [read_response(client) for _ in range(50)]
        assert sorted(a[0] for a in answers) == [1000 + i for i in range(50)]
        assert all(a[1:3] == (20, "value") for a in answers)


def test_an_oversized_frame_closes_only_its_connection(tmp_path: Path) -> None:
    with (
        named_providers("p") as (provider,),
        dubbo_mesh(tmp_path, [provider.address], listener={"max_frame_size": 4096}) as port,
    ):
        bystander, offender = connect(port), connect(port)
        assert call(bystander, 1) == "p"
        big = request(2)
        big = big[:12] + (1 << 20).to_bytes(4, "big") + big[16:]  # says 1 MiB follows
        offender.sendall(big)
        offender.settimeout(5)
        assert offender.recv(1) == b"", "the offender's connection is closed"
        assert call(bystander, 3) == "p", "the other connection carries on"


def test_a_provider_that_misses_heartbeats_is_taken_out_and_comes_back(tmp_path: Path) -> None:
    """Active health checks over Dubbo: the sidecar's heartbeats go to each provider; one
    that stops answering them gets no requests until it answers again."""
    with named_providers("good", "bad") as (good, bad):
        port = sidecar_process.free_port()
        cluster = {"health_check": {"interval_ms": 100, "timeout_ms": 500}}  # a busy machine misses no beat
        path = tmp_path / "mesh.yaml"
        path.write_text(yaml.safe_dump(mesh_config(port, [good.address, bad.address], cluster=cluster)))
        sidecar = sidecar_process.start(tmp_path, "--config", str(path))

        def healthy() -> dict[str, bool]:
            _, body = sidecar.http("/actuator/info")
            return {h["address"]: h["healthy"] for h in json.loads(body)["mesh"]["clusters"][0]["hosts"]}

        try:
            wait_for(lambda: good.heartbeats > 0 and bad.heartbeats > 0)
            bad.mute = True
            wait_for(lambda: not healthy()[bad.address])
            client = connect(port)
            assert [call(client, i) for i in range(6)] == ["good"] * 6
            bad.mute = False
            wait_for(lambda: healthy()[bad.address])
        finally:
            sidecar.stop()


def test_a_one_way_event_is_not_answered(tmp_path: Path) -> None:
    """Java Dubbo answers only two-way events (heartbeats): a one-way event with a null body
    asks for nothing, and an answer would carry an id the client never waits on."""
    one_way_event = b"\xda\xbb" + bytes([0x80 | 0x20 | 0x02, 0]) + struct.pack(">qi", 5, 1) + b"N"
    with named_providers("p") as (provider,), dubbo_mesh(tmp_path, [provider.address]) as port:
        client = connect(port)
        client.sendall(one_way_event)
        assert call(client, 6) == "p", "the first answer is the call's"


def _start_mesh(tmp: Path, port: int, provider: str) -> sidecar_process.Sidecar:
    """A sidecar whose Dubbo listener on ``port`` routes the test service to ``provider``."""
    path = tmp / "mesh.yaml"
    path.write_text(yaml.safe_dump(mesh_config(port, [provider])))
    return sidecar_process.start(tmp, "--config", str(path))


def assert_told_read_only_then_closed(client: socket.socket) -> None:
    """The next frame is Dubbo's read-only event (a one-way event request whose data is "R"), then the end."""
    head = client.recv(16, socket.MSG_WAITALL)
    body = client.recv(struct.unpack(">i", head[12:16])[0], socket.MSG_WAITALL)
    assert head[:2] == b"\xda\xbb" and head[2] == 0x80 | 0x20 | 0x02 and body == b"\x01R", (head + body).hex()
    assert client.recv(1) == b"", "then closed"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_hessian_body_that_names_a_long_class_in_every_object_costs_no_memory(tmp_path: Path) -> None:
    """A class with a 64 KiB name, then 100 000 one-byte objects of it: 165 KB on the
    wire that decoded with a copy of the name in each object is 6.5 GB. Sent as a one-way
    event (no route needed) and as a call's argument, it leaves the sidecar as it was."""
    body = b"\x57C\x53\xff\xff" + b"a" * 0xFFFF + b"\x90" + b"\x60" * 100_000 + b"Z"
    event = b"\xda\xbb" + bytes([0x80 | 0x20 | 0x02, 0]) + struct.pack(">qi", 7, len(body)) + body
    port = sidecar_process.free_port()
    with named_providers("p") as (provider,):
        sidecar = _start_mesh(tmp_path, port, provider.address)
        try:
            client = connect(port)
            assert call(client, 1) == "p"
            before = _rss_mb(sidecar.process.pid)
            client.sendall(event)
            arguments = encode_dubbo_request(8, SERVICE, VERSION, "echo", "Ljava/lang/Object;", ["x"])
            bomb = arguments[:16] + arguments[16:] + body  # the attachments that follow are the bomb
            bomb = bomb[:12] + struct.pack(">i", len(bomb) - 16) + bomb[16:]
            other = connect(port)
            other.sendall(bomb)
            other.settimeout(10)
            with contextlib.suppress(OSError):
                other.recv(1 << 16)  # answered or closed: either way not decoded into gigabytes
            assert call(client, 9) == "p", "the first connection carries on"
            assert call(connect(port), 10) == "p", "the listener carries on"
            grown = _rss_mb(sidecar.process.pid) - before
            assert grown < 200, f"the sidecar grew by {grown:.0f} MB"
        finally:
            assert sidecar.stop() == 0


def test_a_stop_tells_dubbo_clients_the_connection_is_read_only(tmp_path: Path) -> None:
    """On SIGTERM each Dubbo client connection gets Dubbo's read-only event (a one-way event
    whose data is "R"), as a provider shutting down sends, so that consumers send their next
    calls elsewhere; then it is closed."""
    with named_providers("p") as (provider,):
        port = sidecar_process.free_port()
        sidecar = _start_mesh(tmp_path, port, provider.address)
        try:
            client = connect(port)
            assert call(client, 1) == "p"
            sidecar.process.send_signal(signal.SIGTERM)
            assert_told_read_only_then_closed(client)
            assert sidecar.process.wait(10) == 0
        finally:
            sidecar.stop()


def test_an_idle_dubbo_client_is_told_read_only_before_its_connection_closes(tmp_path: Path) -> None:
    """A client silent for idle_timeout_ms gets the read-only event first, as at a drain, so
    that a consumer about to call sends elsewhere rather than onto a closing connection."""
    with (
        named_providers("p") as (provider,),
        dubbo_mesh(tmp_path, [provider.address], listener={"idle_timeout_ms": 300}) as port,
    ):
        client = connect(port)
        assert call(client, 1) == "p"
        assert_told_read_only_then_closed(client)
