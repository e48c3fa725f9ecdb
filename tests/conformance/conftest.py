"""Async harness of the conformance suites: one event loop per test, components closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from tests.components.support import LoopHarness
from tests.conformance.matrix import IMPLEMENTATIONS, Implementation


class Harness(LoopHarness):
    """A fresh event loop for one test, and the components it built on that loop (their
    backends are the session's fixtures, looked up per implementation)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        super().__init__()
        self._request = request

    def make(self, implementation: Implementation, name: str = "conformance", **extra: str) -> Any:
        """A new instance of ``implementation``, initialised (several may share a backend)."""
        backend = self._request.getfixturevalue(implementation.backend) if implementation.backend else None
        manifest = ComponentManifest(
            name=name,
            type=implementation.type,
            version="v1",
            metadata={**implementation.metadata(backend), **extra},
            source=str(Path(__file__)),
        )
        return self.started(registry.build(manifest))


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    running = Harness(request)
    yield running
    running.close()


def implementations(block: str) -> Any:
    """``pytest.mark.parametrize`` over every implementation of ``block``."""
    cases = IMPLEMENTATIONS[block]
    return pytest.mark.parametrize("implementation", cases, ids=[case.id for case in cases])
