"""A test that hangs ends the run, with the stacks that show where, instead of holding it until
CI's own limit kills it silently (stop 43: 85 minutes and no trace of which await never ended).

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

import pytest

DEFAULT_LIMIT = 1000.0
EXIT_STATUS = 3


def _limit() -> float:
    return float(os.environ.get("LAYOTTO_TEST_TIMEOUT", DEFAULT_LIMIT))


def _print_tasks() -> None:
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
        print(f"--- {len(tasks)} tasks on {loop!r}", file=sys.stderr)
        for task in tasks:
            print(f"{task!r}, cancel requests {task.cancelling()}, awaiting:", file=sys.stderr)
            for frame in _awaiting(task.get_coro()):
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}", file=sys.stderr)


def _awaiting(awaitable: object) -> Iterator[FrameType]:
    """The frames of a coroutine and of what it awaits, down to the innermost (Task.print_stack
    stops at the task's own coroutine)."""
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            yield frame
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)


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


def _expire(config: pytest.Config, nodeid: str, limit: float) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    print(f"\n\n*** {nodeid} still running after {limit:g} s: the stacks, then the run stops\n", file=sys.stderr)
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    try:
        _print_tasks()
    except Exception as exc:  # a diagnostic: what it could not show must not hide the rest
        print(f"(tasks not shown: {exc!r})", file=sys.stderr)
    sys.stderr.flush()
    for pid in _descendants(os.getpid()):  # servers and sidecars the fixtures started
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os._exit(EXIT_STATUS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = _limit()
    timer = threading.Timer(limit, _expire, args=(item.config, item.nodeid, limit))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
