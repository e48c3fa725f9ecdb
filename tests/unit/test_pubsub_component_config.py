"""The pub/sub components' own configs, read from a manifest without a sidecar around them."""

from __future__ import annotations

import pytest

from layotto_fast.components.pubsub.jetstream import JetStreamConfig
from layotto_fast.components.pubsub.memory import InMemoryConfig
from layotto_fast.components.pubsub.redis import StreamsConfig
from layotto_fast.manifest import ComponentManifest
from layotto_fast.settings import Settings


@pytest.mark.parametrize("consumer_id", [None, "mine"])
def test_a_component_built_on_its_own_falls_back_to_the_default_app_id(consumer_id: str | None) -> None:
    # What `layotto-fast check` and tests build without the runtime's consumerID: the group
    # must be the one a sidecar without --app-id would pass, and a given consumerID wins.
    def manifest(type_: str, metadata: dict[str, str]) -> ComponentManifest:
        given = {"consumerID": consumer_id} if consumer_id else {}
        return ComponentManifest(type_, type_, "v1", {**metadata, **given}, "m.yaml")

    groups = {
        InMemoryConfig.from_manifest(manifest("pubsub.in-memory", {})).consumer_id,
        StreamsConfig.from_manifest(manifest("pubsub.redis", {"redisHost": "h:1"})).consumer_id,
        JetStreamConfig.from_manifest(manifest("pubsub.jetstream", {"natsURL": "nats://h:1"})).durable_name,
    }
    assert groups == {consumer_id or Settings().app_id}
