"""Hand a coroutine that was started by hand over to an asyncio Task.

Kept in its own pure-Python module: it must be a real generator-based coroutine
(``types.coroutine``), which the compiled transport module cannot define.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any


@types.coroutine
def resume_started(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, None, Any]:
    """Carry on a coroutine that was started by hand and suspended on ``yielded``.

    Wrapped in a Task, it re-yields what the coroutine waits on and forwards every
    resumption (and cancellation) to it, as the Task would have done itself.
    """
    while True:
        try:
            yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value
