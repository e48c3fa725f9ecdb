"""Readiness states of the component lifecycle, without a process around it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from layotto_fast.errors import FailedPrecondition, InvalidArgument, StartupError
from layotto_fast.manifest import ComponentManifest, load_file
from layotto_fast.runtime import lifecycle, registry
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
    assert report.entries["vault"]["required"] is True
    optional = Components([manifest("vault", "secretstores.local.file", broken, optional=True)])
    asyncio.run(optional.init_all())
    report = optional.readiness()
    # DOWN, and said not to count, as a JSON boolean: a probe reader can tell which entries matter.
    assert report.status == Health.UP and report.entries["vault"]["status"] == "DOWN"
    assert report.entries["vault"]["required"] is False


def test_a_required_component_down_wins_over_one_still_initialising() -> None:
    """INIT was checked first: a required component that had failed showed as INIT for as long
    as another one's init ran (up to its initTimeout); Layotto lets DOWN win."""
    for optional in (False, True):
        components = Components([manifest("a", "state.in-memory", optional=optional), manifest("b", "state.in-memory")])
        components.slots[0].health, components.slots[0].reason = Health.DOWN, "init failed: refused"
        assert components.slots[1].health == Health.INIT
        assert components.readiness().status == (Health.INIT if optional else Health.DOWN)


def test_stopping_is_down() -> None:
    components = Components([manifest("s", "state.in-memory")])
    asyncio.run(components.init_all())
    components.stopping_reason = "shutting down"
    report = components.readiness({"status": "UP", "reason": "", "required": False})
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
    app = {"status": "DOWN", "reason": "unreachable: connection refused", "required": False}
    report = components.readiness(app)
    assert report.status == Health.UP and report.entries["app"] == app
    assert components.liveness().status == Health.UP


class _CancelledInside:
    """A component whose client is closed under its running calls while ``closed_under`` is
    set (an aetcd or grpc.aio client on a failover or a token renewal): they raise CancelledError."""

    def __init__(self, closed_under: bool = False) -> None:
        self.closed_under = closed_under
        self.inits = self.pings = 0

    async def init(self) -> None:
        self.inits += 1
        if self.closed_under:
            raise asyncio.CancelledError

    async def ping(self) -> None:
        self.pings += 1
        if self.closed_under:
            raise asyncio.CancelledError

    async def close(self) -> None:
        return None


def test_a_cancelled_error_from_a_components_ping_is_its_failure_and_the_checks_go_on() -> None:
    """Before, one CancelledError out of a ping ended that component's health checks for good:
    its health stayed as it was (UP here, with the backend gone)."""

    async def run() -> None:
        components = Components([manifest("s", "state.in-memory")])
        inside = _CancelledInside()
        components.slots[0].component = inside
        await components.init_all()
        slot = components.slots[0]
        assert slot.health == Health.UP
        watching = asyncio.create_task(components.watch_health(0.02))
        try:
            inside.closed_under = True
            await asyncio.sleep(0.2)
            assert slot.health == Health.DOWN and slot.reason.startswith("ping cancelled inside the component")
            pinged = inside.pings
            await asyncio.sleep(0.2)
            assert inside.pings > pinged  # still checked
            inside.closed_under = False
            await asyncio.sleep(0.2)
            assert slot.health == Health.UP and slot.reason == ""
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        assert watching.cancelled()  # its own cancellation still ends it

    asyncio.run(run())


class _LosesACancel:
    """A component whose ping, sent when the health checks are stopped, loses the cancel as
    Python 3.11's ``wait_for`` in redis-py's send does (runtime/timeouts.py): a stand-in for
    that timing, which cannot be had on demand."""

    def __init__(self) -> None:
        self.pinging = asyncio.Event()
        self.lost = False

    async def init(self) -> None:
        return None

    async def ping(self) -> None:
        self.pinging.set()
        if self.lost:
            return
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            self.lost = True

    async def close(self) -> None:
        return None


def test_health_checks_stop_when_a_components_ping_lost_their_cancel() -> None:
    """Before, the check went on pinging every interval, and the stop waited for it forever
    (asyncio.run's own end too, at the sidecar's exit)."""

    async def run() -> None:
        components = Components([manifest("s", "state.in-memory")])
        loses = _LosesACancel()
        components.slots[0].component = loses
        await components.init_all()
        watching = asyncio.create_task(components.watch_health(0.02))
        await asyncio.wait_for(loses.pinging.wait(), 5.0)
        watching.cancel()
        await asyncio.wait_for(asyncio.gather(watching, return_exceptions=True), 2.0)
        assert loses.lost and watching.cancelled()

    asyncio.run(run())


def test_a_cancelled_error_from_a_components_init_is_a_failed_init_retried_later() -> None:
    """Before, it went out of ``init_all`` and ended the start-up."""

    async def run() -> None:
        components = Components([manifest("s", "state.in-memory"), manifest("t", "state.in-memory")])
        inside = _CancelledInside(closed_under=True)
        components.slots[0].component = inside
        await components.init_all()
        assert components.slots[0].health == Health.DOWN and components.slots[1].health == Health.UP
        assert components.slots[0].reason.startswith("init failed: cancelled inside the component")
        inside.closed_under = False
        await components.check_all()
        assert components.slots[0].health == Health.UP and inside.inits == 2

    asyncio.run(run())


@pytest.mark.parametrize("name", ["app", "sidecar"])
def test_a_component_named_as_a_readiness_entry_of_the_sidecars_stops_start_up(name: str) -> None:
    """Before, readiness keyed its entries by name and the app's (``app``) or the stop's
    (``sidecar``) overwrote the component's: hidden, its DOWN shown as nothing."""
    with pytest.raises(StartupError, match=rf"test_lifecycle\.py: metadata\.name: '{name}' is reserved") as raised:
        Components([manifest("s", "state.in-memory"), manifest(name, "state.in-memory")])
    assert "choose another name" in str(raised.value)
    # ``check`` refuses it too, in a manifest scoped to another app id: that app's serve would.
    scoped = dataclasses.replace(manifest(name, "lock.in-memory"), scopes=("billing",))
    Components([scoped], app_id="orders")  # not loaded here
    with pytest.raises(StartupError, match=r"metadata\.name"):
        Components([scoped], app_id="orders", check_out_of_scope=True)
    # Names that only look alike are components like any other.
    components = Components([manifest(f"{name}-state", "state.in-memory"), manifest(name.upper(), "state.in-memory")])
    asyncio.run(components.init_all())
    components.stopping_reason = "shutting down"
    entries = components.readiness({"status": "UP", "reason": "", "required": False}).entries
    assert list(entries) == ["sidecar", f"{name}-state", name.upper(), "app"]


class _Silent:
    """A component whose backend never answers the step named by ``hangs`` ("init" or "ping")."""

    def __init__(self, hangs: str) -> None:
        self.hangs = hangs

    async def init(self) -> None:
        if self.hangs == "init":
            await asyncio.sleep(60)

    async def ping(self) -> None:
        if self.hangs == "ping":
            await asyncio.sleep(60)

    async def close(self) -> None:
        return None


def test_a_timeout_says_which_step_after_how_long_and_the_backend_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, the reason read "init failed: timed out", or "timed out" for a ping: not what,
    nor for how long, nor which backend."""
    monkeypatch.setattr(lifecycle, "PING_TIMEOUT_SECONDS", 0.05)
    components = Components([manifest("cache", "state.redis", {"redisHost": "10.0.0.5:6379"})], 0.05)
    silent = _Silent("init")
    components.slots[0].component = silent
    asyncio.run(components.init_all())
    assert components.slots[0].reason == "init failed: did not finish within 0.05 s (redisHost 10.0.0.5:6379)"
    silent.hangs = "ping"
    asyncio.run(components.check_all())  # the init is retried, and succeeds
    assert components.slots[0].health == Health.UP
    asyncio.run(components.check_all())
    assert components.slots[0].reason == "ping did not answer within 0.05 s (redisHost 10.0.0.5:6379)"

    # A URL's credentials are left out; a component with no address in its manifest says the limit.
    bus = manifest("bus", "pubsub.jetstream", {"natsURL": "nats://user:pw@10.0.0.6:4222, nats://10.0.0.7:4222"})
    components = Components([bus, manifest("s", "state.in-memory")], 0.05)
    for slot in components.slots:
        slot.component = _Silent("init")
    asyncio.run(components.init_all())
    reasons = [slot.reason for slot in components.slots]
    assert reasons == [
        "init failed: did not finish within 0.05 s (natsURL nats://10.0.0.6:4222,nats://10.0.0.7:4222)",
        "init failed: did not finish within 0.05 s",
    ]
    assert "pw" not in reasons[0]


class _NeverCloses:
    async def init(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        await asyncio.sleep(60)


def test_close_all_abandons_at_its_deadline_what_is_still_closing(caplog: pytest.LogCaptureFixture) -> None:
    """Before, a close waited on a backend that stopped answering for as long as its client
    would, past the sidecar's shutdown grace."""

    async def run() -> float:
        components = Components([manifest("stuck", "state.in-memory"), manifest("s", "state.in-memory")])
        components.slots[0].component = _NeverCloses()
        await components.init_all()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await components.close_all(began + 0.1)
        return loop.time() - began

    with caplog.at_level(logging.WARNING, logger="layotto_fast.runtime.lifecycle"):
        took = asyncio.run(run())
    assert took < 1.0
    assert "component stuck (state.in-memory) did not close by the end of the shutdown grace: abandoned" in caplog.text
    assert "component s " not in caplog.text


@pytest.mark.parametrize("block", registry.BLOCKS)
def test_a_block_with_no_component_configured_is_failed_precondition(block: str) -> None:
    """As Layotto ("lock store is not configured", "Sequencer store is not configured", the
    secret and state stores alike) and Dapr: it answered INVALID_ARGUMENT "(known: none
    configured)". An empty name changes nothing; an unknown one among those configured is
    still INVALID_ARGUMENT."""
    components = Components([])
    for name in ("s", ""):
        with pytest.raises(FailedPrecondition, match=rf"^no {block} component is configured \(store_name '{name}'\)"):
            components.lookup(block, name, "store_name")
    # A component of another block, under the name asked for: this block still has none.
    elsewhere = manifest("x", "state.in-memory" if block == "hello" else "hello.helloworld")
    with pytest.raises(FailedPrecondition, match=f"no {block} component is configured"):
        Components([elsewhere]).lookup(block, "x", "store_name")


def test_an_unknown_name_among_configured_components_is_invalid_argument() -> None:
    components = Components([manifest("ours", "state.in-memory")])
    with pytest.raises(InvalidArgument, match=r"store_name 'nope': no state component of that name \(known: ours\)"):
        components.lookup("state", "nope", "store_name")
    with pytest.raises(InvalidArgument, match="store_name is empty"):
        components.lookup("state", "", "store_name")


class _InitTakes:
    """A component whose init takes ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def init(self) -> None:
        await asyncio.sleep(self.seconds)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_a_manifest_s_init_timeout_is_its_component_s_own(tmp_path: Path) -> None:
    """Dapr's spec.initTimeout was read and ignored: a backend slower to start than the
    sidecar's component_init_timeout_seconds never came UP, whatever the manifest allowed."""
    path = tmp_path / "m.yaml"
    path.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: slow}\n"
        "spec: {type: state.in-memory, version: v1, initTimeout: 300ms}\n"
        "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: other}\n"
        "spec: {type: state.in-memory, version: v1}\n"
    )
    slow, other = load_file(path)
    assert (slow.init_timeout, other.init_timeout) == (0.3, None)
    components = Components([slow, other], 0.05)
    for slot in components.slots:
        slot.component = _InitTakes(0.15)
    asyncio.run(components.init_all())
    assert [slot.health for slot in components.slots] == [Health.UP, Health.DOWN]
    assert components.slots[1].reason == "init failed: did not finish within 0.05 s"


@pytest.mark.parametrize("raw", ["30", "0s", "-1s", "soon", "[1]"])
def test_a_bad_init_timeout_names_the_field(tmp_path: Path, raw: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: s}}\n"
        f"spec: {{type: state.in-memory, version: v1, initTimeout: '{raw}'}}\n"
    )
    with pytest.raises(StartupError) as raised:
        load_file(path)
    assert raised.value.field == "spec.initTimeout"
