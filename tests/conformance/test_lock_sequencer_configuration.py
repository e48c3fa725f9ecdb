"""Conformance of the lock, sequencer and configuration blocks over every implementation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery
from layotto_fast.runtime.lock import LockStatus
from tests.conformance.matrix import ids, make


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def unique() -> str:
    return uuid.uuid4().hex


@pytest.mark.parametrize("type_", ids("lock"))
def test_lock_semantics(type_: str) -> None:
    async def scenario() -> None:
        locks: Any = await make(type_, "lock")
        r = unique()
        assert await locks.try_lock(r, "a", 1)
        assert not await locks.try_lock(r, "b", 1)
        assert await locks.unlock(r, "b") == LockStatus.LOCK_BELONG_TO_OTHERS
        assert await locks.keep_alive(r, "a", 1) == LockStatus.SUCCESS
        await asyncio.sleep(1.1)
        assert await locks.unlock(r, "a") == LockStatus.LOCK_UNEXIST
        assert await locks.try_lock(r, "b", 5)
        assert await locks.unlock(r, "b") == LockStatus.SUCCESS

    run(scenario())


@pytest.mark.parametrize("type_", ids("sequencer"))
def test_sequencer_strictly_increasing_under_concurrency(type_: str) -> None:
    async def scenario() -> list[int]:
        sequencer: Any = await make(type_, "sequencer")
        key = unique()
        return list(await asyncio.gather(*(sequencer.next_id(key) for _ in range(200))))

    ids_ = run(scenario())
    assert len(set(ids_)) == 200 and min(ids_) >= 1


@pytest.mark.parametrize("type_", ids("configuration"))
def test_configuration_get_filters_and_watch(type_: str) -> None:
    async def scenario() -> None:
        store: Any = await make(type_, "configuration")
        app, k = unique(), unique()
        seen: list[list[ConfigItem]] = []
        cancel = store.watch(ConfigQuery(app, (k,), label="blue"), seen.append)
        await store.save([ConfigItem(app, k, "b", "g", "blue"), ConfigItem(app, k, "r", "g", "red")])
        got = await store.get(ConfigQuery(app, (k,), label="red"))
        assert [i.content for i in got] == ["r"]
        assert [[i.content for i in batch] for batch in seen] == [["b"]]
        await store.delete(ConfigQuery(app, (k,), label="blue"))
        assert [[i.content for i in batch] for batch in seen] == [["b"], [""]]
        cancel()
        await store.save([ConfigItem(app, k, "after", "g", "blue")])
        assert len(seen) == 2
        assert not await store.get(ConfigQuery(unique(), (k,)))

    run(scenario())
