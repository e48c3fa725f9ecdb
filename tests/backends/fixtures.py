"""Session-scoped pytest fixtures for the real backends, imported by ``tests/conftest.py``.

Each server starts the first time a test asks for its fixture (never otherwise) and is stopped at
the end of the session; ``servers.kill_all`` also runs at interpreter exit. A test may stop and
start the shared server (it comes back on the same ports) but must leave it running; a test that
needs a server of its own uses the classes directly::

    with RedisServer(tmp_path / "redis") as server:
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import pytest

from tests.backends.servers import BinaryMissingError, EtcdServer, NatsServer, RedisCluster, RedisServer


class _Server(Protocol):
    def start(self) -> object: ...

    def close(self) -> None: ...


ServerT = TypeVar("ServerT", bound=_Server)


def _serve(make: Callable[[], ServerT]) -> Iterator[ServerT]:
    """Make and start a server, yield it, and always stop it; a missing binary fails with the fix."""
    missing = ""
    try:
        server = make()
    except BinaryMissingError as error:
        missing = str(error)
    if missing:  # outside the except block: the report shows the message alone
        pytest.fail(missing, pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` on a free loopback port, without a password, for the whole session."""
    yield from _serve(lambda: RedisServer(tmp_path_factory.mktemp("redis-server")))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of three masters (no replicas) on free loopback ports, for the whole session."""
    yield from _serve(lambda: RedisCluster(tmp_path_factory.mktemp("redis-cluster")))


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One single-member etcd on free loopback ports, for the whole session."""
    yield from _serve(lambda: EtcdServer(tmp_path_factory.mktemp("etcd")))


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One ``nats-server`` with JetStream (file store) on a free loopback port, for the whole session."""
    yield from _serve(lambda: NatsServer(tmp_path_factory.mktemp("nats-server")))
