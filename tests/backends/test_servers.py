"""The test backends themselves: each starts, answers, and comes back on the same ports after a stop."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.backends import servers
from tests.backends.servers import (
    CLUSTER_BUS_OFFSET,
    BinaryMissingError,
    EtcdServer,
    RedisCluster,
    RedisReplyError,
    RedisServer,
    free_ports,
    redis_command,
    require_binary,
)


def test_free_ports_are_distinct_and_leave_the_bus_port_free() -> None:
    ports = free_ports(3, bus_offset=CLUSTER_BUS_OFFSET)
    assert len(set(ports)) == 3
    for port in ports:
        for candidate in (port, port + CLUSTER_BUS_OFFSET):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", candidate))


def test_a_missing_binary_names_the_install_script() -> None:
    with pytest.raises(BinaryMissingError, match=r"tests/backends/install\.sh"):
        require_binary("layotto-no-such-server")


def test_redis_server_answers(redis_server: RedisServer) -> None:
    assert redis_server.address == f"127.0.0.1:{redis_server.port}"
    assert redis_server.ping()
    assert redis_server.cli("SET", "backends:greeting", "hello") == "OK"
    assert redis_server.cli("GET", "backends:greeting") == "hello"
    assert redis_server.command("CONFIG", "GET", "save") == [b"save", b""]
    assert redis_server.command("CONFIG", "GET", "bind") == [b"bind", b"127.0.0.1"]


def test_redis_password_is_required(tmp_path: Path) -> None:
    with RedisServer(tmp_path, password="s3cret") as server:
        assert server.cli("PING") == "PONG"
        with pytest.raises(RedisReplyError, match="NOAUTH"):
            redis_command(server.port, "PING")  # without the password


def test_redis_stop_then_start_on_the_same_port(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        port, first_pid = server.port, server.pid
        assert server.cli("SET", "key", "value") == "OK"
        assert server.stop() == 0
        assert not server.running
        assert not server.ping()
        server.start()
        assert (server.port, server.address) == (port, f"127.0.0.1:{port}")
        assert server.pid != first_pid
        assert server.cli("GET", "key") == ""  # nothing persisted
        server.kill()
        assert not server.ping()
        server.start()
        assert server.port == port and server.ping()
    assert not server.running


def test_redis_cluster_is_ok_on_every_node(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    assert redis_cluster.address == redis_cluster.nodes[0]
    for node in redis_cluster.servers:
        info = node.cli("CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_size:3" in info
        assert node.cli("CONFIG", "GET", "cluster-node-timeout").split() == ["cluster-node-timeout", "5000"]
    keys = [f"backends:{index}" for index in range(20)]  # spread over the three masters' slots
    for key in keys:
        assert redis_cluster.cli("SET", key, key.upper()) == "OK"
    assert [redis_cluster.cli("GET", key) for key in keys] == [key.upper() for key in keys]


def test_etcd_server_answers(etcd_server: EtcdServer) -> None:
    assert etcd_server.endpoint == f"127.0.0.1:{etcd_server.port}"
    assert etcd_server.healthy()
    assert etcd_server.ctl("put", "/backends/greeting", "hello") == "OK"
    assert etcd_server.ctl("get", "/backends/greeting", "--print-value-only") == "hello"


def test_etcd_stop_then_start_on_the_same_ports_keeps_the_data(tmp_path: Path) -> None:
    with EtcdServer(tmp_path) as server:
        endpoint, peer_url = server.endpoint, server.peer_url
        assert server.ctl("put", "key", "value") == "OK"
        assert server.stop() in (0, -signal.SIGTERM)  # etcd re-raises SIGTERM after its clean shutdown
        assert not server.running
        server.start()
        assert (server.endpoint, server.peer_url) == (endpoint, peer_url)
        assert server.ctl("get", "key", "--print-value-only") == "value"
    assert not server.running


def test_a_port_taken_before_the_server_binds_it_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_free_ports = servers.free_ports
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = int(taken.getsockname()[1])
        picks = iter([[taken_port]])
        monkeypatch.setattr(
            servers, "free_ports", lambda count=1, **kw: next(picks, None) or real_free_ports(count, **kw)
        )
        with RedisServer(tmp_path) as server:
            assert server.port != taken_port
            assert server.ping()
            assert "Address already in use" in server.log()
