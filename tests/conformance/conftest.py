"""Async harness of the conformance suites: one event loop per test, components closed afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from tests.conformance.matrix import IMPLEMENTATIONS, Implementation

T = TypeVar("T")


class Harness:
    """A fresh event loop for one test, and the components it built on that loop."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.loop = asyncio.new_event_loop()
        self._components: list[Any] = []

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

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
        component = registry.build(manifest)
        self.run(component.init())
        self._components.append(component)
        return component

    def close(self) -> None:
        for component in reversed(self._components):
            self.run(component.close())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    running = Harness(request)
    yield running
    running.close()


def implementations(block: str) -> Any:
    """``pytest.mark.parametrize`` over every implementation of ``block``."""
    cases = IMPLEMENTATIONS[block]
    return pytest.mark.parametrize("implementation", cases, ids=[case.id for case in cases])
