"""Manifest and settings parsing: every problem names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from layotto_fast import settings
from layotto_fast.errors import StartupError
from layotto_fast.manifest import load_file, load_folder

GOOD = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store
spec:
  type: state.in-memory
  version: v1
  metadata:
    - name: port
      value: 6379
    - name: enabled
      value: true
"""


def test_multi_document_file_skips_other_kinds(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(GOOD + "---\napiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata: {name: s}\n---\n")
    [manifest] = load_file(path)
    assert manifest.name == "store" and manifest.block == "state"
    assert manifest.metadata == {"port": "6379", "enabled": "true"}


def test_metadata_item_without_name(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD.replace("- name: enabled", "- nome: enabled"))
    with pytest.raises(StartupError) as raised:
        load_file(path)
    assert raised.value.field == "spec.metadata[1].name" and str(path) in str(raised.value)


def test_missing_folder() -> None:
    with pytest.raises(StartupError) as raised:
        load_folder(Path("/nonexistent-folder"))
    assert raised.value.field == "resources-path"


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("grpc-port: 1000\nactuator_port: 2000\nresources_path: comps\n")
    loaded = settings.load(str(config), {"grpc_port": 3000, "actuator_port": None})
    assert loaded.grpc_port == 3000 and loaded.actuator_port == 2000
    assert loaded.resources_path == str(tmp_path / "comps")
    assert settings.load(None, {}).grpc_port == 34904


def test_settings_reject_bool_as_port(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("grpc_port: true\n")
    with pytest.raises(StartupError) as raised:
        settings.load(str(config), {})
    assert raised.value.field == "grpc_port"
