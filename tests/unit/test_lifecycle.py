"""Readiness states of the component lifecycle, without a process around it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from layotto_fast.errors import InvalidArgument, StartupError
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.lifecycle import Components, Health


def manifest(
    name: str, type_: str, metadata: dict[str, str] | None = None, optional: bool = False
) -> ComponentManifest:
    return ComponentManifest(name, type_, "v1", metadata or {}, str(Path(__file__)), ignore_errors=optional)


def test_init_then_up() -> None:
    components = Components([manifest("s", "state.in-memory")])
    assert components.readiness().status == Health.INIT
    asyncio.run(components.init_all())
    report = components.readiness()
    assert report.status == Health.UP and report.entries["s"]["status"] == "UP"


def test_required_failure_is_down_with_reason_and_optional_is_not(tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text("not json")
    broken = {"secretsFile": str(tmp_path / "secrets.json")}
    components = Components([manifest("vault", "secretstores.local.file", broken), manifest("s", "state.in-memory")])
    asyncio.run(components.init_all())
    report = components.readiness()
    assert report.status == Health.DOWN and "secrets.json" in report.entries["vault"]["reason"]
    optional = Components([manifest("vault", "secretstores.local.file", broken, optional=True)])
    asyncio.run(optional.init_all())
    assert optional.readiness().status == Health.UP


def test_stopping_is_down() -> None:
    components = Components([manifest("s", "state.in-memory")])
    asyncio.run(components.init_all())
    components.stopping_reason = "shutting down"
    report = components.readiness({"status": "UP", "reason": "", "required": "false"})
    assert report.status == Health.DOWN
    assert list(report.entries) == ["sidecar", "s", "app"]  # the reason first, the app's own entry last
    assert report.entries["sidecar"] == {"status": "DOWN", "reason": "shutting down"}
    assert components.liveness().entries == {"process": {"status": "DOWN", "reason": "shutting down"}}


def test_a_component_scoped_to_other_apps_is_not_loaded(caplog: pytest.LogCaptureFixture) -> None:
    def scoped(name: str, *scopes: str) -> ComponentManifest:
        return dataclasses.replace(manifest(name, "state.in-memory"), scopes=scopes)

    given = [scoped("theirs", "billing"), scoped("ours", "billing", "orders"), scoped("everyone")]
    with caplog.at_level(logging.INFO, logger="layotto_fast.runtime.lifecycle"):
        components = Components(given, app_id="orders")
    asyncio.run(components.init_all())
    assert sorted(components.ready("state")) == ["everyone", "ours"]
    with pytest.raises(InvalidArgument, match="no state component of that name"):
        components.lookup("state", "theirs", "store_name")
    assert f"{Path(__file__)}: component theirs is scoped to billing, not to app id orders" in caplog.text
    assert len(Components(given).slots) == 3  # no app id: all of them
    # ``check`` builds the other apps' components too, so that their config is checked, but loads only its own.
    checked = Components(given, app_id="orders", check_out_of_scope=True)
    assert [slot.manifest.name for slot in checked.slots] == ["ours", "everyone"]
    bad = dataclasses.replace(manifest("ids", "sequencer.in-memory", {"biggerThan": "abc"}), scopes=("billing",))
    Components([bad], app_id="orders")  # serve never builds it
    with pytest.raises(StartupError, match=r"spec\.metadata\.biggerThan"):
        Components([bad], app_id="orders", check_out_of_scope=True)


class _Flaky:
    """A component whose first init fails and whose pings fail with a message alike."""

    def __init__(self) -> None:
        self.inits = self.pings = 0

    async def init(self) -> None:
        self.inits += 1
        if self.inits == 1:
            raise RuntimeError("backend not there yet")

    async def ping(self) -> None:
        self.pings += 1
        raise RuntimeError("init failed on the backend's side")  # not our init: ping again

    async def close(self) -> None:
        return None


def test_a_failed_init_is_retried_by_the_health_check_and_then_pinged() -> None:
    components = Components([manifest("s", "state.in-memory")])
    flaky = _Flaky()
    components.slots[0].component = flaky
    asyncio.run(components.init_all())
    assert components.slots[0].health == Health.DOWN and components.slots[0].reason.startswith("init failed")
    asyncio.run(components.check_all())
    assert (flaky.inits, flaky.pings, components.slots[0].health) == (2, 0, Health.UP)
    asyncio.run(components.check_all())
    assert components.slots[0].reason == "init failed on the backend's side"
    asyncio.run(components.check_all())  # a ping's failure, whatever it reads, asks for another ping
    assert (flaky.inits, flaky.pings) == (2, 2)


class _SlowInit:
    """A component whose init fails at first and then takes its whole timeout."""

    def __init__(self) -> None:
        self.inits = 0

    async def init(self) -> None:
        self.inits += 1
        if self.inits == 1:
            raise RuntimeError("host unreachable")
        await asyncio.sleep(60)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class _Switch:
    """A component whose ping fails while ``down`` is set."""

    def __init__(self) -> None:
        self.down = False

    async def init(self) -> None:
        return None

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("backend restarting")

    async def close(self) -> None:
        return None


def test_a_slow_check_delays_no_other_components_health() -> None:
    """Before, one round checked every component together and the next began only when the
    slowest was done: an init retried for its whole timeout kept every other component's DOWN
    (and its recovery) waiting that long."""

    async def run() -> None:
        components = Components([manifest("slow", "state.in-memory"), manifest("s", "state.in-memory")], 2.0)
        slow, switch = _SlowInit(), _Switch()
        components.slots[0].component, components.slots[1].component = slow, switch
        await components.init_all()
        assert components.slots[0].health == Health.DOWN and components.slots[1].health == Health.UP
        watching = asyncio.create_task(components.watch_health(0.05))
        try:
            await asyncio.sleep(0.2)  # the slow init retry is under way, for 2 s
            assert slow.inits == 2
            switch.down = True
            await asyncio.sleep(0.3)
            assert components.slots[1].health == Health.DOWN
            switch.down = False
            await asyncio.sleep(0.3)
            assert components.slots[1].health == Health.UP
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    asyncio.run(run())


def test_the_apps_entry_is_shown_but_never_makes_the_sidecar_down() -> None:
    components = Components([manifest("s", "state.in-memory")])
    asyncio.run(components.init_all())
    app = {"status": "DOWN", "reason": "unreachable: connection refused", "required": "false"}
    report = components.readiness(app)
    assert report.status == Health.UP and report.entries["app"] == app
    assert components.liveness().status == Health.UP
