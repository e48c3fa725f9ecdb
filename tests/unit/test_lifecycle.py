"""Readiness states of the component lifecycle, without a process around it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.lifecycle import Components, Health


def manifest(
    name: str, type_: str, metadata: dict[str, str] | None = None, optional: bool = False
) -> ComponentManifest:
    return ComponentManifest(name, type_, "v1", metadata or {}, str(Path(__file__)), ignore_errors=optional)


def test_init_then_up() -> None:
    components = Components([manifest("s", "state.in-memory")])
    assert components.readiness()[0] == Health.INIT
    asyncio.run(components.init_all())
    status, detail = components.readiness()
    assert status == Health.UP and detail["s"]["status"] == "UP"


def test_required_failure_is_down_with_reason_and_optional_is_not(tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text("not json")
    broken = {"secretsFile": str(tmp_path / "secrets.json")}
    components = Components([manifest("vault", "secretstores.local.file", broken), manifest("s", "state.in-memory")])
    asyncio.run(components.init_all())
    status, detail = components.readiness()
    assert status == Health.DOWN and "secrets.json" in detail["vault"]["reason"]
    optional = Components([manifest("vault", "secretstores.local.file", broken, optional=True)])
    asyncio.run(optional.init_all())
    assert optional.readiness()[0] == Health.UP


def test_stopping_is_down() -> None:
    components = Components([manifest("s", "state.in-memory")])
    asyncio.run(components.init_all())
    components.stopping_reason = "shutting down"
    assert components.readiness()[0] == Health.DOWN
