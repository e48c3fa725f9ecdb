"""``within``, the time limit that needs no current asyncio Task: the native transport runs a
handler's first step in none, where ``asyncio.wait_for`` fails from Python 3.12 on. The
check runs under every CPython 3.12+ this machine has (the module is pure Python, loaded by
its path), beside the interpreter running the tests."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "layotto_fast" / "runtime" / "timeouts.py"
HANDLER_LIMITS = ("layotto_fast/components/etcd_client.py", "layotto_fast/http/client.py")

# A coroutine driven by hand on a running loop, as the native transport drives a first step:
# no Task is current. wait_for is tried too, to show what within stands in for.
SCRIPT = """
import asyncio, importlib.util, sys
spec = importlib.util.spec_from_file_location("timeouts", sys.argv[1])
timeouts = importlib.util.module_from_spec(spec); spec.loader.exec_module(timeouts)

def drive(coro, loop):
    outcome = loop.create_future()
    def step(_=None):
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            outcome.set_result(stop.value)
        except BaseException as exc:
            outcome.set_exception(exc)
        else:
            yielded.add_done_callback(step)
    loop.call_soon(step)  # from a loop callback: no Task is current
    return outcome

async def first_step(limit_with, seconds):
    assert asyncio.current_task() is None
    return await limit_with(asyncio.sleep(seconds, "slept"), 0.05)

async def main():
    loop = asyncio.get_running_loop()
    results = []
    for name, limit_with in (("within", timeouts.within), ("wait_for", asyncio.wait_for)):
        for seconds in (0.0, 0.2):
            try:
                value = await drive(first_step(limit_with, seconds), loop)
                results.append(f"{name} {seconds}: {value}")
            except BaseException as exc:
                results.append(f"{name} {seconds}: {type(exc).__name__}")
    print("|".join(results))

asyncio.run(main())
"""


def interpreters() -> list[str]:
    """This one, and any CPython 3.12+ on the PATH or installed by pyenv."""
    candidates = [shutil.which(name) for name in ("python3.12", "python3.13")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.1[2-9]*/bin/python3"))
    found = [sys.executable]
    for path in candidates:
        if path is None or path in found:
            continue
        run = subprocess.run(
            [path, "-c", "import sys; print(sys.version_info >= (3, 12))"], capture_output=True, text=True
        )
        if run.returncode == 0 and run.stdout.strip() == "True":
            found.append(path)
    return found


@pytest.mark.parametrize("python", interpreters())
def test_within_limits_an_await_outside_any_task(python: str) -> None:
    run = subprocess.run([python, "-c", SCRIPT, str(MODULE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    results = dict(part.split(": ") for part in run.stdout.strip().split("|"))
    assert results["within 0.0"] == "slept" and results["within 0.2"] == "TimeoutError"
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] >= (3, 12))"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    if version == "True":  # what within stands in for fails there
        assert results["wait_for 0.0"] == "RuntimeError", results


def test_handler_reachable_limits_use_within() -> None:
    root = MODULE.parents[2]
    for path in HANDLER_LIMITS:
        source = (root / path).read_text()
        assert "asyncio.wait_for(" not in source and "within(" in source, path


def test_a_cancel_that_wait_for_lost_still_ends_the_task() -> None:
    """Python 3.11's ``wait_for`` returns the result when what it awaits finishes in the turn
    its task is cancelled, and the cancel is gone (redis-py sends every command through it);
    ``end_if_cancelled`` after it ends the task all the same. From 3.12 the cancel is not lost."""
    from layotto_fast.runtime.timeouts import end_if_cancelled

    async def body(sent: asyncio.Future[int]) -> str:
        await asyncio.wait_for(sent, 1.0)
        end_if_cancelled()
        return "went on"

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[int] = loop.create_future()
        task = loop.create_task(body(sent))
        await asyncio.sleep(0)  # the task waits in wait_for
        sent.set_result(1)  # the send finishes, and in the same turn, before wait_for wakes...
        task.cancel()  # ...the task is cancelled
        with pytest.raises(asyncio.CancelledError):
            await task

        async def not_cancelled() -> str:
            end_if_cancelled()
            return "went on"

        assert await loop.create_task(not_cancelled()) == "went on"

    asyncio.run(scenario())
