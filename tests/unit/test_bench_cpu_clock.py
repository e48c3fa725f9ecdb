"""The benchmarks' CPU time of another process: every thread's, to well under a clock tick."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.run import CLOCK_TICKS, process_cpu_seconds

# Two threads spin for 0.15 s of wall time each, end, and the process then sleeps.
BURNER = """
import threading, time
def spin():
    end = time.perf_counter() + 0.15
    while time.perf_counter() < end:
        pass
threads = [threading.Thread(target=spin) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print("done", flush=True)
time.sleep(30)
"""


def stat_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def test_counts_threads_that_have_ended_and_agrees_with_proc_to_a_tick() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURNER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        first = process_cpu_seconds(child.pid)
        # the spinning threads are gone: their time is still the process's
        assert first >= 0.1
        assert abs(first - stat_seconds(child.pid)) <= 2 / CLOCK_TICKS
        # ticks would give whole hundredths; the clock gives nanoseconds
        samples = [process_cpu_seconds(child.pid) for _ in range(3)]
        assert any(round(s * CLOCK_TICKS, 6) != round(s * CLOCK_TICKS) for s in samples)
        time.sleep(0.05)
        assert process_cpu_seconds(child.pid) - samples[-1] < 0.01  # asleep: next to nothing more
    finally:
        child.kill()
        child.wait()


def test_a_process_that_is_gone_is_an_error_not_zero() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(OSError):
        process_cpu_seconds(child.pid)
