"""Component type string -> implementation; the only place that names implementations.

Implementations are imported when a manifest asks for them, so a sidecar that uses
only embedded components never imports a Redis or etcd client.
"""

from __future__ import annotations

import importlib

from layotto_fast.errors import StartupError
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.component import Component

BLOCKS = ("state", "lock", "sequencer", "configuration", "pubsub", "secretstores", "hello")

# type string -> "module:class", relative to layotto_fast.components
IMPLEMENTATIONS: dict[str, str] = {
    "state.in-memory": "state.memory:InMemoryStateStore",
    "state.redis": "state.redis:RedisStateStore",
    "lock.in-memory": "lock.memory:InMemoryLockStore",
    "lock.redis": "lock.redis:RedisLockStore",
    "lock.etcd": "lock.etcd:EtcdLockStore",
    "sequencer.in-memory": "sequencer.memory:InMemorySequencer",
    "sequencer.redis": "sequencer.redis:RedisSequencer",
    "sequencer.etcd": "sequencer.etcd:EtcdSequencer",
    "configuration.in-memory": "configuration.memory:InMemoryConfigurationStore",
    "configuration.redis": "configuration.redis:RedisConfigurationStore",
    "configuration.etcd": "configuration.etcd:EtcdConfigurationStore",
    "pubsub.in-memory": "pubsub.memory:InMemoryPubSub",
    "pubsub.redis": "pubsub.redis:RedisStreamsPubSub",
    "pubsub.jetstream": "pubsub.jetstream:JetStreamPubSub",
    "secretstores.local.file": "secretstores.local_file:LocalFileSecretStore",
    "secretstores.local.env": "secretstores.local_env:LocalEnvSecretStore",
    "hello.helloworld": "hello.helloworld:HelloWorld",
}

SUPPORTED_VERSIONS = ("v1",)


def implementation(type_: str) -> type[Component] | None:
    """The class registered for ``type_``, imported now; None for an unknown type."""
    target = IMPLEMENTATIONS.get(type_)
    if target is None:
        return None
    module_name, class_name = target.split(":")
    module = importlib.import_module(f"layotto_fast.components.{module_name}")
    found: type[Component] = getattr(module, class_name)
    return found


def implementation_for(manifest: ComponentManifest) -> type[Component]:
    """The class for ``manifest``'s type and version; StartupError naming the field otherwise.

    Separate from ``build`` so that a manifest whose metadata waits for its secrets has its
    type and version checked at once, like every other manifest's.
    """
    if manifest.type not in IMPLEMENTATIONS:
        known = ", ".join(sorted(IMPLEMENTATIONS))
        raise StartupError(manifest.source, "spec.type", f"unknown component type {manifest.type!r} (known: {known})")
    if manifest.version not in SUPPORTED_VERSIONS:
        raise StartupError(
            manifest.source, "spec.version", f"{manifest.version!r} is not supported for {manifest.type} (use v1)"
        )
    cls = implementation(manifest.type)
    assert cls is not None
    return cls


def build(manifest: ComponentManifest) -> Component:
    """The component with its typed config parsed from ``manifest.metadata`` (secrets resolved)."""
    return implementation_for(manifest).from_manifest(manifest)
