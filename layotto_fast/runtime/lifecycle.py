"""Component lifecycle and the health the actuator reports.

Start-up is INIT until every component has initialised; a required component
(one without ``spec.ignoreErrors: true``) that fails to initialise or stops
answering its ping makes the sidecar DOWN with the reason, and comes back UP by
itself when its backend answers again (a failed init is retried). Only UP
components are handed to the services; a call that names one that is not UP is
UNAVAILABLE with the reason. Shutdown turns the sidecar DOWN before anything stops,
so a platform stops routing first.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import Any

from layotto_fast.errors import InvalidArgument, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.component import Component

log = logging.getLogger(__name__)

# A ping slower than this counts as a failure: with the default 2 s between checks,
# a backend that stops answering shows as DOWN within about 4 s.
PING_TIMEOUT_SECONDS = 2.0


class Health(enum.StrEnum):
    INIT = "INIT"
    UP = "UP"
    DOWN = "DOWN"


@dataclass
class Slot:
    manifest: ComponentManifest
    component: Component
    health: Health = Health.INIT
    reason: str = ""

    @property
    def required(self) -> bool:
        return not self.manifest.ignore_errors


class Components:
    """Every declared component, by building block and name."""

    def __init__(self, manifests: list[ComponentManifest], init_timeout: float = 10.0) -> None:
        self.slots = [Slot(m, registry.build(m)) for m in manifests]
        self._by_block: dict[str, dict[str, Slot]] = {block: {} for block in registry.BLOCKS}
        # Per block, the components that are UP; services keep these dicts and read them per call.
        self._ready: dict[str, dict[str, Any]] = {block: {} for block in registry.BLOCKS}
        for slot in self.slots:
            self._by_block.setdefault(slot.manifest.block, {})[slot.manifest.name] = slot
            self._ready.setdefault(slot.manifest.block, {})
        self._init_timeout = init_timeout
        self.started_at = time.time()
        self.stopping_reason = ""

    def of(self, block: str) -> dict[str, Any]:
        """Every component of one block by name, whatever its health; read-only use."""
        return {name: slot.component for name, slot in self._by_block.get(block, {}).items()}

    def ready(self, block: str) -> dict[str, Any]:
        """The components of ``block`` that are UP, by name: a live dict, kept current."""
        return self._ready.setdefault(block, {})

    def lookup(self, block: str, name: str, field: str) -> Any:
        """The named component when it is UP; otherwise the error that says why not."""
        if not name:
            raise InvalidArgument(f"{field} is empty: name a {block} component")
        slot = self._by_block.get(block, {}).get(name)
        if slot is None:
            known = ", ".join(sorted(self._by_block.get(block, {}))) or "none configured"
            raise InvalidArgument(f"{field} {name!r}: no {block} component of that name (known: {known})")
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

    async def init_all(self, first: tuple[str, ...] = ()) -> None:
        """Initialise every component; the blocks in ``first`` (secret stores) before the rest."""
        early = [slot for slot in self.slots if slot.manifest.block in first]
        await asyncio.gather(*(self._init(slot) for slot in early))
        await asyncio.gather(*(self._init(slot) for slot in self.slots if slot not in early))

    async def _init(self, slot: Slot) -> None:
        try:
            await asyncio.wait_for(slot.component.init(), self._init_timeout)
        except Exception as exc:
            self._mark(slot, Health.DOWN, f"init failed: {_describe(exc)}")
            log.error("component %s (%s) %s", slot.manifest.name, slot.manifest.type, slot.reason)
        else:
            self._mark(slot, Health.UP, "")
            log.info("component %s (%s) is up", slot.manifest.name, slot.manifest.type)

    async def check_all(self) -> None:
        """Ping every initialised component, retry the inits that failed; mark each UP or DOWN."""
        await asyncio.gather(*(self._check(slot) for slot in self.slots if slot.health != Health.INIT))

    async def _check(self, slot: Slot) -> None:
        if slot.reason.startswith("init failed"):
            try:
                await asyncio.wait_for(slot.component.init(), self._init_timeout)
            except Exception as exc:
                self._mark(slot, Health.DOWN, f"init failed: {_describe(exc)}")
            else:
                self._mark(slot, Health.UP, "")
                log.info("component %s (%s) is up after a failed start", slot.manifest.name, slot.manifest.type)
            return
        try:
            await asyncio.wait_for(slot.component.ping(), PING_TIMEOUT_SECONDS)
        except Exception as exc:
            if slot.health == Health.UP:
                log.warning("component %s is down: %s", slot.manifest.name, _describe(exc))
            self._mark(slot, Health.DOWN, _describe(exc))
        else:
            if slot.health != Health.UP:
                log.info("component %s is up again", slot.manifest.name)
            self._mark(slot, Health.UP, "")

    async def close_all(self) -> None:
        for slot in self.slots:
            try:
                await slot.component.close()
            except Exception:
                log.exception("closing component %s failed", slot.manifest.name)

    def readiness(self) -> tuple[Health, dict[str, dict[str, str]]]:
        components = {
            slot.manifest.name: {"status": slot.health.value, "reason": slot.reason, "type": slot.manifest.type}
            for slot in self.slots
        }
        if self.stopping_reason:
            return Health.DOWN, components
        if any(slot.health == Health.INIT for slot in self.slots):
            return Health.INIT, components
        if any(slot.required and slot.health == Health.DOWN for slot in self.slots):
            return Health.DOWN, components
        return Health.UP, components


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(exc) or type(exc).__name__
