"""``secretstores.local.file`` flattens a JSON file as Dapr's local file store does (Layotto
reuses it): nested objects by member name and arrays by index, joined with
``nestedSeparator``; with ``multiValued: true`` a top-level array is no secret."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from layotto_fast.errors import NotFound
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.secrets import SecretStore


def store(tmp_path: Path, document: Any, **metadata: str) -> SecretStore:
    path = tmp_path / "secrets.json"
    path.write_bytes(orjson.dumps(document))
    manifest = ComponentManifest("vault", "secretstores.local.file", "v1", {"secretsFile": str(path), **metadata}, "m")
    component = registry.build(manifest)
    assert isinstance(component, SecretStore)
    asyncio.run(component.init())
    return component


def bulk(secrets: SecretStore) -> dict[str, dict[str, str]]:
    return asyncio.run(secrets.bulk_get())


def get(secrets: SecretStore, key: str) -> dict[str, str]:
    return asyncio.run(secrets.get(key))


def test_an_array_is_flattened_by_index(tmp_path: Path) -> None:
    """``{"hosts": ["a", "b"]}`` was one secret ``hosts`` holding '["a","b"]'; Dapr's store
    makes ``hosts:0`` and ``hosts:1``, and so does this one, inside objects and arrays too."""
    secrets = store(tmp_path, {"hosts": ["a", "b"], "db": {"replicas": [{"host": "r0", "port": 1}, ["x"]]}, "none": []})
    assert bulk(secrets) == {
        "hosts:0": {"hosts:0": "a"},
        "hosts:1": {"hosts:1": "b"},
        "db:replicas:0:host": {"db:replicas:0:host": "r0"},
        "db:replicas:0:port": {"db:replicas:0:port": "1"},
        "db:replicas:1:0": {"db:replicas:1:0": "x"},
    }  # an empty array, as an empty object, holds no secret
    assert get(secrets, "hosts:1") == {"hosts:1": "b"}
    with pytest.raises(NotFound, match="'hosts'"):
        get(secrets, "hosts")


def test_an_array_s_indexes_take_the_nested_separator(tmp_path: Path) -> None:
    secrets = store(tmp_path, {"hosts": ["a"], "db": {"ports": [5432]}}, nestedSeparator="__")
    assert bulk(secrets) == {"hosts__0": {"hosts__0": "a"}, "db__ports__0": {"db__ports__0": "5432"}}


def test_an_empty_nested_separator_is_the_default_one(tmp_path: Path) -> None:
    """As Dapr reads it (a templated manifest leaves it empty): names were joined with nothing."""
    secrets = store(tmp_path, {"redis": {"password": "p"}}, nestedSeparator="")
    assert get(secrets, "redis:password") == {"redis:password": "p"}


def test_multi_valued_flattens_arrays_inside_a_secret_and_skips_a_top_level_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In Dapr's multiValued mode a top-level entry is a secret when it is a string or an
    object (flattened, arrays by index); a top-level array is skipped (here the log says so)."""
    document = {"db": {"hosts": ["a", "b"], "user": "u"}, "token": "t", "hosts": ["a", "b"]}
    with caplog.at_level(logging.WARNING, logger="layotto_fast.components.secretstores.local_file"):
        secrets = store(tmp_path, document, multiValued="true")
    assert bulk(secrets) == {"db": {"hosts:0": "a", "hosts:1": "b", "user": "u"}, "token": {"token": "t"}}
    with pytest.raises(NotFound, match="'hosts'"):
        get(secrets, "hosts")
    assert "top-level arrays are no secrets (as in Dapr), skipped: hosts" in caplog.text
