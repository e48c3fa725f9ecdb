"""What a test does when a toolchain the README lists for the tests (go, mvn and a JDK, npm)
is missing: it fails, naming the tool, so that a run without the interop peers cannot pass
as green. ``LAYOTTO_FAST_ALLOW_MISSING_TOOLS=1`` makes it a skip instead, for a machine
that knowingly has no such toolchain."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

ALLOW_MISSING = "LAYOTTO_FAST_ALLOW_MISSING_TOOLS"


def tool_missing(what: str) -> NoReturn:
    message = f"{what}: install it (README, Prerequisites), or set {ALLOW_MISSING}=1 to skip these tests"
    if os.environ.get(ALLOW_MISSING) == "1":
        pytest.skip(message)
    pytest.fail(message)
