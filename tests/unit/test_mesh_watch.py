"""The mesh watching its config file: a reload that fails does not end the watch; a change that keeps
the mtime and size is seen; a reload after the stop does nothing; a file the next start would
refuse is refused."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from layotto_fast import settings
from layotto_fast.mesh import proxy
from layotto_fast.mesh.metrics import MeshCollector
from layotto_fast.mesh.proxy import Mesh


def _config(*services: str) -> dict[str, Any]:
    return {
        "mesh": {
            "listeners": [
                {
                    "protocol": "bolt",
                    "address": "127.0.0.1:0",
                    "routes": [{"name": s, "match": {"service": s}, "cluster": "echo"} for s in services],
                }
            ],
            "clusters": [{"name": "echo", "protocol": "bolt", "hosts": ["127.0.0.1:12200"]}],
        }
    }


def _mesh_from(path: Path, *services: str) -> Mesh:
    """A mesh started as the sidecar starts it from ``path``, written with routes for ``services``."""
    path.write_text(yaml.safe_dump(_config(*services)))
    loaded = settings.load(str(path), {})
    assert loaded.mesh is not None
    return Mesh(loaded.mesh, str(path), read_as=loaded.config_stamp)


async def _until(condition: Any, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_a_reload_that_fails_unexpectedly_keeps_the_routes_and_the_watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No stand-in: a real file that PyYAML cannot read without a RecursionError (deeply
    nested flow sequences), which is no StartupError; then a valid change is still taken."""
    monkeypatch.setattr(proxy, "WATCH_INTERVAL_SECONDS", 0.02)
    path = tmp_path / "config.yaml"
    mesh = _mesh_from(path, "com.example.A")

    async def run() -> None:
        mesh.start()
        mesh.watch()
        try:
            path.write_text("mesh: " + "[" * 5000 + "]" * 5000 + "\n")
            await _until(lambda: mesh.refused_reloads == 1, "the nested file to be refused (did the watch end?)")
            assert [r.name for r in mesh.settings.listeners[0].routes] == ["com.example.A"]

            path.write_text(yaml.safe_dump(_config("com.example.A", "com.example.B")))
            await _until(lambda: mesh.reloads == 1, "the valid change to be reloaded")
            assert [r.name for r in mesh.settings.listeners[0].routes] == ["com.example.A", "com.example.B"]
            # on /metrics, so that an operator can alert on a refused file
            reloads = next(f for f in MeshCollector(mesh).collect() if f.name == "layotto_fast_mesh_config_reloads")
            counted = {s.labels["outcome"]: s.value for s in reloads.samples if s.name.endswith("_total")}
            assert counted == {"applied": 1, "refused": 1}
        finally:
            mesh.stop()

    with caplog.at_level(logging.ERROR, logger="layotto_fast.mesh"):
        asyncio.run(run())
    refused = [r for r in caplog.records if "mesh reload refused" in r.getMessage()]
    assert len(refused) == 1
    assert "RecursionError: maximum recursion depth exceeded" in refused[0].getMessage()
    assert refused[0].exc_info is not None


def test_a_copy_that_keeps_the_old_mtime_and_size_is_still_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cp -p`` or ``rsync -t`` of a file the same size (route B renamed C): before, the watch
    compared only mtime and size and never saw the change."""
    monkeypatch.setattr(proxy, "WATCH_INTERVAL_SECONDS", 0.02)
    path = tmp_path / "config.yaml"
    mesh = _mesh_from(path, "com.example.A", "com.example.B")
    before = path.stat()

    async def run() -> None:
        mesh.start()
        mesh.watch()
        try:
            await asyncio.sleep(0.05)
            path.write_text(yaml.safe_dump(_config("com.example.A", "com.example.C")))
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            assert path.stat().st_size == before.st_size
            await _until(lambda: mesh.reloads == 1, "the copied file to be reloaded")
            assert [r.name for r in mesh.settings.listeners[0].routes] == ["com.example.A", "com.example.C"]
        finally:
            mesh.stop()

    asyncio.run(run())


def test_a_change_made_while_the_sidecar_starts_is_reloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written after the file was read and before the mesh started watching it (a ConfigMap
    update landing as the pod starts): before, the watch took the new file as already seen
    and the old routes ran until the next change."""
    monkeypatch.setattr(proxy, "WATCH_INTERVAL_SECONDS", 0.02)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_config("com.example.A")))
    loaded = settings.load(str(path), {})
    assert loaded.mesh is not None
    path.write_text(yaml.safe_dump(_config("com.example.A", "com.example.B")))
    mesh = Mesh(loaded.mesh, str(path), read_as=loaded.config_stamp)

    async def run() -> None:
        mesh.start()
        mesh.watch()
        try:
            await _until(lambda: mesh.reloads == 1, "the change made during start-up to be reloaded")
            assert [r.name for r in mesh.settings.listeners[0].routes] == ["com.example.A", "com.example.B"]
        finally:
            mesh.stop()

    asyncio.run(run())


def test_a_reload_after_the_mesh_stopped_does_nothing(tmp_path: Path) -> None:
    """A SIGHUP while the sidecar shuts down: before, an AssertionError's traceback in the log."""
    path = tmp_path / "config.yaml"
    mesh = _mesh_from(path, "com.example.A")

    async def run() -> bool:
        mesh.start()
        mesh.stop()
        return mesh.reload()

    assert asyncio.run(run()) is False
    assert (mesh.reloads, mesh.refused_reloads) == (0, 0)


def test_a_reload_refuses_a_file_whose_other_settings_the_next_start_would_refuse(tmp_path: Path) -> None:
    """Before, only the mesh section was read again: "mesh configuration reloaded", then the
    next start stopped on the file."""
    path = tmp_path / "config.yaml"
    mesh = _mesh_from(path, "com.example.A")

    async def run() -> bool:
        mesh.start()
        try:
            path.write_text(yaml.safe_dump({"log_level": "loud", **_config("com.example.A", "com.example.B")}))
            return mesh.reload()
        finally:
            mesh.stop()

    assert asyncio.run(run()) is False
    assert (mesh.reloads, mesh.refused_reloads) == (0, 1)
    assert [r.name for r in mesh.settings.listeners[0].routes] == ["com.example.A"]
