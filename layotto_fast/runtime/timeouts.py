"""Awaits that must keep their word on time and on cancellation, on Python 3.11 as on later ones.

- ``within``: a time limit for awaits that may run outside any asyncio Task. The native
  transport runs a unary handler's first step in no Task (making one per call would cost
  more than many calls do). ``asyncio.timeout`` needs a current task, and from Python 3.12
  so does ``asyncio.wait_for``, which is built on it there: ``within`` needs none.
- ``end_if_cancelled``: Python 3.11's ``asyncio.wait_for`` returns the result of what it
  awaited when that finishes in the same turn as the task is cancelled, and the cancel is
  lost (fixed in 3.12). redis-py sends every command through it when a socket timeout is
  set (ours is the store's ``readTimeout``), and nats-py flushes through it, so a loop
  cancelled while it sent one would run on; its every later ``asyncio.timeout`` then takes
  the lost cancel for its own expiry and the loop never ends. ``Task.cancelling()`` still
  counts the request, so such a loop checks it after each await that may have lost one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``awaitable``'s result, or TimeoutError after ``seconds`` (None: no limit), it then
    being cancelled and waited for, as ``asyncio.wait_for`` does."""
    if seconds is None:
        return await awaitable
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((inner,), timeout=seconds)
    except BaseException:  # the caller was cancelled: so is what it waited for
        inner.cancel()
        raise
    if not done:
        inner.cancel()
        await asyncio.wait((inner,))
        if not inner.cancelled() and inner.exception() is None:
            return inner.result()  # it finished as it was being cancelled
        raise TimeoutError()
    return inner.result()


def end_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to stop and the request was lost
    on the way (see above); a loop that is not in a task, or not asked, goes on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
