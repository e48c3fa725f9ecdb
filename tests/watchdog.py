"""A test that hangs ends the run, with the stacks that show where, instead of holding it until
CI's own limit kills it silently (stop 43's run: killed at CI's 5400 s, with no trace of
which await never ended).

Each test (setup, call and teardown) gets ``LAYOTTO_TEST_TIMEOUT`` seconds: 1000 by default,
above the 900 s the interop fixtures give a Maven build of a Java peer on a fresh machine (the
whole suite takes about 10 minutes here). Past that, the stacks of every thread and of every
task of the running event loops go to stderr, the processes the tests started are stopped,
and pytest exits with status 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, TextIO

import pytest

DEFAULT_LIMIT = 1000.0
BACKSTOP_MARGIN = 30.0
EXIT_STATUS = 3
_report: TextIO | None = None  # the run's stderr, uncaptured (pytest_configure)


def _limit() -> float:
    return float(os.environ.get("LAYOTTO_TEST_TIMEOUT", DEFAULT_LIMIT))


def _print_tasks(out: TextIO) -> None:
    """The stack of every task on an event loop that is running, in any thread."""
    for loop in [obj for obj in gc.get_objects() if isinstance(obj, asyncio.AbstractEventLoop)]:
        if not loop.is_running():
            continue
        for _ in range(3):  # the set may change under us: the loop's thread is not stopped
            try:
                tasks = list(asyncio.all_tasks(loop))
                break
            except RuntimeError:
                continue
        else:
            continue
        print(f"--- {len(tasks)} tasks on {loop!r}", file=out)
        for task in tasks:
            print(f"{task!r}, cancel requests {task.cancelling()}, awaiting:", file=out)
            for frame in _awaiting(task.get_coro()):
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}", file=out)


def _awaiting(awaitable: object) -> Iterator[FrameType]:
    """The frames of a coroutine and of what it awaits, down to the innermost (Task.print_stack
    stops at the task's own coroutine)."""
    while awaitable is not None:
        frame = _first(awaitable, "cr_frame", "ag_frame", "gi_frame")
        if frame is not None:
            yield frame
        awaitable = _first(awaitable, "cr_await", "ag_await", "gi_yieldfrom")


def _first(thing: object, *names: str) -> Any:
    """The first of ``thing``'s attributes ``names`` that is set."""
    for name in names:
        value = getattr(thing, name, None)
        if value is not None:
            return value
    return None


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid``, children first, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        below = children.get(queue.pop(0), [])
        found.extend(below)
        queue.extend(below)
    return found


def _expire(nodeid: str, limit: float) -> None:
    out = _report or sys.__stderr__
    try:
        print(f"\n\n*** {nodeid} still running after {limit:g} s: the stacks, then the run stops\n", file=out)
        out.flush()
        faulthandler.dump_traceback(file=out, all_threads=True)
        try:
            _print_tasks(out)
        except Exception as exc:  # a diagnostic: what it could not show must not hide the rest
            print(f"(tasks not shown: {exc!r})", file=out)
        out.flush()
    finally:  # whatever failed above, the run ends
        with contextlib.suppress(Exception):
            for pid in _descendants(os.getpid()):  # servers and sidecars the fixtures started
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        os._exit(EXIT_STATUS)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Keep the run's own stderr: pytest captures fd 2 during tests, and what is written
    there then is lost at ``os._exit``."""
    global _report
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=False)
    try:
        _report = os.fdopen(os.dup(2), "w", buffering=1)
    finally:
        if capture is not None:
            capture.resume_global_capture()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = _limit()
    timer = threading.Timer(limit, _expire, args=(item.nodeid, limit))
    timer.daemon = True
    timer.start()
    # A backstop for a main thread that never lets the timer's thread run (native code
    # holding the GIL): the threads' stacks only, and the exit.
    faulthandler.dump_traceback_later(limit + BACKSTOP_MARGIN, exit=True, file=_report or sys.__stderr__)
    try:
        yield
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
