"""The watchdog of tests/watchdog.py: a hung test ends the run with its stacks, and the
processes it started are stopped with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HUNG = """
import asyncio, subprocess

def test_hangs(tmp_path):
    child = subprocess.Popen(["sleep", "600"])
    (tmp_path.parent.parent / "child.pid").write_text(str(child.pid))

    async def waits_forever():
        await asyncio.Event().wait()

    async def main():
        await asyncio.gather(waits_forever())

    asyncio.run(main())
"""


def test_a_hung_test_ends_the_run_with_its_stacks_and_its_processes(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG)
    env = {**os.environ, "LAYOTTO_TEST_TIMEOUT": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.watchdog", "-p", "no:cacheprovider", "-q",
         f"--basetemp={tmp_path / 'base'}", str(tmp_path / "test_hung.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 3, (run.stdout, run.stderr)
    assert "test_hung.py::test_hangs still running after 1 s" in run.stderr
    assert "in waits_forever" in run.stderr  # the innermost await of the task, not just its own frame
    child = int((tmp_path / "child.pid").read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
