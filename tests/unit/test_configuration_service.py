"""The configuration service's rules: the default group and label, ``*``, a subscription
that watches each key once, up to a limit, and whose queue counts every byte of a change;
request metadata is not saved into the items."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from layotto_fast.errors import InvalidArgument, ResourceExhausted, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.configuration import ConfigItem
from layotto_fast.runtime.configuration_service import (
    DEFAULT_GROUP,
    DEFAULT_LABEL,
    ConfigChange,
    ConfigurationService,
    Subscription,
)
from layotto_fast.runtime.lifecycle import Components

World = tuple[asyncio.AbstractEventLoop, Components, ConfigurationService]


@pytest.fixture
def world() -> Iterator[World]:
    loop = asyncio.new_event_loop()
    components = Components([ComponentManifest("config", "configuration.in-memory", "v1", {}, str(Path(__file__)))])
    loop.run_until_complete(components.init_all())
    yield loop, components, ConfigurationService(components, "my-app")
    loop.run_until_complete(components.close_all())
    loop.close()


def watch_count(components: Components) -> int:
    store: Any = components.lookup("configuration", "config", "store_name")
    return int(store.watch_count)


def pending(loop: asyncio.AbstractEventLoop, subscription: Subscription) -> list[ConfigChange]:
    """The changes queued now (each read without waiting for more)."""
    changes: list[ConfigChange] = []

    async def drain() -> None:
        while True:
            try:
                change = await asyncio.wait_for(subscription.next(), 0.01)
            except TimeoutError:
                return
            assert change is not None
            changes.append(change)

    loop.run_until_complete(drain())
    return changes


def contents(changes: list[ConfigChange]) -> list[list[tuple[str, str]]]:
    return [[(item.key, item.content) for item in change.items] for change in changes]


# --- group and label ---------------------------------------------------------------------------


def test_a_blank_group_and_label_are_the_defaults_in_every_call(world: World) -> None:
    loop, _, service = world
    run = loop.run_until_complete
    assert (DEFAULT_GROUP, DEFAULT_LABEL) == ("default", "default")  # Layotto's etcd, nacos, in-memory stores
    run(
        service.save(
            "config",
            [
                ConfigItem("", "k", "plain"),
                ConfigItem("", "k", "spaces", "  ", " "),
                ConfigItem("", "k", "g", "g", "l"),
            ],
        )
    )
    # Saved under the defaults: "  " is blank as "" is, so the second replaced the first.
    [plain] = run(service.get("config", "", ["k"]))
    assert (plain.content, plain.group, plain.label) == ("spaces", "default", "default")
    assert [i.content for i in run(service.get("config", "", ["k"], "default", "default"))] == ["spaces"]
    assert [i.content for i in run(service.get("config", "", ["k"], "g"))] == []  # label: the default
    assert [i.content for i in run(service.get("config", "", ["k"], "g", "l"))] == ["g"]
    # "*" matches any group or label.
    assert sorted(i.content for i in run(service.get("config", "", ["k"], "*", "*"))) == ["g", "spaces"]
    assert [i.content for i in run(service.get("config", "", ["k"], "*", "l"))] == ["g"]
    # A delete without group and label deletes the default one only.
    run(service.delete("config", "", ["k"]))
    assert [(i.group, i.label) for i in run(service.get("config", "", ["k"], "*", "*"))] == [("g", "l")]
    run(service.delete("config", "", ["k"], "*", "*"))
    assert run(service.get("config", "", ["k"], "*", "*")) == []


def test_an_item_is_not_saved_under_star(world: World) -> None:
    loop, _, service = world
    with pytest.raises(InvalidArgument, match=r"items\[1\]\.group is '\*'"):
        loop.run_until_complete(service.save("config", [ConfigItem("", "a", "x"), ConfigItem("", "b", "x", "*")]))
    with pytest.raises(InvalidArgument, match=r"items\[0\]\.label is '\*'"):
        loop.run_until_complete(service.save("config", [ConfigItem("", "a", "x", "g", "*")]))
    assert loop.run_until_complete(service.get("config", "", [], "*", "*")) == []  # nothing saved


def test_a_blank_subscription_watches_the_default_group_and_label(world: World) -> None:
    loop, _, service = world
    plain, anywhere = service.subscription(), service.subscription()
    plain.add("config", "", ["k"])
    anywhere.add("config", "", ["k"], "*", "*")
    loop.run_until_complete(service.save("config", [ConfigItem("", "k", "in-g", "g"), ConfigItem("", "k", "plain")]))
    assert contents(pending(loop, plain)) == [[("k", "plain")]]
    assert sorted(contents(pending(loop, anywhere))) == [[("k", "in-g"), ("k", "plain")]]
    plain.close()
    anywhere.close()


# --- one watch per key, and a limit ------------------------------------------------------------


def test_the_same_request_twice_delivers_each_change_once(world: World) -> None:
    loop, components, service = world
    subscription = service.subscription()
    for _ in range(3):
        subscription.add("config", "", ["k"])
    subscription.add("config", "my-app", ["k", "k"], "default", " ")  # the same, spelled out
    assert watch_count(components) == 1
    loop.run_until_complete(service.save("config", [ConfigItem("", "k", "v1")]))
    assert contents(pending(loop, subscription)) == [[("k", "v1")]]
    subscription.close()
    assert watch_count(components) == 0


def test_overlapping_requests_watch_only_the_new_keys(world: World) -> None:
    loop, components, service = world
    subscription = service.subscription()
    subscription.add("config", "", ["a", "b"])
    subscription.add("config", "", ["b", "c"])
    subscription.add("config", "", ["b"], "g")  # another group: another watch
    assert watch_count(components) == 3
    loop.run_until_complete(service.save("config", [ConfigItem("", "b", "1"), ConfigItem("", "c", "2")]))
    changes = pending(loop, subscription)
    assert sorted(key for change in changes for key, _ in contents([change])[0]) == ["b", "c"]
    subscription.close()


def delivered(changes: list[ConfigChange]) -> list[tuple[str, str, str, str]]:
    return sorted((item.key, item.group, item.label, item.content) for change in changes for item in change.items)


@pytest.mark.parametrize(
    "requests",
    [
        [("g", "l"), ("*", "*")],  # the specific one first
        [("*", "*"), ("g", "l")],  # the one that covers it first
        [("g", "*"), ("*", "l"), ("g", "l")],  # two that overlap, neither covering the other
    ],  # each item saved below is in the group and label of one request at least
)
def test_overlapping_requests_of_a_key_deliver_each_change_once(world: World, requests: list[tuple[str, str]]) -> None:
    """A key watched in group g label l and again with ``*`` was watched twice, and each
    change of it in g/l queued twice."""
    loop, _, service = world
    subscription = service.subscription()
    for group, label in requests:
        subscription.add("config", "", ["k", "other"], group, label)
    items = [
        ConfigItem("", "k", "in g/l", "g", "l"),
        ConfigItem("", "k", "in g/x", "g", "x"),
        ConfigItem("", "k", "in x/l", "x", "l"),
        ConfigItem("", "other", "in g/l", "g", "l"),
    ]
    loop.run_until_complete(service.save("config", items))
    loop.run_until_complete(service.delete("config", "", ["k"], "g", "l"))
    deleted = ("k", "g", "l", "")
    expected = sorted([*((item.key, item.group, item.label, item.content) for item in items), deleted])
    assert delivered(pending(loop, subscription)) == expected
    subscription.close()


def test_a_key_watched_by_a_request_and_one_that_covers_it_counts_once(world: World) -> None:
    """Each counted against the limit: a key watched in g/l and with ``*`` took two of it."""
    _, components, service = world
    service.max_watched_keys = 2
    subscription = service.subscription()
    subscription.add("config", "", ["a", "b"], "g", "l")
    subscription.add("config", "", ["a", "b"], "*", "*")  # covers both: still 2
    subscription.add("config", "", ["a"], "g", "*")  # covered: nothing new
    assert watch_count(components) == 2
    with pytest.raises(ResourceExhausted, match="would make it 3"):
        subscription.add("config", "", ["c"], "*", "*")
    other = service.subscription()
    other.add("config", "", ["a"], "g", "*")
    other.add("config", "", ["a"], "*", "l")  # neither covers the other: 2
    with pytest.raises(ResourceExhausted, match="would make it 3"):
        other.add("config", "", ["a"], "h", "m")  # covered by neither
    subscription.close()
    other.close()
    assert watch_count(components) == 0


def test_a_subscription_past_its_limit_is_refused_naming_it(world: World) -> None:
    _, components, service = world
    service.max_watched_keys = 3
    subscription = service.subscription()
    subscription.add("config", "", ["a", "b"])
    subscription.add("config", "", ["a", "b"])  # already watched: not counted again
    with pytest.raises(ResourceExhausted, match=r"at most 3 keys.*would make it 4"):
        subscription.add("config", "", ["b", "c", "d"])
    assert watch_count(components) == 1  # the refused request watches nothing
    subscription.add("config", "", ["c"], "g")  # 3: at the limit
    with pytest.raises(ResourceExhausted, match="at most 3 keys"):
        subscription.add("config", "other-app", ["a"])
    subscription.close()
    assert watch_count(components) == 0


# --- what a subscription's queue counts --------------------------------------------------------

BIG = 600_000  # two changes of this many bytes pass a 1 MB bound; one does not


@pytest.mark.parametrize(
    ("what", "item"),
    [
        ("metadata value", ConfigItem("", "k", "v", metadata={"m": "x" * BIG})),
        ("metadata name", ConfigItem("", "k", "v", metadata={"m" * BIG: "x"})),
        ("tag value", ConfigItem("", "k", "v", tags={"t": "x" * BIG})),
        ("tag name", ConfigItem("", "k", "v", tags={"t" * BIG: "x"})),
        ("group", ConfigItem("", "k", "v", group="g" * BIG)),
        ("label", ConfigItem("", "k", "v", label="l" * BIG)),
        ("content in UTF-8", ConfigItem("", "k", "é" * (BIG // 2))),  # 300 000 characters, 600 000 bytes
        ("key in UTF-8", ConfigItem("", "ké" + "é" * (BIG // 2), "v")),
    ],
)
def test_a_slow_subscriber_is_dropped_by_the_bytes_of_every_field(world: World, what: str, item: ConfigItem) -> None:
    """The queue counted only len(key) + len(content): 200 saves with 1 MB of metadata each were
    held as 890 bytes, and text in characters, so a slow subscriber held far past ``max_bytes``."""
    loop, _, service = world
    service.max_bytes = 1_000_000
    slow = service.subscription()
    slow.add("config", "", [item.key], "*", "*")
    for _ in range(2):
        loop.run_until_complete(service.save("config", [item]))
    assert service.dropped_subscriptions == 1, what
    with pytest.raises(ResourceExhausted, match="too slow"):
        loop.run_until_complete(slow.next())
    slow.close()


def test_a_change_s_size_is_the_utf8_bytes_of_its_items(world: World) -> None:
    loop, _, service = world
    subscription = service.subscription()
    subscription.add("config", "", ["ké"], "*", "*")
    item = ConfigItem("", "ké", "vé", "g", "l", tags={"t": "1é"}, metadata={"mé": "2"})
    loop.run_until_complete(service.save("config", [item, replace(item, group="h")]))
    [change] = pending(loop, subscription)
    # key, content, group, label, the tag and the metadata entry: 16 bytes, 13 characters
    one = sum(len(text.encode()) for text in ("ké", "vé", "g", "l", "t", "1é", "mé", "2"))
    assert one == 16 and change.size == 2 * one
    subscription.close()


def test_a_subscriber_that_keeps_reading_is_never_dropped(world: World) -> None:
    """Each change read gives back the bytes it was counted for."""
    loop, _, service = world
    service.max_bytes = 1_000_000
    subscription = service.subscription()
    subscription.add("config", "", ["k"])
    for i in range(20):  # 20 x 300 KB of metadata, each read before the next
        loop.run_until_complete(service.save("config", [ConfigItem("", "k", str(i), metadata={"m": "x" * 300_000})]))
        assert contents(pending(loop, subscription)) == [[("k", str(i))]]
    assert service.dropped_subscriptions == 0
    subscription.close()


def test_one_batch_past_the_bounds_is_kept_for_a_subscriber_that_had_read_everything(world: World) -> None:
    """A batch was checked part by part against ``max_bytes``: one save (or one Redis read,
    one etcd catch-up) of 1.5 MB dropped a subscriber whose queue was empty."""
    loop, _, service = world
    service.max_bytes = 1_000_000
    subscription = service.subscription()
    keys = [f"k{i}" for i in range(5)]
    subscription.add("config", "", keys)
    items = [ConfigItem("", key, "x" * 300_000) for key in keys]  # 1.5 MB in one batch
    loop.run_until_complete(service.save("config", items))
    assert service.dropped_subscriptions == 0
    assert sorted(key for change in pending(loop, subscription) for key, _ in contents([change])[0]) == keys
    # Behind by one batch, the next one past the bounds drops it.
    loop.run_until_complete(service.save("config", items))
    loop.run_until_complete(service.save("config", items))
    assert service.dropped_subscriptions == 1
    subscription.close()


def test_one_batch_over_several_watches_is_kept_while_the_reader_waits(world: World) -> None:
    """One batch reaches each watch of a subscription in turn: the second found the first's
    share queued and dropped a subscriber that had read everything."""
    loop, _, service = world
    service.max_bytes = 1_000_000
    subscription = service.subscription()
    subscription.add("config", "", ["k0", "k1", "k2"])
    subscription.add("config", "", ["k3", "k4"])
    reader = loop.create_task(subscription.next())
    loop.run_until_complete(asyncio.sleep(0.01))  # it waits for a change
    items = [ConfigItem("", f"k{i}", "x" * 300_000) for i in range(5)]  # 1.5 MB in one batch
    loop.run_until_complete(service.save("config", items))
    assert service.dropped_subscriptions == 0
    first = loop.run_until_complete(reader)
    assert first is not None
    read = [key for change in [first, *pending(loop, subscription)] for key, _ in contents([change])[0]]
    assert sorted(read) == [f"k{i}" for i in range(5)]
    subscription.close()


def test_ending_the_subscriptions_ends_the_open_ones_and_those_made_after(world: World) -> None:
    loop, _, service = world
    open_one = service.subscription()
    open_one.add("config", "", ["k"])
    service.end_subscriptions("the sidecar is shutting down")
    with pytest.raises(Unavailable, match="shutting down"):
        loop.run_until_complete(open_one.next())
    later = service.subscription()
    with pytest.raises(Unavailable, match="shutting down"):
        loop.run_until_complete(later.next())
    open_one.close()
    later.close()
    assert service.active_subscriptions == 0


# --- request metadata --------------------------------------------------------------------------


def test_request_metadata_is_not_saved_into_the_items(world: World) -> None:
    """Layotto's SaveConfiguration drops the request's metadata (its stores' SetRequest has
    none); it was written into every item without metadata of its own and came back from a get
    and in a subscription's changes."""
    loop, _, service = world
    run = loop.run_until_complete
    subscription = service.subscription()
    subscription.add("config", "", ["plain", "own"])
    items = [ConfigItem("", "plain", "v"), ConfigItem("", "own", "v", metadata={"mine": "1"})]
    run(service.save("config", items, {"requestOption": "x"}))
    saved = {item.key: item.metadata for item in run(service.get("config", "", ["plain", "own"]))}
    assert saved == {"plain": {}, "own": {"mine": "1"}}
    pushed = {item.key: item.metadata for change in pending(loop, subscription) for item in change.items}
    assert pushed == {"plain": {}, "own": {"mine": "1"}}
    subscription.close()


def test_a_batch_of_changes_past_a_message_s_size_goes_out_in_parts(world: World) -> None:
    """A backend's batch (a Redis read of many keys, an etcd catch-up) was one response: three
    2 MiB items made a 6 MiB message, over the 4 MiB limit, which ended the stream though each
    item fitted. Each part now holds at most 1 MiB of items (one larger item alone)."""
    loop, _, service = world
    subscription = service.subscription()
    subscription.add("config", "", ["a", "b", "c", "d"])
    big = "x" * (2 * 1024 * 1024)
    small = [ConfigItem("", key, "v") for key in ("c", "d")]
    loop.run_until_complete(service.save("config", [ConfigItem("", "a", big), ConfigItem("", "b", big), *small]))
    changes = pending(loop, subscription)
    assert [[item.key for item in change.items] for change in changes] == [["a"], ["b"], ["c", "d"]]
