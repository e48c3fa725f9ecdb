"""Metadata item names are read whatever their case, as daprd reads them.

Before, ``redisdb: "3"`` or ``keyprefix: appid`` in a manifest that works in Dapr was silently
ignored here (the keys landed in database 0, unprefixed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from layotto_fast.components.pubsub.memory import InMemoryConfig
from layotto_fast.components.redis_client import RedisConfig
from layotto_fast.errors import StartupError
from layotto_fast.manifest import load_file, load_folder, with_placeholders
from layotto_fast.runtime import registry
from layotto_fast.runtime.key_prefixes import key_prefix
from layotto_fast.runtime.lifecycle import Components, Health
from layotto_fast.runtime.pubsub_service import with_consumer_groups

HEAD = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: {type}
  metadata:
"""


def manifest_file(folder: Path, name: str, type_: str, items: list[tuple[str, str]], tail: str = "") -> Path:
    """``folder/name.yaml`` declaring ``items`` (name, the rest of the item's YAML) in order."""
    lines = "".join(f"    - name: {item}\n      {rest}\n" for item, rest in items)
    path = folder / f"{name}.yaml"
    path.write_text(HEAD.format(name=name, type=type_) + lines + tail)
    return path


def test_components_read_items_spelled_in_another_case(tmp_path: Path) -> None:
    path = manifest_file(
        tmp_path,
        "store",
        "state.redis",
        [("redisHost", "value: 127.0.0.1:6380"), ("redisdb", 'value: "3"'), ("enabletls", "value: true"),
         ("KEYPREFIX", "value: appid"), ("RedisPassword", "value: pw")],
    )  # fmt: skip
    [manifest] = load_file(path)
    config = RedisConfig.from_manifest(manifest)
    assert (config.db, config.tls, config.password) == (3, True, "pw")
    assert key_prefix(manifest, "shop") == "shop||"
    # The names stay as written: what a message quotes.
    assert list(manifest.metadata) == ["redisHost", "redisdb", "enabletls", "KEYPREFIX", "RedisPassword"]


def test_a_bad_value_is_named_as_the_manifest_spells_its_item(tmp_path: Path) -> None:
    path = manifest_file(tmp_path, "store", "state.redis", [("redisHost", "value: h:1"), ("redisdb", "value: three")])
    [manifest] = load_file(path)
    with pytest.raises(StartupError) as raised:
        RedisConfig.from_manifest(manifest)
    assert (raised.value.source, raised.value.field) == (str(path), "spec.metadata.redisdb")
    assert "'three'" in raised.value.problem


@pytest.mark.parametrize(
    ("type_", "items", "field"),
    [
        ("state.redis", [("redisHost", "value: h:1"), ("redistype", "value: ring")], "redistype"),
        ("state.redis", [("redisHost", "value: h:1"), ("keyprefix", "value: 'a||b'")], "keyprefix"),
        ("lock.etcd", [("ENDPOINTS", "value: 'h:notaport'")], "ENDPOINTS"),
        ("lock.etcd", [("endpoints", "value: h:1"), ("USERNAME", "value: u")], "password"),
        ("sequencer.in-memory", [("biggerthan", "value: '9223372036854775807'")], "biggerthan"),
        ("secretstores.local.file", [("secretsfile", "value: /nonexistent.json")], "secretsfile"),
        ("pubsub.jetstream", [("natsurl", "value: nats://h:1"), ("deliverpolicy", "value: sometimes")],
         "deliverpolicy"),
    ],
)  # fmt: skip
def test_every_component_names_a_bad_item_as_the_manifest_spells_it(
    tmp_path: Path, type_: str, items: list[tuple[str, str]], field: str
) -> None:
    path = manifest_file(tmp_path, "c", type_, items)
    [manifest] = load_file(path)
    with pytest.raises(StartupError) as raised:
        implementation = registry.implementation(type_)
        assert implementation is not None
        component = implementation.from_manifest(manifest)
        key_prefix(manifest, "app")
        del component
    assert raised.value.field == f"spec.metadata.{field}", raised.value


@pytest.mark.parametrize(
    "second",
    ['value: "0"', "secretKeyRef: {name: db}"],
    ids=["value", "secretKeyRef"],
)
def test_two_items_whose_names_differ_only_in_case_stop_start_up(tmp_path: Path, second: str) -> None:
    """Which of the two a component read depended on the order, and the other was ignored."""
    path = manifest_file(
        tmp_path,
        "store",
        "state.redis",
        [("redisDB", 'value: "3"'), ("redisHost", "value: h:1"), ("REDISdb", second)],
        "auth: {secretStore: vault}\n",
    )
    with pytest.raises(StartupError) as raised:
        load_file(path)
    assert (raised.value.source, raised.value.field) == (str(path), "spec.metadata[2].name")
    assert "'REDISdb' and 'redisDB' (spec.metadata[0])" in raised.value.problem


def test_an_item_given_twice_in_one_spelling_is_still_the_later_one(tmp_path: Path) -> None:
    path = manifest_file(
        tmp_path, "seq", "sequencer.in-memory", [("biggerThan", "value: 1"), ("biggerThan", "value: 2")]
    )
    [manifest] = load_file(path)
    assert dict(manifest.metadata) == {"biggerThan": "2"}


def test_a_secret_reference_is_read_whatever_the_case_of_its_item(tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text('{"greeting": "from-the-vault"}')
    manifest_file(tmp_path, "vault", "secretstores.local.file", [("SECRETSFILE", "value: secrets.json")])
    manifest_file(tmp_path, "greeter", "hello.helloworld", [("HELLO", "secretKeyRef: {name: greeting}")],
                  "auth: {secretStore: vault}\n")  # fmt: skip
    manifests = load_folder(tmp_path)
    assert "hello" in manifests[0].secret_refs and list(manifests[0].secret_refs) == ["HELLO"]
    components = Components(manifests)
    asyncio.run(components.init_all())
    assert components.readiness().status == Health.UP
    assert components.lookup("hello", "greeter", "service_name").greet("") == "from-the-vault"


def test_items_filled_in_later_are_read_whatever_the_case(tmp_path: Path) -> None:
    """The runtime's own additions (a default consumer group, placeholders) go through
    ``replace`` with a plain dict: the result must still ignore case, and a ``consumerid``
    of the user's must not get a second ``consumerID`` beside it."""
    manifest_file(tmp_path, "bus", "pubsub.in-memory", [("consumerid", 'value: "{appID}-workers"')])
    [manifest] = with_placeholders(load_folder(tmp_path), "shop", {})
    [manifest] = with_consumer_groups([manifest], "shop")
    assert list(manifest.metadata) == ["consumerid"]
    assert InMemoryConfig.from_manifest(manifest).consumer_id == "shop-workers"
