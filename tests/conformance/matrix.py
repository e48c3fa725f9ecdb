"""Which implementation of each building block the conformance suites run against.

A new component joins by adding a line here (and starting its real server in the
test run); it ships only when the whole suite for its block passes.
"""

from __future__ import annotations

from pathlib import Path

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import registry
from layotto_fast.runtime.component import Component

IMPLEMENTATIONS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "state": [("state.in-memory", {})],
    "lock": [("lock.in-memory", {})],
    "sequencer": [("sequencer.in-memory", {})],
    "configuration": [("configuration.in-memory", {})],
}


def ids(block: str) -> list[str]:
    return [type_ for type_, _ in IMPLEMENTATIONS[block]]


async def make(type_: str, block: str) -> Component:
    metadata = dict(IMPLEMENTATIONS[block])[type_]
    manifest = ComponentManifest(
        name=f"conformance-{block}", type=type_, version="v1", metadata=metadata, source=str(Path(__file__))
    )
    component = registry.build(manifest)
    await component.init()
    return component
