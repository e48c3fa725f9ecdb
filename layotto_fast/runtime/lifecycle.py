"""Component lifecycle and the health the actuator reports.

Start-up is INIT until every component has initialised; a required component
(one without ``spec.ignoreErrors: true``) that fails to initialise or stops
answering its ping makes the sidecar DOWN with the reason, and comes back UP by
itself when its backend answers again (a failed init is retried). Only UP
components are handed to the services; a call that names one that is not UP is
UNAVAILABLE with the reason, one to a building block with no component configured
FAILED_PRECONDITION (as in Layotto and Dapr), and one that names none of those configured
INVALID_ARGUMENT. Shutdown turns the sidecar DOWN before anything stops, so a platform
stops routing first.

A component's ``init`` has the init timeout and its ``ping`` PING_TIMEOUT_SECONDS; the
reason of one that runs out says which step, the limit and the backend address from its
manifest (``init failed: did not finish within 10 s (redisHost 10.0.0.5:6379)``). A
CancelledError raised inside a component (its client closed under a running call) is that
component's failure like any other, not the end of its health checks.

Readiness shows each component under its name, beside the entries ``app`` (the app, when
there is one) and ``sidecar`` (why it is stopping): a component named either would be hidden
by them, so those names stop start-up, naming the file and ``metadata.name``.

Secret stores start first: a component whose metadata names secrets
(``secretKeyRef``) is built only once its store has answered them, because building
parses the typed config. A reference that cannot be resolved stops start-up.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self, cast

from layotto_fast.errors import FailedPrecondition, InvalidArgument, StartupError, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.component import Component
from layotto_fast.runtime.metadata import without_credentials
from layotto_fast.runtime.secrets import SecretStore
from layotto_fast.runtime.timeouts import end_if_cancelled

log = logging.getLogger(__name__)

# A ping slower than this counts as a failure: with the default 2 s between checks,
# a backend that stops answering shows as DOWN within about 4 s.
PING_TIMEOUT_SECONDS = 2.0

# Readiness entries that are not components: a component may not take these names.
APP_ENTRY = "app"  # the app's connection (AppSubscriptions.health), when there is an app
SIDECAR_ENTRY = "sidecar"  # why the sidecar is DOWN while it stops
RESERVED_NAMES = (APP_ENTRY, SIDECAR_ENTRY)

# Metadata items that hold a component's backend address, shown in the reason of a timeout.
ADDRESS_ITEMS = ("redisHost", "endpoints", "natsURL")


class Health(enum.StrEnum):
    INIT = "INIT"
    UP = "UP"
    DOWN = "DOWN"


@dataclass(frozen=True)
class HealthReport:
    """The sidecar's status and, by name, each entry behind it (status, reason, and what
    else describes it), as a probe reads them."""

    status: Health
    entries: dict[str, Mapping[str, object]]


@dataclass
class Slot:
    manifest: ComponentManifest
    component: Component
    health: Health = Health.INIT
    reason: str = ""
    initialised: bool = False  # init() has succeeded: health checks ping it, else they retry init()

    @property
    def required(self) -> bool:
        return not self.manifest.ignore_errors


class AwaitingSecrets:
    """Holds the slot of a component whose metadata waits for its secrets until it is built.

    Its slot stays INIT until ``start_secret_stores`` puts the real component in, so it is
    never handed out; starting it anyway is a bug, said so rather than reported UP.
    """

    def __init__(self, unresolved: str = "") -> None:
        self._unresolved = unresolved  # why its secrets could not be read (an optional one's)

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls()

    async def init(self) -> None:
        raise RuntimeError(self._unresolved or "not built: its secret references are not resolved")

    async def ping(self) -> None:
        await self.init()

    async def close(self) -> None:
        return None


class Components:
    """Every declared component, by building block and name."""

    def __init__(
        self,
        manifests: list[ComponentManifest],
        init_timeout: float = 10.0,
        app_id: str | None = None,
        *,
        check_out_of_scope: bool = False,
    ) -> None:
        """``app_id``: the sidecar's, to load only the components scoped to it; None: all.

        ``check_out_of_scope`` (``check``): build the components scoped to other app ids too,
        after the loaded ones, and drop them, so that every manifest's config is checked.
        """
        loaded, out_of_scope = (manifests, []) if app_id is None else _by_scope(manifests, app_id)
        stores = _secret_store_names(loaded)
        self.slots = [Slot(m, _build_or_wait(m, stores)) for m in loaded]
        if check_out_of_scope:
            # Which secret stores its own app ids load is theirs to check: any declared one will do.
            every_store = _secret_store_names(manifests)
            for manifest in out_of_scope:
                _build_or_wait(manifest, every_store)
        self._by_block: dict[str, dict[str, Slot]] = {block: {} for block in registry.BLOCKS}
        # Per block, the components that are UP; services keep these dicts and read them per call.
        self._ready: dict[str, dict[str, Any]] = {block: {} for block in registry.BLOCKS}
        for slot in self.slots:
            self._by_block.setdefault(slot.manifest.block, {})[slot.manifest.name] = slot
            self._ready.setdefault(slot.manifest.block, {})
        self._init_timeout = init_timeout
        self.started_at = time.time()
        self.stopping_reason = ""

    def ready(self, block: str) -> dict[str, Any]:
        """The components of ``block`` that are UP, by name: a live dict, kept current."""
        return self._ready.setdefault(block, {})

    def manifests(self, block: str) -> dict[str, ComponentManifest]:
        """The manifests of ``block``'s components, by name."""
        return {name: slot.manifest for name, slot in self._by_block.get(block, {}).items()}

    def lookup(self, block: str, name: str, field: str, *, none_is_unknown: bool = False) -> Any:
        """The named component when it is UP; otherwise the error that says why not.

        No component of ``block`` configured at all is FailedPrecondition, whatever the name
        (Layotto's "lock store is not configured", Dapr's "state store is not configured"),
        unless ``none_is_unknown``: then it is the empty or unknown name it also is. An empty
        or unknown name among configured ones is InvalidArgument."""
        declared = self._by_block.get(block, {})
        if not declared and not none_is_unknown:
            raise FailedPrecondition(f"no {block} component is configured ({field} {name!r})")
        if not name:
            raise InvalidArgument(f"{field} is empty: name a {block} component")
        slot = declared.get(name)
        if slot is None:
            known = f"known: {', '.join(sorted(declared))}" if declared else f"no {block} component is configured"
            raise InvalidArgument(f"{field} {name!r}: no {block} component of that name ({known})")
        if slot.health != Health.UP:
            why = f": {slot.reason}" if slot.reason else ""
            raise Unavailable(f"{block} component {name!r} ({slot.manifest.type}) is {slot.health.value}{why}")
        return slot.component

    def _mark(self, slot: Slot, health: Health, reason: str) -> None:
        slot.health, slot.reason = health, reason
        ready = self._ready.setdefault(slot.manifest.block, {})
        if health == Health.UP:
            ready[slot.manifest.name] = slot.component
        else:
            ready.pop(slot.manifest.name, None)

    async def init_all(self) -> None:
        """Initialise every component, the secret stores first (other components' metadata may
        come from them); StartupError when a secret reference cannot be resolved."""
        await self.start_secret_stores()
        await asyncio.gather(*(self._init(slot) for slot in self.slots if slot.health == Health.INIT))

    async def start_secret_stores(self) -> None:
        """Initialise the secret stores, then build the components whose metadata they hold.

        ``check`` calls this alone: it reads every reference as ``serve`` would, without
        starting the other components.
        """
        stores = [s for s in self.slots if s.manifest.block == "secretstores" and s.health == Health.INIT]
        await asyncio.gather(*(self._init(slot) for slot in stores))
        # One component after another: the first bad reference in file order is the one reported.
        for slot in self.slots:
            if isinstance(slot.component, AwaitingSecrets):
                try:
                    values = await self._read_secrets(slot.manifest)
                except StartupError as exc:
                    if slot.required:
                        raise
                    # An optional component (ignoreErrors) is DOWN for it, as its failed init
                    # would be, and the sidecar starts without it (Dapr goes on, logged).
                    slot.component = AwaitingSecrets(f"{exc.field}: {exc.problem}")
                    self._mark(slot, Health.DOWN, f"init failed: {exc.field}: {exc.problem}")
                    log.error("component %s (%s) %s", slot.manifest.name, slot.manifest.type, slot.reason)
                    continue
                slot.component = registry.build(slot.manifest.with_secrets(values))

    async def _read_secrets(self, manifest: ComponentManifest) -> dict[str, str]:
        """Each referenced item's value, through the store's SecretStore contract."""
        store_name = manifest.auth_secret_store
        store_slot = self._by_block["secretstores"][store_name]  # checked to exist in __init__
        store = cast(SecretStore, store_slot.component)
        secrets: dict[str, dict[str, str]] = {}  # one read per secret, as Dapr caches them
        values: dict[str, str] = {}
        for item, ref in manifest.secret_refs.items():
            if store_slot.health != Health.UP:
                raise StartupError(
                    manifest.source, ref.field, f"secret store {store_name!r} did not start: {store_slot.reason}"
                )
            if ref.name not in secrets:
                deadline = asyncio.timeout(self._init_timeout)
                try:
                    async with deadline:
                        secrets[ref.name] = await store.get(ref.name)
                except Exception as exc:
                    why = f"no answer within {self._init_timeout:g} s" if deadline.expired() else _describe(exc)
                    problem = f"secret {ref.name!r} cannot be read from secret store {store_name!r}: {why}"
                    raise StartupError(manifest.source, ref.field, problem) from None
            secret = secrets[ref.name]
            if ref.key not in secret:
                keys = ", ".join(sorted(secret)) or "none"
                problem = f"secret {ref.name!r} in secret store {store_name!r} has no key {ref.key!r} (keys: {keys})"
                raise StartupError(manifest.source, ref.field, problem)
            values[item] = secret[ref.key]
        return values

    async def _init(self, slot: Slot) -> None:
        failed = await self._attempt(
            slot, slot.component.init, "init", slot.manifest.init_timeout or self._init_timeout
        )
        if failed:
            self._mark(slot, Health.DOWN, f"init failed: {failed}")
            log.error("component %s (%s) %s", slot.manifest.name, slot.manifest.type, slot.reason)
        else:
            slot.initialised = True
            self._mark(slot, Health.UP, "")
            log.info("component %s (%s) is up", slot.manifest.name, slot.manifest.type)

    async def _attempt(self, slot: Slot, step: Callable[[], Awaitable[None]], what: str, limit: float) -> str:
        """Run ``step`` (the component's init or ping) for up to ``limit`` seconds: "" when it
        succeeded, else why not.

        A CancelledError from inside the component, while this task is not being cancelled
        (an aetcd or grpc.aio client closed under a running call, on failover or a token
        renewal), is the component's failure: raised on, it would end its health checks for
        good and freeze its health. This task's own cancellation (a stop) goes on up.
        """
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                await step()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            # The reason of a failed init reads "init failed: ...", that of a ping alone.
            step_ = "" if what == "init" else f"{what} "
            return f"{step_}cancelled inside the component (its client closed under a running call?)"
        except Exception as exc:
            if deadline.expired():  # ours, whatever the component made of the cancellation
                late = "did not finish" if what == "init" else f"{what} did not answer"
                return f"{late} within {limit:g} s{_address(slot.manifest)}"
            return _describe(exc)
        return ""

    async def check_all(self) -> None:
        """Ping every initialised component, retry the inits that failed; mark each UP or DOWN."""
        await asyncio.gather(*(self._check(slot) for slot in self.slots if slot.health != Health.INIT))

    async def watch_health(self, interval: float) -> None:
        """Check each component every ``interval`` seconds, each on its own clock, until
        cancelled: one whose check takes long (an init retried against a host that drops
        packets takes up to the init timeout) delays no other's DOWN or recovery."""
        await asyncio.gather(*(self._watch(slot, interval) for slot in self.slots))

    async def _watch(self, slot: Slot, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if slot.health != Health.INIT:
                await self._check(slot)
                end_if_cancelled()  # a client's send may lose the stop's cancel (timeouts.py)

    async def _check(self, slot: Slot) -> None:
        if not slot.initialised:
            failed = await self._attempt(
                slot, slot.component.init, "init", slot.manifest.init_timeout or self._init_timeout
            )
            if failed:
                self._mark(slot, Health.DOWN, f"init failed: {failed}")
            else:
                slot.initialised = True
                self._mark(slot, Health.UP, "")
                log.info("component %s (%s) is up after a failed start", slot.manifest.name, slot.manifest.type)
            return
        failed = await self._attempt(slot, slot.component.ping, "ping", PING_TIMEOUT_SECONDS)
        if failed:
            if slot.health == Health.UP:
                log.warning("component %s is down: %s", slot.manifest.name, failed)
            self._mark(slot, Health.DOWN, failed)
        else:
            if slot.health != Health.UP:
                log.info("component %s is up again", slot.manifest.name)
            self._mark(slot, Health.UP, "")

    async def close_all(self, deadline: float | None = None) -> None:
        """Close every component, side by side; with ``deadline`` (the loop's clock), the ones
        still closing then are abandoned, each with a log line: a backend that stopped
        answering must not hold the sidecar's exit past its shutdown grace."""
        closing = {asyncio.ensure_future(self._close(slot)): slot for slot in self.slots}
        if not closing:
            return
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        _, left = await asyncio.wait(closing, timeout=timeout)
        for task in left:
            slot = closing[task]
            log.warning("component %s (%s) did not close by the end of the shutdown grace: abandoned",
                        slot.manifest.name, slot.manifest.type)  # fmt: skip
            task.cancel()

    async def _close(self, slot: Slot) -> None:
        try:
            await slot.component.close()
        except Exception:
            log.exception("closing component %s failed", slot.manifest.name)

    def liveness(self) -> HealthReport:
        """UP while the process answers; DOWN once it is stopping, so that a platform does not
        mistake a drain for a healthy idle."""
        status = Health.DOWN if self.stopping_reason else Health.UP
        return HealthReport(status, {"process": {"status": status.value, "reason": self.stopping_reason}})

    def readiness(self, app: Mapping[str, object] | None = None) -> HealthReport:
        """The components' health; ``app``, the app's entry, is shown but never required."""
        entries: dict[str, Mapping[str, object]] = {}
        if self.stopping_reason:
            entries[SIDECAR_ENTRY] = {"status": Health.DOWN.value, "reason": self.stopping_reason}
        for slot in self.slots:
            entries[slot.manifest.name] = {
                "status": slot.health.value,
                "reason": slot.reason,
                "type": slot.manifest.type,
                # A probe reader tells an entry that holds the sidecar DOWN from one that
                # does not (ignoreErrors: true); a JSON boolean, which "false" is not.
                "required": slot.required,
            }
        if app is not None:
            entries[APP_ENTRY] = app
        # A required component already DOWN wins over others still initialising, as in
        # Layotto: an alert on DOWN is not held back for as long as a slow init takes.
        if self.stopping_reason or any(slot.required and slot.health == Health.DOWN for slot in self.slots):
            status = Health.DOWN
        elif any(slot.health == Health.INIT for slot in self.slots):
            status = Health.INIT
        else:
            status = Health.UP
        return HealthReport(status, entries)


def _by_scope(
    manifests: list[ComponentManifest], app_id: str
) -> tuple[list[ComponentManifest], list[ComponentManifest]]:
    """The manifests ``app_id`` loads and those it does not, each in file order.

    As in Dapr: a manifest with ``scopes`` is for the app ids it lists, and no other.
    """
    loaded: list[ComponentManifest] = []
    out_of_scope: list[ComponentManifest] = []
    for manifest in manifests:
        if manifest.scopes and app_id not in manifest.scopes:
            log.info(
                "%s: component %s is scoped to %s, not to app id %s: not loaded",
                manifest.source,
                manifest.name,
                ", ".join(manifest.scopes),
                app_id,
            )
            out_of_scope.append(manifest)
        else:
            loaded.append(manifest)
    return loaded, out_of_scope


def _secret_store_names(manifests: list[ComponentManifest]) -> list[str]:
    return sorted(m.name for m in manifests if m.block == "secretstores")


def _build_or_wait(manifest: ComponentManifest, stores: list[str]) -> Component:
    """The component now, or a stand-in when its metadata waits for secrets.

    Everything that can be checked before the store runs is checked here, so that
    ``check`` and ``serve`` refuse the same manifests at once.
    """
    if manifest.name in RESERVED_NAMES:
        problem = (
            f"{manifest.name!r} is reserved: /actuator/health/readiness shows the "
            f"{'app' if manifest.name == APP_ENTRY else 'sidecar'}'s own entry under that name, "
            "which would hide this component's: choose another name"
        )
        raise StartupError(manifest.source, "metadata.name", problem)
    if not manifest.secret_refs:
        return registry.build(manifest)
    registry.implementation_for(manifest)
    if manifest.auth_secret_store not in stores:
        where = next(iter(manifest.secret_refs.values())).field
        problem = (
            f"auth.secretStore {manifest.auth_secret_store!r} is not a secret store component "
            f"(known: {', '.join(stores) or 'none configured'})"
        )
        raise StartupError(manifest.source, where, problem)
    return AwaitingSecrets()


def _address(manifest: ComponentManifest) -> str:
    """`` (redisHost 10.0.0.5:6379)``: where the manifest says the backend is, or ""."""
    for item in ADDRESS_ITEMS:
        value = manifest.metadata.get(item, "").strip()
        if value:
            return f" ({item} {without_credentials(value)})"
    return ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(exc) or type(exc).__name__
