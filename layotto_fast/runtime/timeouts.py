"""A time limit for awaits that may run outside any asyncio Task.

The native transport runs a unary handler's first step in no Task (making one per call
would cost more than many calls do). ``asyncio.timeout`` needs a current task, and from
Python 3.12 so does ``asyncio.wait_for``, which is built on it there: ``within`` needs none,
on any version.
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
