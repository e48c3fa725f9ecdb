"""Which implementation of each building block the conformance suites run against.

A new component joins by adding a line here (with the backend fixture that starts
its real server); it ships only when the whole suite for its block passes. The
features column is what the suite holds it to: what a component declares must work,
and what it does not declare must be refused cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from layotto_fast.runtime.state import Feature

ALL_STATE = frozenset(Feature)


@dataclass(frozen=True)
class Implementation:
    type: str
    backend: str | None = None  # the pytest fixture that starts its server
    metadata: Callable[[Any], dict[str, str]] = field(default=lambda backend: {})
    features: frozenset[Feature] = frozenset()
    label: str = ""

    @property
    def id(self) -> str:
        return self.label or self.type


def _redis(server: Any) -> dict[str, str]:
    return {"redisHost": server.address}


def _redis_cluster(cluster: Any) -> dict[str, str]:
    return {"redisHost": cluster.address, "redisType": "cluster"}


def _redis_streams(server: Any) -> dict[str, str]:
    # Short enough that a message left unacknowledged comes back within a test's patience.
    return {"redisHost": server.address, "processingTimeout": "1s", "redeliverInterval": "300ms"}


def _jetstream(server: Any) -> dict[str, str]:
    return {"natsURL": server.url, "ackWait": "1s"}


def _etcd(server: Any) -> dict[str, str]:
    return {"endpoints": server.endpoint}


IMPLEMENTATIONS: dict[str, list[Implementation]] = {
    "state": [
        Implementation("state.in-memory", features=ALL_STATE),
        Implementation("state.redis", "redis_server", _redis, ALL_STATE),
        Implementation("state.redis", "redis_cluster", _redis_cluster, ALL_STATE, "state.redis-cluster"),
    ],
    "lock": [
        Implementation("lock.in-memory"),
        Implementation("lock.redis", "redis_server", _redis),
        Implementation("lock.redis", "redis_cluster", _redis_cluster, label="lock.redis-cluster"),
        Implementation("lock.etcd", "etcd_server", _etcd),
    ],
    "sequencer": [
        Implementation("sequencer.in-memory"),
        Implementation("sequencer.redis", "redis_server", _redis),
        Implementation("sequencer.redis", "redis_cluster", _redis_cluster, label="sequencer.redis-cluster"),
        Implementation("sequencer.etcd", "etcd_server", _etcd),
    ],
    "configuration": [
        Implementation("configuration.in-memory"),
        Implementation("configuration.redis", "redis_server", _redis),
        Implementation("configuration.etcd", "etcd_server", _etcd),
    ],
    "pubsub": [
        Implementation("pubsub.in-memory", metadata=lambda _: {"redeliverInterval": "200ms"}),
        Implementation("pubsub.redis", "redis_server", _redis_streams),
        Implementation("pubsub.jetstream", "nats_server", _jetstream),
    ],
}
