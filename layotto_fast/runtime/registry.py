"""Component type string -> implementation; the only place that names implementations."""

from __future__ import annotations

from layotto_fast.components.configuration_memory import InMemoryConfigurationStore
from layotto_fast.components.hello_helloworld import HelloWorld
from layotto_fast.components.lock_memory import InMemoryLockStore
from layotto_fast.components.pubsub_memory import InMemoryPubSub
from layotto_fast.components.secrets_local_env import LocalEnvSecretStore
from layotto_fast.components.secrets_local_file import LocalFileSecretStore
from layotto_fast.components.sequencer_memory import InMemorySequencer
from layotto_fast.components.state_memory import InMemoryStateStore
from layotto_fast.errors import StartupError
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.component import Component

BLOCKS = ("state", "lock", "sequencer", "configuration", "pubsub", "secretstores", "hello")

IMPLEMENTATIONS: dict[str, type[Component]] = {
    "state.in-memory": InMemoryStateStore,
    "lock.in-memory": InMemoryLockStore,
    "sequencer.in-memory": InMemorySequencer,
    "configuration.in-memory": InMemoryConfigurationStore,
    "pubsub.in-memory": InMemoryPubSub,
    "secretstores.local.file": LocalFileSecretStore,
    "secretstores.local.env": LocalEnvSecretStore,
    "hello.helloworld": HelloWorld,
}

SUPPORTED_VERSIONS = ("v1",)


def build(manifest: ComponentManifest) -> Component:
    implementation = IMPLEMENTATIONS.get(manifest.type)
    if implementation is None:
        known = ", ".join(sorted(IMPLEMENTATIONS))
        raise StartupError(manifest.source, "spec.type", f"unknown component type {manifest.type!r} (known: {known})")
    if manifest.version not in SUPPORTED_VERSIONS:
        raise StartupError(
            manifest.source, "spec.version", f"{manifest.version!r} is not supported for {manifest.type} (use v1)"
        )
    return implementation.from_manifest(manifest)
