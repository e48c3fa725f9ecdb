from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sidecar as sidecar_process


@pytest.fixture(scope="session")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sidecar_process.Sidecar]:
    """One sidecar on the repo's default components, shared by the API tests."""
    running = sidecar_process.start(tmp_path_factory.mktemp("sidecar"), env={"LAYOTTO_TEST_SECRET": "s3cret"})
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
