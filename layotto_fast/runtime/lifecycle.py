"""Component lifecycle and the health the actuator reports.

Start-up is INIT until every component has initialised; a required component
(one without ``spec.ignoreErrors: true``) that fails to initialise or stops
answering its ping makes the sidecar DOWN with the reason. Shutdown turns it DOWN
before anything stops, so a platform stops routing first.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import Any

from layotto_fast.errors import InvalidArgument
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.component import Component

log = logging.getLogger(__name__)


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
        self._by_block: dict[str, dict[str, Any]] = {block: {} for block in registry.BLOCKS}
        for slot in self.slots:
            self._by_block.setdefault(slot.manifest.block, {})[slot.manifest.name] = slot.component
        self._init_timeout = init_timeout
        self.started_at = time.time()
        self.stopping_reason = ""

    def of(self, block: str) -> dict[str, Any]:
        """Components of one block by name, e.g. ``of("state")``; read-only use."""
        return self._by_block[block]

    def lookup(self, block: str, name: str, field: str) -> Any:
        if not name:
            raise InvalidArgument(f"{field} is empty: name a {block} component")
        try:
            return self._by_block[block][name]
        except KeyError:
            known = ", ".join(sorted(self._by_block[block])) or "none configured"
            raise InvalidArgument(f"{field} {name!r}: no {block} component of that name (known: {known})") from None

    async def init_all(self) -> None:
        await asyncio.gather(*(self._init(slot) for slot in self.slots))

    async def _init(self, slot: Slot) -> None:
        try:
            await asyncio.wait_for(slot.component.init(), self._init_timeout)
        except Exception as exc:
            slot.health, slot.reason = Health.DOWN, f"init failed: {_describe(exc)}"
            log.error("component %s (%s) %s", slot.manifest.name, slot.manifest.type, slot.reason)
        else:
            slot.health, slot.reason = Health.UP, ""
            log.info("component %s (%s) is up", slot.manifest.name, slot.manifest.type)

    async def check_all(self) -> None:
        """Ping every initialised component; mark the ones that fail DOWN."""
        await asyncio.gather(*(self._check(slot) for slot in self.slots if slot.health != Health.INIT))

    async def _check(self, slot: Slot) -> None:
        try:
            await asyncio.wait_for(slot.component.ping(), self._init_timeout)
        except Exception as exc:
            if slot.health == Health.UP:
                log.warning("component %s is down: %s", slot.manifest.name, _describe(exc))
            slot.health, slot.reason = Health.DOWN, _describe(exc)
        else:
            if slot.health == Health.DOWN and slot.reason.startswith("init failed"):
                return
            slot.health, slot.reason = Health.UP, ""

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
    return str(exc) or type(exc).__name__
