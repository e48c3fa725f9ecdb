from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import sidecar as sidecar_process
from tests.backends.fixtures import etcd_server, nats_server, redis_cluster, redis_server  # noqa: F401  (fixtures)

pytest_plugins = ["tests.watchdog"]

TRANSPORTS = ("native", "grpcio")
# The embedded secret_env store serves LAYOTTO_SECRET_<name> as <name>, and nothing else.
SIDECAR_ENV = {"LAYOTTO_SECRET_TEST_DB": "s3cret", "LAYOTTO_TEST_SECRET": "not-a-secret"}


@pytest.fixture(scope="session", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Every API test runs once per gRPC transport: the same handlers behind each."""
    return str(request.param)


@pytest.fixture(scope="session")
def sidecar(tmp_path_factory: pytest.TempPathFactory, transport: str) -> Iterator[sidecar_process.Sidecar]:
    """One sidecar per transport on the repo's default components, shared by the API tests."""
    running = sidecar_process.start(tmp_path_factory.mktemp("sidecar"), "--grpc-transport", transport, env=SIDECAR_ENV)
    yield running
    assert running.stop() == 0, running.log()
