"""Fault tests: one fresh native-transport sidecar per test, and a wall-clock limit per test.

pytest-timeout is not a dependency of the project, so the limit is a SIGALRM set here:
a test that hangs fails with ``TimeoutError`` (blocking socket calls are interrupted)
instead of stalling the run. ``@pytest.mark.time_limit(seconds)`` overrides the default.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests import sidecar as sidecar_process
from tests.faults import support

DEFAULT_LIMIT_SECONDS = 30.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "time_limit(seconds): wall-clock limit of a fault test (default 30 s)")


@pytest.fixture(autouse=True)
def _time_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("time_limit")
    seconds = float(marker.args[0]) if marker else DEFAULT_LIMIT_SECONDS

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"{request.node.nodeid} ran past its {seconds:g} s limit")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def native(tmp_path: Path) -> Iterator[sidecar_process.Sidecar]:
    """A sidecar on the native transport with the repo's components; it must exit cleanly."""
    running = support.start_native(tmp_path)
    yield running
    support.stop_cleanly(running)
