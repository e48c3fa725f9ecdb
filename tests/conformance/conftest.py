"""Async harness of the conformance suites: one event loop per test, components closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.services import Services
from tests.components.support import LoopHarness
from tests.conformance.matrix import IMPLEMENTATIONS, Implementation


class _Started:
    """Every component of a ``Components``, started and closed as one component is."""

    def __init__(self, components: Components) -> None:
        self.components = components

    async def init(self) -> None:
        await self.components.init_all()

    async def close(self) -> None:
        await self.components.close_all()


class Harness(LoopHarness):
    """A fresh event loop for one test, and the components it built on that loop (their
    backends are the session's fixtures, looked up per implementation)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        super().__init__()
        self._request = request

    def backend(self, implementation: Implementation) -> Any:
        """The running server ``implementation`` talks to (None: it has none)."""
        return self._request.getfixturevalue(implementation.backend) if implementation.backend else None

    def manifest(self, implementation: Implementation, name: str = "conformance", **extra: str) -> ComponentManifest:
        return ComponentManifest(
            name=name,
            type=implementation.type,
            version="v1",
            metadata={**implementation.metadata(self.backend(implementation)), **extra},
            source=str(Path(__file__)),
        )

    def make(self, implementation: Implementation, name: str = "conformance", **extra: str) -> Any:
        """A new instance of ``implementation``, initialised (several may share a backend)."""
        return self.started(registry.build(self.manifest(implementation, name, **extra)))

    def services(
        self, implementation: Implementation, app_id: str, name: str = "conformance", **extra: str
    ) -> tuple[Services, Any]:
        """The runtime services of a sidecar with ``app_id`` over a new, started instance of
        ``implementation`` named ``name``, and that instance."""
        manifest = self.manifest(implementation, name, **extra)
        components = Components([manifest], app_id=app_id)
        self.started(_Started(components))
        return Services.over(components, app_id), components.ready(manifest.block)[name]


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    running = Harness(request)
    yield running
    running.close()


def implementations(block: str) -> Any:
    """``pytest.mark.parametrize`` over every implementation of ``block``."""
    cases = IMPLEMENTATIONS[block]
    return pytest.mark.parametrize("implementation", cases, ids=[case.id for case in cases])
