"""The pub/sub service over one in-memory component, for tests of the service's rules."""

from __future__ import annotations

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.pubsub_service import PubSubService


async def memory_pubsub(metadata: dict[str, str] | None = None) -> tuple[Components, PubSubService]:
    """The pub/sub service of app ``app`` over one in-memory component ``ps`` with
    ``metadata``, started; the caller closes both."""
    components = Components([ComponentManifest("ps", "pubsub.in-memory", "v1", metadata or {}, "m.yaml")])
    await components.init_all()
    return components, PubSubService(components, "app")
