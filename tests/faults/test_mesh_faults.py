"""The mesh under faults, in the real sidecar: a client that never reads, a host that stops
answering health checks, consecutive failures ejecting a host, the circuit breaker, an
upstream connection that goes silent, frames a Bolt server would close its connection on."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import layotto_fast_native as native
import yaml

from layotto_fast._proto import runtime_pb2 as pb
from tests import sidecar as sidecar_process
from tests.mesh.fault_upstream import BoltClient, fault_upstream, wait_for
from tests.procfs import sockets_to

SERVICE = "com.example.EchoService:1.0"
STATUS_SUCCESS, STATUS_THREADPOOL_BUSY, STATUS_TIMEOUT, STATUS_CONNECTION_CLOSED = 0x0, 0x4, 0x7, 0x10


@contextmanager
def mesh(tmp: Path, cluster: dict[str, Any], listener: dict[str, Any] | None = None,
         route: dict[str, Any] | None = None, *, routes: list[dict[str, Any]] | None = None,
         flags: tuple[str, ...] = ()) -> Iterator[tuple[sidecar_process.Sidecar, int]]:  # fmt: skip
    """A sidecar whose mesh routes ``SERVICE`` (or ``routes``) on a Bolt listener to cluster
    ``c``; ``flags`` go on its command line."""
    port = sidecar_process.free_port()
    routes = routes or [{"name": "echo", "match": {"service": SERVICE}, "cluster": "c", **(route or {})}]
    config = {
        "mesh": {
            "listeners": [{"protocol": "bolt", "address": f"127.0.0.1:{port}", **(listener or {}), "routes": routes}],
            "clusters": [{"name": "c", "protocol": "bolt", **cluster}],
        }
    }
    path = tmp / "mesh.yaml"
    path.write_text(yaml.safe_dump(config))
    sidecar = sidecar_process.start(tmp, "--config", str(path), *flags)
    try:
        yield sidecar, port
    finally:
        sidecar.stop()


@contextmanager
def ejecting_mesh(tmp: Path, ejection_ms: int) -> Iterator[tuple[Any, Any, sidecar_process.Sidecar, int]]:
    """A good and a bad upstream behind a cluster that ejects a host after 2 failures in a row
    for ``ejection_ms``; the upstreams, the sidecar and its listener's port."""
    with (
        fault_upstream() as good,
        fault_upstream() as bad,
        mesh(
            tmp,
            {"hosts": [good.address, bad.address],
             "outlier_detection": {"consecutive_failures": 2, "ejection_ms": ejection_ms}},
        ) as (sidecar, port),
    ):  # fmt: skip
        yield good, bad, sidecar, port


def rss_mib(sidecar: sidecar_process.Sidecar, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{sidecar.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def reset_peak_rss(sidecar: sidecar_process.Sidecar) -> None:
    """From now on VmHWM is the peak since this call (Linux's clear_refs "5")."""
    Path(f"/proc/{sidecar.process.pid}/clear_refs").write_text("5")


def hosts(sidecar: sidecar_process.Sidecar) -> dict[str, dict[str, Any]]:
    _, body = sidecar.http("/actuator/info")
    return {h["address"]: h for h in json.loads(body)["mesh"]["clusters"][0]["hosts"]}


# max_buffered (1 MiB) of answers held for the hog, its partial request, and the allocator's slack
PEAK_GROWTH_MIB = 12


def test_a_client_that_never_reads_is_cut_off_and_memory_stays_bounded(tmp_path: Path) -> None:
    with (
        fault_upstream() as upstream,
        mesh(tmp_path, {"hosts": [upstream.address]}, listener={"max_buffered": 1 << 20}) as (sidecar, port),
    ):
        before = rss_mib(sidecar)
        reset_peak_rss(sidecar)
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", port))
        hog.settimeout(10)
        request = BoltClient.request(1, SERVICE, b"x" * 65536)
        sent = 0
        try:
            for _ in range(1000):  # 64 MiB of echoes it never reads
                hog.sendall(request)
                sent += 1
        except OSError:
            pass  # cut off by the sidecar
        bystander = BoltClient(("127.0.0.1", port))
        bystander.send(bystander.request(2, SERVICE))
        assert bystander.responses(1)[0][:2] == (2, STATUS_SUCCESS)
        wait_for(lambda: _closed(hog))
        # the peak while the hog was connected, not what is left once its connection is freed
        grown = rss_mib(sidecar, "VmHWM") - before
        assert grown < PEAK_GROWTH_MIB, f"the sidecar grew {grown:.0f} MiB for a client that never reads ({sent} sent)"


def _closed(sock: socket.socket) -> bool:
    try:
        sock.setblocking(False)
        while sock.recv(1 << 20):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_host_that_misses_health_checks_is_taken_out(tmp_path: Path) -> None:
    with (
        fault_upstream() as good,
        fault_upstream() as bad,
        mesh(
            tmp_path,
            # a timeout a busy machine's late answer cannot pass: the good host, taken out
            # too, would leave only the muted one to balance to
            {"hosts": [good.address, bad.address], "health_check": {"interval_ms": 100, "timeout_ms": 500}},
        ) as (sidecar, port),
    ):
        wait_for(lambda: good.heartbeats > 0 and bad.heartbeats > 0)
        bad.mode = "mute"
        wait_for(lambda: not hosts(sidecar)[bad.address]["healthy"])
        client = BoltClient(("127.0.0.1", port))
        for i in range(6):
            client.send(client.request(i, SERVICE))
            assert client.responses(1)[0][2]["upstream"] == str(good.port)
        bad.mode = "echo"
        wait_for(lambda: hosts(sidecar)[bad.address]["healthy"])


def test_a_host_slow_to_answer_its_health_check_delays_no_other_hosts_check(tmp_path: Path) -> None:
    """Each host is checked on its own interval. Before, the hosts were probed one after
    another: a mute one listed first held every other host's check for its whole timeout
    (here 3 s), so a host that came back was seen healthy that much later."""
    with fault_upstream() as mute, fault_upstream() as good:
        mute.mode = "mute"
        cluster = {"hosts": [mute.address, good.address], "health_check": {"interval_ms": 100, "timeout_ms": 3000}}
        with mesh(tmp_path, cluster):
            wait_for(lambda: good.heartbeats > 0)
            before = good.heartbeats
            time.sleep(1.0)
            checked = good.heartbeats - before
        assert checked >= 4, f"the good host was checked {checked} times in 1 s at a 100 ms interval"


def test_a_health_check_that_times_out_fails_no_request_before_its_deadline(tmp_path: Path) -> None:
    """The upstream pauses past the health check's timeout but within the request's own: the
    request gets its late answer. Before, the probe gave up the connection the request shared
    with it, and the request failed at once with CONNECTION_CLOSED."""
    with (
        fault_upstream() as upstream,
        mesh(tmp_path, {"hosts": [upstream.address], "health_check": {"interval_ms": 50, "timeout_ms": 100}}) as (
            sidecar,
            port,
        ),
    ):
        wait_for(lambda: upstream.heartbeats > 0)
        upstream.delay = 0.8  # the connection answers nothing, heartbeats included, meanwhile
        client = BoltClient(("127.0.0.1", port))
        started = time.monotonic()
        client.send(client.request(1, SERVICE))
        request_id, status, _, content = client.responses(1)[0]
        assert (request_id, status, content) == (1, STATUS_SUCCESS, b"hi")
        assert time.monotonic() - started >= 0.7
        wait_for(lambda: hosts(sidecar)[upstream.address]["healthy"])  # answering again


def test_health_probes_that_cannot_connect_mark_a_host_unhealthy_not_ejected(tmp_path: Path) -> None:
    """A probe's failed connect is the health check's finding, not a request's failure: the
    host is unhealthy (back as soon as it answers), not ejected, and no connect failure is counted."""
    down = f"127.0.0.1:{sidecar_process.free_port()}"
    cluster = {
        "hosts": [down],
        "health_check": {"interval_ms": 50, "timeout_ms": 100},
        "outlier_detection": {"consecutive_failures": 2, "ejection_ms": 60000},
    }
    with mesh(tmp_path, cluster) as (sidecar, _):
        wait_for(lambda: not hosts(sidecar)[down]["healthy"])
        time.sleep(0.3)  # several more probes
        assert not hosts(sidecar)[down]["ejected"]
        _, body = sidecar.http("/metrics")
        assert 'layotto_fast_mesh_connect_failures_total{cluster="c"} 0.0' in body.decode()


def test_consecutive_failures_eject_a_host(tmp_path: Path) -> None:
    with ejecting_mesh(tmp_path, 60000) as (_, bad, sidecar, port):
        bad.mode = "close"
        client = BoltClient(("127.0.0.1", port))
        statuses = []
        for i in range(12):
            client.send(client.request(i, SERVICE))
            statuses.append(client.responses(1)[0][1])
        assert statuses[-6:] == [STATUS_SUCCESS] * 6, f"the failing host is out after two failures: {statuses}"
        assert hosts(sidecar)[bad.address]["ejected"]
        _, body = sidecar.http("/metrics")
        assert 'layotto_fast_mesh_ejections_total{cluster="c"} 1.0' in body.decode()


def test_an_ejected_host_serves_again_after_ejection_ms(tmp_path: Path) -> None:
    """Ejection is for ``ejection_ms``, not for good: the host that failed twice is left out
    for that long, then balanced to again (and, answering now, serves and stays in)."""
    ejection_ms = 500
    with ejecting_mesh(tmp_path, ejection_ms) as (good, bad, sidecar, port):
        bad.mode = "close"
        client = BoltClient(("127.0.0.1", port))
        request_ids = iter(range(1000))
        # Taken before the first request: the ejection, which some request's failure makes,
        # lasts until at least this plus ejection_ms (the same monotonic clock as the proxy's).
        failing_since = time.monotonic()

        def answered_by() -> str | None:
            """The port of the upstream that answered one request; None when its connection
            was closed under it (retries are for connects only: the client hears that)."""
            request_id = next(request_ids)
            client.send(client.request(request_id, SERVICE))
            answered_id, status, header, _ = client.responses(1)[0]
            assert answered_id == request_id and status in (STATUS_SUCCESS, STATUS_CONNECTION_CLOSED), status
            return header["upstream"] if status == STATUS_SUCCESS else None

        def ejections() -> int:
            _, body = sidecar.http("/metrics")
            counter = 'layotto_fast_mesh_ejections_total{cluster="c"} '
            return int(float(next(line for line in body.decode().splitlines() if line.startswith(counter)).split()[-1]))

        def one_more_request_ejects() -> bool:
            answered_by()
            return ejections() == 1

        wait_for(one_more_request_ejects)
        bad.mode = "echo"  # it would answer now; only the ejection keeps requests off it
        wait_for(lambda: answered_by() == str(bad.port), timeout=10)
        back_after = time.monotonic() - failing_since
        assert back_after >= ejection_ms / 1000, f"served again {back_after:.3f}s in: while still ejected"
        wait_for(lambda: not hosts(sidecar)[bad.address]["ejected"])  # the info's own (wall) clock
        answers = [answered_by() for _ in range(4)]
        assert sorted(answers, key=str) == sorted([str(good.port), str(bad.port)] * 2), f"round robin: {answers}"
        assert ejections() == 1, "answering, it was not ejected again"


def test_a_client_that_shuts_its_sending_side_still_gets_its_answers(tmp_path: Path) -> None:
    """Requests in flight when the client half-closes (SHUT_WR) are answered, then the
    sidecar closes the connection."""
    with fault_upstream() as upstream, mesh(tmp_path, {"hosts": [upstream.address]}) as (_, port):
        upstream.delay = 0.2
        client = BoltClient(("127.0.0.1", port))
        client.send(b"".join(client.request(i, SERVICE) for i in range(3)))
        time.sleep(0.05)  # read by the sidecar and sent on before the end of its input
        client.sock.shutdown(socket.SHUT_WR)
        assert sorted(r[:2] for r in client.responses(3)) == [(i, STATUS_SUCCESS) for i in range(3)]
        assert client.closed_by_peer()


def test_the_circuit_breaker_refuses_past_max_requests(tmp_path: Path) -> None:
    """The four arrive before the upstream connection is made, and all wait for it: the limit
    is checked again once it is open, so two go out and two are refused."""
    with (
        fault_upstream() as upstream,
        mesh(
            tmp_path, {"hosts": [upstream.address], "circuit_breaker": {"max_requests": 2}}, route={"timeout_ms": 2000}
        ) as (sidecar, port),
    ):
        upstream.mode = "silent"
        client = BoltClient(("127.0.0.1", port))
        client.send(b"".join(client.request(i, SERVICE) for i in range(4)))
        first = client.responses(2)
        assert sorted(r[:2] for r in first) == [(2, STATUS_THREADPOOL_BUSY), (3, STATUS_THREADPOOL_BUSY)]
        _, body = sidecar.http("/metrics")
        assert 'layotto_fast_mesh_breaker_refused_total{cluster="c"} 2.0' in body.decode()


@contextmanager
def unreachable_address() -> Iterator[str]:
    """An address whose connects hang: its listener's accept queue is full, so SYNs are dropped."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as stuck:
        filler = socket.create_connection(stuck.getsockname())
        try:
            yield f"127.0.0.1:{stuck.getsockname()[1]}"
        finally:
            filler.close()


def test_waiting_for_a_connection_counts_against_the_routes_timeout(tmp_path: Path) -> None:
    """A connect that hangs for longer than the route's timeout: the clients hear Bolt's
    timeout status when their requests' time is up, not after the connect timeout."""
    with unreachable_address() as address:
        cluster = {"hosts": [address], "connect_timeout_ms": 5000}
        with mesh(tmp_path, cluster, route={"timeout_ms": 300}) as (sidecar, port):
            clients = [BoltClient(("127.0.0.1", port), timeout=3.0) for _ in range(3)]
            started = time.monotonic()
            for i, client in enumerate(clients):
                client.send(client.request(i, SERVICE, timeout_ms=0))  # none of its own: the route's
            assert [c.responses(1)[0][:2] for c in clients] == [(i, STATUS_TIMEOUT) for i in range(3)]
            assert time.monotonic() - started < 1.5, "answered at the route's timeout"
            _, body = sidecar.http("/metrics")
            assert 'layotto_fast_mesh_cluster_requests_total{cluster="c",outcome="timeout"} 3.0' in body.decode()


def test_requests_waiting_for_one_connect_attempt_all_hear_that_it_failed(tmp_path: Path) -> None:
    """Three requests wait for the same connection attempt: when it fails, all three are
    refused together, and the host is counted one failure, not dialled once per request."""
    with unreachable_address() as address:
        cluster = {"hosts": [address], "connect_timeout_ms": 500}
        with mesh(tmp_path, cluster, route={"timeout_ms": 10000, "retries": 0}) as (sidecar, port):
            clients = [BoltClient(("127.0.0.1", port), timeout=5.0) for _ in range(3)]
            started = time.monotonic()
            for i, client in enumerate(clients):
                client.send(client.request(i, SERVICE))
            assert [c.responses(1)[0][:2] for c in clients] == [(i, STATUS_CONNECTION_CLOSED) for i in range(3)]
            assert time.monotonic() - started < 1.2, "one attempt of 500 ms, not three in turn"
            _, body = sidecar.http("/metrics")
            assert 'layotto_fast_mesh_connect_failures_total{cluster="c"} 1.0' in body.decode()


def test_the_circuit_breaker_refuses_past_max_pending_while_connecting(tmp_path: Path) -> None:
    """Requests waiting for a connection to be made count against max_pending: an upstream
    whose accept queue is full leaves the connect hanging, and past the limit the client
    gets Bolt's busy status at once instead of waiting too."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as stuck:
        filler = socket.create_connection(stuck.getsockname())  # fills the accept queue: later SYNs are dropped
        address = f"127.0.0.1:{stuck.getsockname()[1]}"
        cluster = {"hosts": [address], "connect_timeout_ms": 5000, "circuit_breaker": {"max_pending": 2}}
        try:
            with mesh(tmp_path, cluster, route={"timeout_ms": 5000}) as (sidecar, port):
                # one connection's requests are read in turn: the waiting ones come from four
                clients = [BoltClient(("127.0.0.1", port), timeout=3.0) for _ in range(4)]
                for i, client in enumerate(clients):
                    client.send(client.request(i, SERVICE))
                    time.sleep(0.1)  # in this order: the first two are the ones waiting
                started = time.monotonic()
                assert [c.responses(1)[0][:2] for c in clients[2:]] == [(2, STATUS_THREADPOOL_BUSY),
                                                                       (3, STATUS_THREADPOOL_BUSY)]  # fmt: skip
                assert time.monotonic() - started < 1.0, "refused at once, not after the connect timeout"
                _, body = sidecar.http("/metrics")
                assert 'layotto_fast_mesh_breaker_refused_total{cluster="c"} 2.0' in body.decode()
        finally:
            filler.close()


def test_an_upstream_connection_that_goes_silent_is_replaced_after_one_timeout(tmp_path: Path) -> None:
    """Without health checks: a request's whole timeout without one byte from the upstream
    sends a heartbeat, and one unanswered for 1 s gives the connection up: the next request
    goes out on a new one. Kept, it would time every request out until TCP gave up, many
    minutes later."""
    with (
        fault_upstream() as upstream,
        mesh(tmp_path, {"hosts": [upstream.address]}, route={"timeout_ms": 300}) as (_, port),
    ):
        client = BoltClient(("127.0.0.1", port))
        client.send(client.request(1, SERVICE))
        assert client.responses(1)[0][:2] == (1, STATUS_SUCCESS)
        upstream.wedged = {1}  # the mesh's connection: the route to it dropped, say
        client.send(client.request(2, SERVICE))
        assert client.responses(1)[0][:2] == (2, STATUS_TIMEOUT)
        time.sleep(1.5)  # the heartbeat's second
        for i in range(3, 6):
            client.send(client.request(i, SERVICE))
            assert client.responses(1)[0][:2] == (i, STATUS_SUCCESS)
        assert upstream.connections == 2


def test_a_connection_given_up_on_a_peer_that_stopped_reading_is_closed(tmp_path: Path) -> None:
    """The upstream stops reading with 24 MiB on its way: the sidecar's writes to it block.
    Once the connection is given up (a request's timeout, then an unanswered heartbeat), its
    socket is closed. Before, the task writing to it stayed blocked, holding the socket and
    what was queued, for as long as the peer stayed wedged; each new connection to it added one."""
    with (
        fault_upstream() as upstream,
        mesh(tmp_path, {"hosts": [upstream.address]}, route={"timeout_ms": 300}) as (sidecar, port),
    ):
        client = BoltClient(("127.0.0.1", port))
        client.send(client.request(1, SERVICE))
        assert client.responses(1)[0][:2] == (1, STATUS_SUCCESS)
        given_up = sockets_to(upstream.port, sidecar.process.pid)
        assert len(given_up) == 1
        upstream.paused = True
        for i in (2, 3):  # more than the kernel's buffers on both sides hold
            client.send(client.request(i, SERVICE, b"x" * (12 << 20)))
        assert [client.responses(1)[0][:2] for _ in range(2)] == [(2, STATUS_TIMEOUT), (3, STATUS_TIMEOUT)]
        wait_for(lambda: not sockets_to(upstream.port, sidecar.process.pid) & given_up)


def test_a_host_whose_connection_goes_silent_is_healthy_again_on_a_new_one(tmp_path: Path) -> None:
    """A heartbeat unanswered with nothing at all read for the check's timeout gives the
    connection up: the next probe opens a new one, and the host is healthy again.

    The host is unhealthy only from the give-up to the next probe (an interval), too short
    to sample on a busy machine: the test waits for what lasts, the first connection closed
    and the host healthy on a second. The timeout is one a late answer cannot pass, which
    would give up a healthy connection too (a third)."""
    cluster = {"hosts": [], "health_check": {"interval_ms": 100, "timeout_ms": 500}}
    with fault_upstream() as upstream, mesh(tmp_path, {**cluster, "hosts": [upstream.address]}) as (sidecar, port):
        wait_for(lambda: upstream.heartbeats > 0 and hosts(sidecar)[upstream.address]["healthy"])
        first = sockets_to(upstream.port, sidecar.process.pid)
        assert len(first) == 1 and upstream.connections == 1
        upstream.wedged = {1}
        wait_for(lambda: upstream.connections >= 2 and hosts(sidecar)[upstream.address]["healthy"], timeout=10)
        wait_for(lambda: not sockets_to(upstream.port, sidecar.process.pid) & first)  # given up: closed
        assert upstream.connections == 2
        client = BoltClient(("127.0.0.1", port))
        client.send(client.request(1, SERVICE))
        assert client.responses(1)[0][:2] == (1, STATUS_SUCCESS)


def test_a_slow_service_on_a_responsive_upstream_keeps_its_connection(tmp_path: Path) -> None:
    """A route with a short timeout expires while the connection is quiet, but the upstream
    answers the heartbeat that finds out why (it is only slow): the connection is kept, and
    a request of a route with a longer timeout waiting on it is answered."""
    routes = [
        {"name": "hasty", "match": {"service": "com.example.Hasty:1.0"}, "cluster": "c", "timeout_ms": 200},
        {"name": "patient", "match": {"service": SERVICE}, "cluster": "c", "timeout_ms": 5000},
    ]
    with fault_upstream() as upstream:
        cluster = {"hosts": [upstream.address], "idle_heartbeat_ms": 0}
        with mesh(tmp_path, cluster, routes=routes) as (_, port):
            upstream.slow = 1.5
            client = BoltClient(("127.0.0.1", port), timeout=10)
            # No timeout of their own (a Bolt request's would win): their routes'.
            client.send(client.request(1, SERVICE, timeout_ms=0))
            client.send(client.request(2, "com.example.Hasty:1.0", timeout_ms=0))
            answers = dict((r[0], r[1]) for r in client.responses(2))
            assert answers == {2: STATUS_TIMEOUT, 1: STATUS_SUCCESS}, answers
            assert upstream.connections == 1 and upstream.heartbeats >= 1


def test_a_late_heartbeat_answer_does_not_pass_a_later_probe(tmp_path: Path) -> None:
    """Every heartbeat is answered, but after the check's timeout and the next probe's
    start: the host stays unhealthy (an answer to an earlier probe proves nothing now)."""
    cluster = {"health_check": {"interval_ms": 50, "timeout_ms": 100}}
    with fault_upstream() as upstream, mesh(tmp_path, {**cluster, "hosts": [upstream.address]}) as (sidecar, _):
        upstream.heartbeat_delay = 0.2
        wait_for(lambda: upstream.heartbeats >= 2)
        seen = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seen.add(hosts(sidecar)[upstream.address]["healthy"])
            time.sleep(0.02)
        assert seen == {False}


def bolt_v2_with_crc(request_id: int, service: str, damaged: bool = False) -> bytes:
    """A Bolt v2 request with ver1 2 and the CRC bit, made from the v1 encoding: v2 adds
    ver1 after proto and the switch after codec, and a CRC32 (java.util.zip's) at the end."""
    v1 = BoltClient.request(request_id, service)
    frame = bytes([2, 2]) + v1[1:10] + bytes([0x01]) + v1[10:]
    crc = zlib.crc32(frame) ^ (1 if damaged else 0)
    return frame + crc.to_bytes(4, "big")


def test_frames_a_bolt_server_would_close_on_close_only_the_senders_connection(tmp_path: Path) -> None:
    """A damaged CRC32 or an unknown command code would make a SOFA Bolt provider close the
    connection every client's requests share: the mesh closes the sender's instead, and a
    request of another client waiting on the same upstream connection is answered."""
    unknown_command = bytearray(BoltClient.request(7, SERVICE))
    unknown_command[2:4] = (3).to_bytes(2, "big")
    with fault_upstream() as upstream, mesh(tmp_path, {"hosts": [upstream.address]}) as (_, port):
        good = BoltClient(("127.0.0.1", port))
        good.send(bolt_v2_with_crc(1, SERVICE))
        assert good.responses(1)[0][:2] == (1, STATUS_SUCCESS), "an intact v2 frame with its CRC32 goes through"
        upstream.delay = 0.3
        for bad in (bolt_v2_with_crc(7, SERVICE, damaged=True), bytes(unknown_command)):
            waiting = BoltClient(("127.0.0.1", port))
            waiting.send(waiting.request(2, SERVICE))
            time.sleep(0.1)  # sent on, and waiting for its answer
            offender = BoltClient(("127.0.0.1", port))
            offender.send(bad)
            assert offender.closed_by_peer()
            assert waiting.responses(1)[0][:2] == (2, STATUS_SUCCESS)
        assert upstream.connections == 1


def test_an_idle_upstream_connection_gets_heartbeats_and_is_given_up_when_silent(tmp_path: Path) -> None:
    """As SOFA Bolt and Dubbo clients do (their servers close connections idle for 90 s and
    180 s), an idle upstream connection gets a heartbeat every ``idle_heartbeat_ms``; one that
    sends nothing back by the next is given up, so the next request goes out on a new one
    instead of timing out on a dead one."""
    cluster = {"idle_heartbeat_ms": 100}
    with (
        fault_upstream() as upstream,
        mesh(tmp_path, {**cluster, "hosts": [upstream.address]}, route={"timeout_ms": 2000}) as (_, port),
    ):
        client = BoltClient(("127.0.0.1", port))
        client.send(client.request(1, SERVICE))
        assert client.responses(1)[0][:2] == (1, STATUS_SUCCESS)
        wait_for(lambda: upstream.heartbeats >= 3)
        upstream.wedged = {1}
        time.sleep(1.6)  # a heartbeat, unanswered for a second
        started = time.monotonic()
        client.send(client.request(2, SERVICE))
        assert client.responses(1)[0][:2] == (2, STATUS_SUCCESS)
        assert time.monotonic() - started < 1.0, "not after the route's timeout"
        assert upstream.connections == 2


def test_an_upstream_that_stops_reading_is_refused_to_not_dropped(tmp_path: Path) -> None:
    """A client sends oneway requests (which nothing answers, so no breaker counts them)
    faster than the upstream reads, which has stopped: past a backlog, new requests are
    refused as overloaded (Bolt's busy status), not queued until the connection every
    client shares must be dropped. A request sent before is answered once it reads again."""
    with (
        fault_upstream() as upstream,
        mesh(tmp_path, {"hosts": [upstream.address]}, route={"timeout_ms": 30000}) as (sidecar, port),
    ):
        waiting = BoltClient(("127.0.0.1", port), timeout=30)
        waiting.send(waiting.request(1, SERVICE))
        assert waiting.responses(1)[0][:2] == (1, STATUS_SUCCESS), "the connection is made"
        upstream.paused = True
        waiting.send(waiting.request(2, SERVICE))
        content = b"x" * 256 * 1024
        oneway = bytes(native.encode_bolt_request(9, 1, 30000, "", {"service": SERVICE}, content, oneway=True))
        flood = BoltClient(("127.0.0.1", port), timeout=30)
        for _ in range(400):  # 100 MiB
            flood.send(oneway)

        def refused() -> int:
            _, body = sidecar.http("/metrics")
            counter = 'layotto_fast_mesh_breaker_refused_total{cluster="c"} '
            return int(float(next(line for line in body.decode().splitlines() if line.startswith(counter)).split()[-1]))

        wait_for(lambda: refused() > 0, timeout=20)
        probe = BoltClient(("127.0.0.1", port))
        probe.send(probe.request(3, SERVICE))
        assert probe.responses(1)[0][:2] == (3, STATUS_THREADPOOL_BUSY)
        upstream.paused = False
        assert waiting.responses(1)[0][:2] == (2, STATUS_SUCCESS), "the shared connection was kept"
        assert upstream.connections == 1


def test_a_stop_drains_the_mesh_within_the_grace(tmp_path: Path) -> None:
    """SIGTERM closes the mesh's listening socket at once (new connections go elsewhere)
    and answers the requests in flight before the process ends, within the grace."""
    with fault_upstream() as upstream:
        upstream.delay = 1.0
        grace = ("--shutdown-grace-seconds", "4")
        with mesh(tmp_path, {"hosts": [upstream.address]}, route={"timeout_ms": 5000}, flags=grace) as (sidecar, port):
            client = BoltClient(("127.0.0.1", port), timeout=10)
            client.send(client.request(1, SERVICE))
            wait_for(lambda: upstream.requests == 1)
            started = time.monotonic()
            sidecar.process.send_signal(signal.SIGTERM)
            wait_for(lambda: _refused(port), timeout=2)
            assert client.responses(1)[0][:2] == (1, STATUS_SUCCESS), "answered, not cut"
            assert sidecar.process.wait(10) == 0
            assert time.monotonic() - started < 4.0


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def test_a_stop_under_steady_traffic_closes_each_client_once_answered(tmp_path: Path) -> None:
    """A client that keeps one request in flight at all times would keep some answer owed
    whenever the drain looked: once the stop begins, each client connection has its new
    requests refused as overloaded, is closed once its earlier ones are answered, and the
    stop ends long before the grace. No answer the client got is a failure."""
    with fault_upstream() as upstream:
        upstream.delay = 0.05
        grace = ("--shutdown-grace-seconds", "20")
        with mesh(tmp_path, {"hosts": [upstream.address]}, route={"timeout_ms": 5000}, flags=grace) as (sidecar, port):
            client = BoltClient(("127.0.0.1", port), timeout=10)
            statuses: list[int] = []
            closed = threading.Event()

            def keep_asking() -> None:
                try:
                    for i in range(100_000):
                        client.send(client.request(i, SERVICE))
                        statuses.append(client.responses(1)[0][1])
                except OSError:
                    closed.set()

            asking = threading.Thread(target=keep_asking, daemon=True)
            asking.start()
            wait_for(lambda: len(statuses) >= 5)
            started = time.monotonic()
            sidecar.process.send_signal(signal.SIGTERM)
            assert sidecar.process.wait(10) == 0
            assert time.monotonic() - started < 3.0, "not held to the 20 s grace"
            assert closed.wait(5), "the client's connection was closed"
            assert set(statuses) <= {STATUS_SUCCESS, STATUS_THREADPOOL_BUSY} and STATUS_SUCCESS in statuses


def test_a_stop_answers_a_pipelining_client_before_closing_without_a_reset(tmp_path: Path) -> None:
    """A client with 16 requests in flight that keeps sending during the stop: the 16 are
    answered and the later ones refused as overloaded (Bolt's busy status: the client tries
    another instance), none left without an answer; then the mesh closes the connection."""
    with fault_upstream() as upstream:
        upstream.slow = 0.5
        grace = ("--shutdown-grace-seconds", "10")
        with mesh(tmp_path, {"hosts": [upstream.address]}, route={"timeout_ms": 5000}, flags=grace) as (sidecar, port):
            client = BoltClient(("127.0.0.1", port), timeout=10)
            client.send(b"".join(client.request(i, SERVICE) for i in range(16)))
            wait_for(lambda: upstream.requests == 16)
            sidecar.process.send_signal(signal.SIGTERM)
            # the drain has begun (the listening socket closes with it), however loaded the machine
            wait_for(lambda: _refused(port), timeout=2)
            client.send(b"".join(client.request(i, SERVICE) for i in range(16, 32)))
            answers: dict[int, int] = {}
            splitter = native.FrameSplitter("bolt")
            while True:
                try:
                    chunk = client.sock.recv(65536)
                except ConnectionResetError:
                    raise AssertionError(f"reset after {len(answers)} answers") from None
                if not chunk:
                    break
                for frame in splitter.feed(chunk):
                    request_id, _, _, status, _, _, _ = native.decode_bolt_response(bytes(frame))
                    answers[request_id] = status
            assert {i: answers.get(i) for i in range(16)} == dict.fromkeys(range(16), STATUS_SUCCESS)
            assert {i: answers.get(i) for i in range(16, 32)} == dict.fromkeys(range(16, 32), STATUS_THREADPOOL_BUSY)
            assert sidecar.process.wait(10) == 0


def test_the_mesh_drains_while_an_open_stream_holds_the_grpc_server(tmp_path: Path) -> None:
    """A configuration subscription stays open through a stop and holds the gRPC server's
    stop for the whole grace. The mesh began to drain only after it: its listeners served as
    usual all the grace long, and the requests in flight then were cut unanswered."""
    with fault_upstream() as upstream:
        upstream.slow = 0.5
        grace = ("--shutdown-grace-seconds", "4")
        with mesh(tmp_path, {"hosts": [upstream.address]}, route={"timeout_ms": 5000}, flags=grace) as (sidecar, port):
            stream = sidecar.stub().SubscribeConfiguration(
                iter([pb.SubscribeConfigurationRequest(store_name="config_demo", keys=["k"])])
            )

            def read() -> None:
                with contextlib.suppress(grpc.RpcError):
                    for _ in stream:
                        pass

            threading.Thread(target=read, daemon=True).start()
            client = BoltClient(("127.0.0.1", port), timeout=10)
            client.send(b"".join(client.request(i, SERVICE) for i in range(4)))
            wait_for(lambda: upstream.requests == 4)
            started = time.monotonic()
            sidecar.process.send_signal(signal.SIGTERM)
            wait_for(lambda: _refused(port), timeout=2)
            assert time.monotonic() - started < 2, "the listener closed long before the grace ends"
            client.send(client.request(4, SERVICE))
            answers = {request_id: status for request_id, status, _, _ in client.responses(5)}
            assert answers == {0: STATUS_SUCCESS, 1: STATUS_SUCCESS, 2: STATUS_SUCCESS, 3: STATUS_SUCCESS,
                               4: STATUS_THREADPOOL_BUSY}  # fmt: skip
            assert client.closed_by_peer(timeout=3), "closed once answered, not at the grace's end"
            assert sidecar.process.wait(10) == 0


def test_a_client_connection_silent_for_idle_timeout_is_closed_unless_owed_an_answer(tmp_path: Path) -> None:
    """A client gone without a FIN would hold its connection for good: one that sends
    nothing for ``idle_timeout_ms``, and is owed nothing, is closed; one that keeps
    talking, or waits on a slow answer, is not."""
    with fault_upstream() as upstream:
        cluster = {"hosts": [upstream.address], "idle_heartbeat_ms": 0}
        with mesh(tmp_path, cluster, listener={"idle_timeout_ms": 400}, route={"timeout_ms": 5000}) as (
            sidecar,
            port,
        ):
            silent, waiting = BoltClient(("127.0.0.1", port)), BoltClient(("127.0.0.1", port))
            upstream.slow = 1.2
            waiting.send(waiting.request(1, SERVICE))
            started = time.monotonic()
            assert silent.closed_by_peer(timeout=3.0)
            assert 0.35 < time.monotonic() - started < 1.5
            upstream.slow = 0
            talking = BoltClient(("127.0.0.1", port))
            for request_id in range(1, 8):  # 1.05 s of a request every 150 ms
                talking.send(talking.request(request_id, SERVICE))
                assert talking.responses(1)[0][:2] == (request_id, STATUS_SUCCESS)
                time.sleep(0.15)
            assert waiting.responses(1)[0][:2] == (1, STATUS_SUCCESS), "answered, though silent for 1.2 s"
            assert waiting.closed_by_peer(timeout=3.0) and talking.closed_by_peer(timeout=3.0)
            status, body = sidecar.http("/metrics")
            assert status == 200 and 'layotto_fast_mesh_idle_closed_total{listener="bolt"} 3.0' in body.decode(), body
