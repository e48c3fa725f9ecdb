"""Configuration conformance: filters, watches, and changes seen across sidecars."""

from __future__ import annotations

import asyncio
import uuid

from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery
from tests.conformance.conftest import Harness, implementations
from tests.conformance.matrix import Implementation

pytestmark = implementations("configuration")


def unique() -> str:
    return uuid.uuid4().hex


async def settle(seen: list[list[ConfigItem]], count: int, timeout: float = 1.0) -> None:
    """Wait until ``count`` batches arrived (a backend's watch is asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(seen) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def test_get_filters_and_watch(harness: Harness, implementation: Implementation) -> None:
    store = harness.make(implementation)
    app, k = unique(), unique()
    seen: list[list[ConfigItem]] = []
    cancel = store.watch(ConfigQuery(app, (k,), label="blue"), seen.append)
    harness.run(asyncio.sleep(0.1))  # a backend's watch is established
    blue_item = ConfigItem(app, k, "b", "g", "blue", tags={"t": "1"})
    harness.run(store.save([blue_item, ConfigItem(app, k, "r", "g", "red")]))
    got = harness.run(store.get(ConfigQuery(app, (k,), label="red")))
    assert [(i.content, i.group, i.label) for i in got] == [("r", "g", "red")]
    assert sorted(i.content for i in harness.run(store.get(ConfigQuery(app, (k,))))) == ["b", "r"]
    [blue] = harness.run(store.get(ConfigQuery(app, (k,), group="g", label="blue")))
    assert blue.tags == {"t": "1"}
    harness.run(settle(seen, 1))
    assert [[i.content for i in batch] for batch in seen] == [["b"]]
    harness.run(store.delete(ConfigQuery(app, (k,), label="blue")))
    harness.run(settle(seen, 2))
    assert [[i.content for i in batch] for batch in seen] == [["b"], [""]]
    cancel()
    harness.run(store.save([ConfigItem(app, k, "after", "g", "blue")]))
    harness.run(asyncio.sleep(0.2))
    assert len(seen) == 2
    assert not harness.run(store.get(ConfigQuery(unique(), (k,))))


def test_a_change_through_another_sidecar_is_seen(harness: Harness, implementation: Implementation) -> None:
    if implementation.backend is None:
        return  # one process: covered above
    watcher, writer = harness.make(implementation, "watcher"), harness.make(implementation, "writer")
    app, k = unique(), unique()
    seen: list[list[ConfigItem]] = []
    watcher.watch(ConfigQuery(app, (k,)), seen.append)
    if hasattr(watcher, "wait_watching"):
        # etcd: another's change reaches a watch from its first read of the app's items on
        # (one made before is in that read, not a change): saved once it is established.
        assert harness.run(watcher.wait_watching(app, 5.0)), "the watch was never established"
    else:
        harness.run(asyncio.sleep(0.1))
    harness.run(writer.save([ConfigItem(app, k, "from-the-other")]))
    harness.run(settle(seen, 1, timeout=5.0))
    assert [i.content for batch in seen for i in batch] == ["from-the-other"]
