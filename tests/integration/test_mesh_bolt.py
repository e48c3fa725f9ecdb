"""The mesh's Bolt listener in the real sidecar process: routing, refusals in Bolt's own
statuses, heartbeats, faults of clients and upstreams, reload, metrics and info."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import layotto_fast_native as native
import pytest
import yaml

from tests import sidecar as sidecar_process
from tests.mesh.fault_upstream import CALLBACK_ID, BoltClient, FaultUpstream, fault_upstream, wait_for

ECHO = "com.example.EchoService:1.0"
STATUS_SUCCESS, STATUS_NO_PROCESSOR, STATUS_TIMEOUT, STATUS_CONNECTION_CLOSED = 0x0, 0x6, 0x7, 0x10
STATUS_THREADPOOL_BUSY = 0x4
# A route whose rate limit refills within a test: a token every 1/REFILL_RATE seconds, one saved.
REFILLING, REFILL_RATE = "com.example.Refilling:1.0", 4.0


def mesh_config(bolt_port: int, routes: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "mesh": {
            "listeners": [
                {"name": "bolt-in", "protocol": "bolt", "address": f"127.0.0.1:{bolt_port}", "routes": routes}
            ],
            "clusters": clusters,
        }
    }


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


class Mesh:
    def __init__(self, sidecar: sidecar_process.Sidecar, port: int, config: Path) -> None:
        self.sidecar, self.port, self.config = sidecar, port, config

    def client(self) -> BoltClient:
        return BoltClient(("127.0.0.1", self.port))

    def stats(self) -> dict[str, Any]:
        status, body = self.sidecar.http("/actuator/info")
        assert status == 200
        return dict(json.loads(body)["mesh"])


@pytest.fixture
def upstreams() -> Iterator[tuple[FaultUpstream, FaultUpstream]]:
    with fault_upstream() as a, fault_upstream() as b:
        yield a, b


@pytest.fixture
def mesh(tmp_path: Path, upstreams: tuple[FaultUpstream, FaultUpstream]) -> Iterator[Mesh]:
    a, b = upstreams
    port = sidecar_process.free_port()
    routes = [
        {"name": "echo", "match": {"service": ECHO}, "cluster": "echo", "timeout_ms": 300},
        {"name": "canary", "match": {"service_prefix": "com.canary."}, "cluster": "second"},
        {"name": "zone-gz", "match": {"service": "com.example.Zoned:1.0", "headers": {"zone": "gz"}},
         "cluster": "second"},
        {"name": "limited", "match": {"service": "com.example.Limited:1.0"}, "cluster": "second",
         "rate_limit": {"requests_per_second": 0.01, "burst": 2}},
        {"name": "refilling", "match": {"service": REFILLING}, "cluster": "second",
         "rate_limit": {"requests_per_second": REFILL_RATE, "burst": 1}},
    ]  # fmt: skip
    clusters = [
        {"name": "echo", "protocol": "bolt", "hosts": [a.address, b.address]},
        {"name": "second", "protocol": "bolt", "hosts": [b.address]},
    ]
    config = write(tmp_path / "mesh.yaml", mesh_config(port, routes, clusters))
    sidecar = sidecar_process.start(tmp_path, "--config", str(config))
    try:
        yield Mesh(sidecar, port, config)
    finally:
        sidecar.stop()


def test_requests_reach_the_routed_cluster_round_robin(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    client = mesh.client()
    for i in range(4):
        client.send(client.request(100 + i, ECHO, b"payload-%d" % i))
    answers = sorted(client.responses(4))  # two upstreams: answers come in either order
    assert [a[0] for a in answers] == [100, 101, 102, 103], "each answer carries the client's own id"
    assert [a[3] for a in answers] == [b"payload-%d" % i for i in range(4)], "and its own payload"
    assert all(a[1] == STATUS_SUCCESS for a in answers)
    served_by = {a[2]["upstream"] for a in answers}
    assert served_by == {str(u.port) for u in upstreams}, "round robin over both hosts"
    assert answers[0][2]["service"] == ECHO, "the header map goes through unchanged"
    client.send(client.request(7, "com.canary.Thing"))
    assert client.responses(1)[0][2]["upstream"] == str(upstreams[1].port)


def test_weighted_clusters_share_a_route_spread_out(tmp_path: Path, upstreams: tuple[FaultUpstream, ...]) -> None:
    """Weights 8:2: the light cluster gets one request in every five, not two in a row after
    eight to the heavy one (with weights 900:100, a canary took all the traffic for a stretch)."""
    heavy, light = upstreams
    port = sidecar_process.free_port()
    weighted = "com.example.Weighted:1.0"
    routes = [{"name": "w", "match": {"service": weighted},
               "clusters": [{"name": "heavy", "weight": 8}, {"name": "light", "weight": 2}]}]  # fmt: skip
    clusters = [
        {"name": "heavy", "protocol": "bolt", "hosts": [heavy.address]},
        {"name": "light", "protocol": "bolt", "hosts": [light.address]},
    ]
    config = write(tmp_path / "mesh.yaml", mesh_config(port, routes, clusters))
    sidecar = sidecar_process.start(tmp_path, "--config", str(config))
    try:
        client = BoltClient(("127.0.0.1", port))
        served_by = []
        for i in range(20):  # one at a time: each answer names its upstream
            client.send(client.request(i, weighted))
            served_by.append(client.responses(1)[0][2]["upstream"])
    finally:
        sidecar.stop()
    for five in range(0, 20, 5):
        assert served_by[five : five + 5].count(str(light.port)) == 1, served_by


def test_header_conditions_route(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    client = mesh.client()
    client.send(client.request(1, "com.example.Zoned:1.0", headers={"zone": "gz"}))
    request_id, status, header, _ = client.responses(1)[0]
    assert (request_id, status, header["upstream"]) == (1, STATUS_SUCCESS, str(upstreams[1].port))
    client.send(client.request(2, "com.example.Zoned:1.0", headers={"zone": "sh"}))
    assert client.responses(1)[0][:2] == (2, STATUS_NO_PROCESSOR)


def test_unknown_service_gets_no_processor_and_the_connection_carries_on(mesh: Mesh) -> None:
    client = mesh.client()
    client.send(client.request(1, "com.example.Nobody:1.0") + client.request(2, ECHO))
    (first_id, first_status, _, _), (second_id, second_status, _, _) = client.responses(2)
    assert (first_id, first_status) == (1, STATUS_NO_PROCESSOR)
    assert (second_id, second_status) == (2, STATUS_SUCCESS)


def test_heartbeats_are_answered_by_the_sidecar(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    client = mesh.client()
    heartbeat = bytes.fromhex("0101000001000000090100000bb80000000000000000")
    client.send(heartbeat)
    request_id, status, _, _ = client.responses(1)[0]
    assert (request_id, status) == (9, STATUS_SUCCESS)
    assert all(u.heartbeats == 0 for u in upstreams), "not forwarded"


def test_fifty_pipelined_requests_in_one_write(mesh: Mesh) -> None:
    client = mesh.client()
    client.send(b"".join(client.request(i, ECHO, b"n%d" % i) for i in range(50)))
    answers = client.responses(50)
    assert sorted(a[0] for a in answers) == list(range(50))
    assert all(a[3] == b"n%d" % a[0] for a in answers)


def test_a_frame_split_at_every_offset(mesh: Mesh) -> None:
    client = mesh.client()
    frame = client.request(5, ECHO, b"split")
    for cut in range(1, len(frame)):
        client.send(frame[:cut])
        time.sleep(0.001)
        client.send(frame[cut:])
        assert client.responses(1)[0][:2] == (5, STATUS_SUCCESS)


def test_answers_split_at_every_offset_reach_the_client_whole(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    """The upstream side's reader is fed answers cut at every byte offset."""
    for upstream in upstreams:
        upstream.mode = "split"
    client = mesh.client()
    # Each of the two upstreams gets every other request and cuts its n-th answer at byte n;
    # an answer is a little longer than its request (it adds the upstream header).
    answers_to_cover = 3 * len(client.request(0, ECHO))
    for request_id in range(1, answers_to_cover):
        client.send(client.request(request_id, ECHO, content=b"part-%d" % request_id))
        answered = client.responses(1)[0]
        assert (answered[0], answered[1], answered[3]) == (request_id, STATUS_SUCCESS, b"part-%d" % request_id)


def test_a_malformed_frame_closes_only_its_connection(mesh: Mesh) -> None:
    bystander = mesh.client()
    offender = mesh.client()
    offender.send(b"\x09garbage-not-bolt")
    assert offender.closed_by_peer()
    oversized = bytearray(offender.request(1, ECHO))
    oversized[18:22] = (2**30).to_bytes(4, "big")  # content length over max_frame_size
    second = mesh.client()
    second.send(bytes(oversized))
    assert second.closed_by_peer()
    bystander.send(bystander.request(3, ECHO))
    assert bystander.responses(1)[0][:2] == (3, STATUS_SUCCESS)


def test_a_slow_upstream_times_out_in_bolt_terms(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    """A request without a timeout of its own gets the route's (300 ms here); one with its own
    gets that, as in MOSN, longer or shorter than the route's: a SOFARPC consumer's 10 s call
    was cut at the route's timeout."""
    for u in upstreams:
        u.delay = 1.0
    client = mesh.client()
    for request_id, own_ms, low, high in ((11, 0, 0.25, 0.9), (12, 600, 0.55, 0.95)):
        started = time.monotonic()
        client.send(client.request(request_id, ECHO, timeout_ms=own_ms))
        answered_id, status, _, _ = client.responses(1)[0]
        waited = time.monotonic() - started
        assert (answered_id, status) == (request_id, STATUS_TIMEOUT)
        assert low <= waited < high, f"{own_ms or 'the route'}'s timeout, not the upstream's 1 s ({waited:.3f}s)"
    client.send(client.request(13, ECHO, timeout_ms=3000))
    answered_id, status, _, _ = client.responses(1)[0]
    assert (answered_id, status) == (13, STATUS_SUCCESS), "answered after 1 s, within its own 3 s"


def test_an_upstream_that_dies_mid_request(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    for u in upstreams:
        u.mode = "close"
    client = mesh.client()
    client.send(client.request(12, ECHO))
    assert client.responses(1)[0][:2] == (12, STATUS_CONNECTION_CLOSED)
    for u in upstreams:
        u.mode = "echo"
    client.send(client.request(13, ECHO))
    assert client.responses(1)[0][:2] == (13, STATUS_SUCCESS), "a new upstream connection is made"


def test_an_upstream_answering_an_unknown_id(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    for u in upstreams:
        u.mode = "unknown"
    client = mesh.client()
    client.send(client.request(14, ECHO))
    assert client.responses(1)[0][:2] == (14, STATUS_CONNECTION_CLOSED), "its connection is dropped"
    assert dict(_unknown_responses(mesh))["echo"] >= 1


def test_a_call_from_an_upstream_is_refused_and_its_connection_kept(
    mesh: Mesh, upstreams: tuple[FaultUpstream, ...]
) -> None:
    """A provider may call its consumer back on the connection; taking that for a broken
    upstream closed the connection every client shares, failing their requests on it."""
    for u in upstreams:
        u.mode = "callback"
    client = mesh.client()
    for request_id in range(20, 24):
        client.send(client.request(request_id, ECHO))
        assert client.responses(1)[0][:2] == (request_id, STATUS_SUCCESS)
    answers = [answer for u in upstreams for answer in u.callback_answers]
    assert answers and set(answers) == {(CALLBACK_ID, STATUS_NO_PROCESSOR)}, answers  # the oneway: no answer
    assert [u.connections for u in upstreams] == [1, 1]


def _unknown_responses(mesh: Mesh) -> list[tuple[str, float]]:
    _, body = mesh.sidecar.http("/metrics")
    name = "layotto_fast_mesh_unknown_responses_total"
    lines = [line for line in body.decode().splitlines() if line.startswith(name)]
    return [(line.split('cluster="')[1].split('"')[0], float(line.split()[-1])) for line in lines]


def test_rate_limit_answers_threadpool_busy(mesh: Mesh) -> None:
    client = mesh.client()
    client.send(b"".join(client.request(i, "com.example.Limited:1.0") for i in range(4)))
    statuses = sorted(a[1] for a in client.responses(4))
    assert statuses == [STATUS_SUCCESS, STATUS_SUCCESS, STATUS_THREADPOOL_BUSY, STATUS_THREADPOOL_BUSY]


def test_rate_limit_refills_at_its_rate(mesh: Mesh) -> None:
    """The burst alone is what the 0.01 rps route shows; a bucket that never refilled would pass
    that. Here the one token is spent, and comes back after 1/rate, not before."""
    client = mesh.client()
    started = time.monotonic()
    # One write: both are read at once, well within 1/rate of each other.
    client.send(client.request(1, REFILLING) + client.request(2, REFILLING))
    answers = sorted((a[0], a[1]) for a in client.responses(2))
    assert answers == [(1, STATUS_SUCCESS), (2, STATUS_THREADPOOL_BUSY)], "a burst of one"
    request_ids = iter(range(3, 1000))
    # Polled: a refused request takes no token, so asking often does not delay the refill.
    wait_for(lambda: _status(client, next(request_ids), REFILLING) == STATUS_SUCCESS, timeout=10)
    waited = time.monotonic() - started
    # The first token was taken after `started`, the refilled one before now.
    assert waited >= 0.95 / REFILL_RATE, f"a token came back after {waited:.3f}s, sooner than 1/rate"


def test_an_unreachable_host_is_retried_on_the_other(tmp_path: Path, upstreams: tuple[FaultUpstream, ...]) -> None:
    # A port held bound but not listening: connecting is refused, and no other listener of
    # this test run can be given it meanwhile.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{holder.getsockname()[1]}"
    port = sidecar_process.free_port()
    routes = [{"name": "echo", "match": {"service": ECHO}, "cluster": "c", "retries": 1}]
    clusters = [{"name": "c", "protocol": "bolt", "hosts": [dead, upstreams[0].address]}]
    config = write(tmp_path / "mesh.yaml", mesh_config(port, routes, clusters))
    sidecar = sidecar_process.start(tmp_path, "--config", str(config))
    try:
        client = BoltClient(("127.0.0.1", port))
        for i in range(4):
            client.send(client.request(i, ECHO))
            assert client.responses(1)[0][:2] == (i, STATUS_SUCCESS)
    finally:
        sidecar.stop()
        holder.close()


def test_a_host_slow_to_connect_holds_up_only_its_own_requests(
    tmp_path: Path, upstreams: tuple[FaultUpstream, ...]
) -> None:
    """A request waiting for a connection to a host that does not accept does not hold up
    the requests after it on the same client connection; it is refused on its own."""
    # A listener whose one-connection backlog is full: the kernel drops further SYNs, so a
    # connect to it hangs until the cluster's connect timeout.
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)
    filler = socket.create_connection(stuck.getsockname())
    port = sidecar_process.free_port()
    routes = [
        {"name": "echo", "match": {"service": ECHO}, "cluster": "echo"},
        {"name": "stuck", "match": {"service": "com.example.Stuck:1.0"}, "cluster": "stuck", "retries": 0},
    ]
    clusters = [
        {"name": "echo", "protocol": "bolt", "hosts": [upstreams[0].address]},
        {"name": "stuck", "protocol": "bolt", "hosts": [f"127.0.0.1:{stuck.getsockname()[1]}"],
         "connect_timeout_ms": 1500},
    ]  # fmt: skip
    config = write(tmp_path / "mesh.yaml", mesh_config(port, routes, clusters))
    sidecar = sidecar_process.start(tmp_path, "--config", str(config))
    try:
        client = BoltClient(("127.0.0.1", port))
        client.send(client.request(1, ECHO))  # the echo cluster's connection is open from here on
        assert client.responses(1)[0][:2] == (1, STATUS_SUCCESS)
        client.send(client.request(2, "com.example.Stuck:1.0") + client.request(3, ECHO))
        sent = time.monotonic()
        assert client.responses(1)[0][:2] == (3, STATUS_SUCCESS)
        assert time.monotonic() - sent < 1.0, "the echo request waited for the stuck connect"
        refused = client.responses(1)[0]
        assert refused[0] == 2 and refused[1] != STATUS_SUCCESS
        assert time.monotonic() - sent >= 1.4  # refused once the connect timed out, not before
    finally:
        sidecar.stop()
        filler.close()
        stuck.close()


def test_reload_on_sighup_and_a_bad_file_keeps_the_old_routes(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    config = yaml.safe_load(mesh.config.read_text())
    new_route = {"name": "new", "match": {"service": "com.example.New"}, "cluster": "second"}
    config["mesh"]["listeners"][0]["routes"].append(new_route)
    write(mesh.config, config)
    mesh.sidecar.process.send_signal(signal.SIGHUP)
    client = mesh.client()
    wait_for(lambda: _status(client, 1, "com.example.New") == STATUS_SUCCESS)
    held = mesh.client()  # a connection opened before the next reload keeps working
    config["mesh"]["listeners"][0]["routes"][-1]["cluster"] = "missing"
    write(mesh.config, config)
    mesh.sidecar.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "mesh reload refused" in mesh.sidecar.log())
    assert "'missing' is not a cluster" in mesh.sidecar.log()
    assert _status(held, 2, "com.example.New") == STATUS_SUCCESS


def test_a_changed_file_is_reloaded_without_a_signal(mesh: Mesh) -> None:
    client = mesh.client()
    assert _status(client, 1, "com.example.Watched") == STATUS_NO_PROCESSOR
    config = yaml.safe_load(mesh.config.read_text())
    new_route = {"name": "watched", "match": {"service": "com.example.Watched"}, "cluster": "echo"}
    config["mesh"]["listeners"][0]["routes"].append(new_route)
    write(mesh.config, config)
    wait_for(lambda: _status(client, 2, "com.example.Watched") == STATUS_SUCCESS, timeout=5)
    assert "mesh configuration reloaded" in mesh.sidecar.log()


def test_a_reload_that_replaces_a_cluster_closes_its_old_connections(
    mesh: Mesh, upstreams: tuple[FaultUpstream, ...]
) -> None:
    client = mesh.client()
    client.send(client.request(1, "com.canary.X"))  # cluster "second": upstreams[1] only
    assert client.responses(1)[0][1] == STATUS_SUCCESS
    assert upstreams[1].open_connections == 1
    config = yaml.safe_load(mesh.config.read_text())
    config["mesh"]["clusters"][1]["hosts"] = [upstreams[0].address]
    write(mesh.config, config)
    mesh.sidecar.process.send_signal(signal.SIGHUP)
    wait_for(lambda: _status(client, 2, "com.canary.X") == STATUS_SUCCESS and upstreams[0].requests > 0)
    wait_for(lambda: upstreams[1].open_connections == 0)
    assert client.responses(0) == [], "the client's own connection stays open"


def _status(client: BoltClient, request_id: int, service: str) -> int:
    client.send(client.request(request_id, service))
    return client.responses(1)[0][1]


def test_metrics_and_info_report_routes_and_clusters(mesh: Mesh, upstreams: tuple[FaultUpstream, ...]) -> None:
    client = mesh.client()
    client.send(client.request(1, ECHO) + client.request(2, "nobody"))
    client.responses(2)
    info = mesh.stats()
    assert info["listeners"][0]["routes"][0] == {"name": "echo", "match": f"service={ECHO}", "clusters": ["echo"]}
    hosts = {h["address"]: h for h in info["clusters"][0]["hosts"]}
    assert set(hosts) == {u.address for u in upstreams} and all(h["healthy"] for h in hosts.values())
    _, body = mesh.sidecar.http("/metrics")
    text = body.decode()
    assert 'layotto_fast_mesh_requests_total{listener="bolt-in",outcome="answered",route="echo"} 1.0' in text
    assert 'layotto_fast_mesh_no_route_total{listener="bolt-in"} 1.0' in text
    assert 'layotto_fast_mesh_responses_total{listener="bolt-in",route="echo",status="0"} 1.0' in text
    assert 'layotto_fast_mesh_request_duration_seconds_count{listener="bolt-in",route="echo"} 1.0' in text
    assert "layotto_fast_mesh_upstream_up" in text
    # the same request, on its cluster's own counters
    assert 'layotto_fast_mesh_cluster_requests_total{cluster="echo",outcome="answered"} 1.0' in text
    assert 'layotto_fast_mesh_cluster_responses_total{cluster="echo",status="0"} 1.0' in text
    assert 'layotto_fast_mesh_cluster_request_duration_seconds_count{cluster="echo"} 1.0' in text
    # a rate-limited request is counted on its route, and never reaches a cluster
    for i in range(3):  # burst 2
        _status(client, 10 + i, "com.example.Limited:1.0")
    text = mesh.sidecar.http("/metrics")[1].decode()
    assert 'layotto_fast_mesh_requests_total{listener="bolt-in",outcome="rate_limited",route="limited"} 1.0' in text
    assert 'layotto_fast_mesh_cluster_requests_total{cluster="second",outcome="answered"} 2.0' in text
    assert 'layotto_fast_mesh_cluster_requests_total{cluster="second",outcome="rate_limited"} 0.0' in text
    # a oneway request forwarded: counted as sent (it was counted nowhere)
    client.send(bytes(native.encode_bolt_request(20, 1, -1, "", {"service": ECHO}, b"fire", oneway=True)))
    wait_for(lambda: sum(u.request_types.count(2) for u in upstreams) == 1)
    text = mesh.sidecar.http("/metrics")[1].decode()
    assert 'layotto_fast_mesh_requests_total{listener="bolt-in",outcome="sent",route="echo"} 1.0' in text
    assert 'layotto_fast_mesh_cluster_requests_total{cluster="echo",outcome="sent"} 1.0' in text


def test_a_bad_mesh_section_stops_start_up_naming_the_field(tmp_path: Path) -> None:
    config = mesh_config(sidecar_process.free_port(), [{"name": "r", "cluster": "nope"}], [])
    path = write(tmp_path / "bad.yaml", config)
    sidecar = sidecar_process.start(tmp_path, "--config", str(path), wait=False)
    assert sidecar.process.wait(20) == 2
    assert "mesh.listeners[0].routes[0].cluster: 'nope' is not a cluster" in sidecar.log()


def test_a_reload_may_not_drop_an_invoke_target_s_cluster_or_change_a_listener_s_limits(
    tmp_path: Path, upstreams: tuple[FaultUpstream, ...]
) -> None:
    port = sidecar_process.free_port()
    config = mesh_config(
        port,
        [{"name": "echo", "match": {"service": ECHO}, "cluster": "echo"}],
        [{"name": "echo", "protocol": "bolt", "hosts": [upstreams[0].address]}],
    )
    config["invoke"] = {"targets": [{"id": "svc", "channel": "bolt", "cluster": "echo", "service": ECHO}]}
    path = write(tmp_path / "mesh.yaml", config)
    sidecar = sidecar_process.start(tmp_path, "--config", str(path))
    try:
        renamed = json.loads(json.dumps(config))
        renamed["mesh"]["clusters"][0]["name"] = "echo-2"
        renamed["mesh"]["listeners"][0]["routes"][0]["cluster"] = "echo-2"
        write(path, renamed)
        sidecar.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "mesh reload refused" in sidecar.log())
        assert "invoke.targets[0].cluster: 'echo' is not a bolt cluster" in sidecar.log()

        bigger = json.loads(json.dumps(config))
        bigger["mesh"]["listeners"][0]["max_frame_size"] = 1 << 20
        write(path, bigger)
        sidecar.process.send_signal(signal.SIGHUP)
        wait_for(lambda: sidecar.log().count("mesh reload refused") == 2)
        assert "max_frame_size, max_buffered, idle_timeout_ms) changed: restart" in sidecar.log()
        client = BoltClient(("127.0.0.1", port))
        assert _status(client, 1, ECHO) == STATUS_SUCCESS, "the running routes stay"
    finally:
        sidecar.stop()


def test_a_reload_keeps_a_spent_rate_limit_spent(mesh: Mesh) -> None:
    """Any touch of the file reloads the routes: a route whose limit did not change keeps its
    bucket, so a reload lets no new burst through; a changed limit starts afresh."""
    client = mesh.client()
    assert [_status(client, i, "com.example.Limited:1.0") for i in range(3)] == [
        STATUS_SUCCESS, STATUS_SUCCESS, STATUS_THREADPOOL_BUSY,
    ]  # fmt: skip
    config = yaml.safe_load(mesh.config.read_text())
    new_route = {"name": "marker", "match": {"service": "com.example.Marker"}, "cluster": "echo"}
    config["mesh"]["listeners"][0]["routes"].append(new_route)
    write(mesh.config, config)
    mesh.sidecar.process.send_signal(signal.SIGHUP)
    wait_for(lambda: _status(client, 10, "com.example.Marker") == STATUS_SUCCESS)
    assert _status(client, 11, "com.example.Limited:1.0") == STATUS_THREADPOOL_BUSY, "still spent"
    limited = next(r for r in config["mesh"]["listeners"][0]["routes"] if r["name"] == "limited")
    limited["rate_limit"]["burst"] = 3
    write(mesh.config, config)
    mesh.sidecar.process.send_signal(signal.SIGHUP)
    wait_for(lambda: _status(client, 12, "com.example.Limited:1.0") == STATUS_SUCCESS)
