"""The watchdog of tests/watchdog.py: a hung test ends the run with its stacks, and the
processes it started are stopped with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_SECONDS = 4  # the hung test's own start (a child process, a loop) must fit in it

HUNG = """
import asyncio, subprocess

def test_hangs(tmp_path):
    child = subprocess.Popen(["sleep", "600"])
    (tmp_path.parent.parent / "child.pid").write_text(str(child.pid))

    async def stuck_below():
        await asyncio.Event().wait()

    async def main():
        await stuck_below()

    asyncio.run(main())
"""


def test_a_hung_test_ends_the_run_with_its_stacks_and_its_processes(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG)
    env = {**os.environ, "LAYOTTO_TEST_TIMEOUT": str(LIMIT_SECONDS), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.watchdog", "-p", "no:cacheprovider", "-q",
         f"--basetemp={tmp_path / 'base'}", str(tmp_path / "test_hung.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 3, (run.stdout, run.stderr)
    assert f"test_hung.py::test_hangs still running after {LIMIT_SECONDS} s" in run.stderr
    assert "in main" in run.stderr and "in stuck_below" in run.stderr  # the await inside the task's own
    child = int((tmp_path / "child.pid").read_text())
    try:
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z"), state  # killed (a zombie until its new parent reaps it)
