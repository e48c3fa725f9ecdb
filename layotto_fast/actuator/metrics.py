"""Prometheus metrics: per-rpc counts by status and latency, component health, process RSS.

Transports count calls in layotto_fast.api.stats (plain ints: prometheus_client's
metric objects take a lock per update and cost about 5 µs a call, a fifth of the
native transport's whole budget); the totals become metric families here, when
/metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from layotto_fast.api.stats import LATENCY_BUCKETS, CallStats
from layotto_fast.runtime.lifecycle import Components, Health
from layotto_fast.runtime.services import Services


class _CallCollector(Collector):
    def __init__(self, stats: CallStats, components: Components, services: Services | None) -> None:
        self._stats = stats
        self._components = components
        self._services = services

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "layotto_fast_grpc_requests",
            "gRPC calls, by method and the status code the client got: every call that reached the server, "
            'those refused by the transport included (a path it does not serve: method "(unknown)")',
            labels=["method", "code"],
        )
        for method, stats in sorted(self._stats.methods.items()):
            if stats.ok:
                requests.add_metric([method, "OK"], stats.ok)
            for code, count in sorted(stats.failures.items()):
                requests.add_metric([method, code], count)
        yield requests
        latency = HistogramMetricFamily(
            "layotto_fast_grpc_request_duration_seconds",
            "Time from handler start to response, by method (calls that ended without a handler's answer: "
            "refused by the transport, cancelled by the client, are counted but not timed)",
            labels=["method"],
        )
        for method, stats in sorted(self._stats.methods.items()):
            cumulative, total = [], 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), stats.buckets, strict=True):
                total += count
                cumulative.append((_bound(bound), total))
            latency.add_metric([method], cumulative, stats.seconds)
        yield latency
        health = GaugeMetricFamily(
            "layotto_fast_component_up", "1 when the component is healthy, 0 when down or initialising",
            labels=["name", "type"],
        )  # fmt: skip
        for slot in self._components.slots:
            health.add_metric([slot.manifest.name, slot.manifest.type], 1.0 if slot.health == Health.UP else 0.0)
        yield health
        if self._services is not None:
            configuration = self._services.configuration
            yield GaugeMetricFamily(
                "layotto_fast_configuration_subscriptions",
                "Open SubscribeConfiguration streams",
                value=configuration.active_subscriptions,
            )
            yield CounterMetricFamily(
                "layotto_fast_configuration_subscribers_dropped",
                "Subscribers dropped because they fell too far behind (queue over its bound)",
                value=configuration.dropped_subscriptions,
            )
            deliveries = CounterMetricFamily(
                "layotto_fast_pubsub_deliveries",
                "What became of messages handed to subscribers, by pubsub, topic and outcome: delivered (SUCCESS), "
                "retried (an attempt made again by the sidecar after one answered RETRY, failed or timed out), "
                "dropped, dead_lettered, returned "
                "(left unacknowledged for the backend to deliver again: attempts spent, the subscriber gone "
                "before it answered, or the dead-letter publish failed)",
                labels=["pubsub", "topic", "outcome"],
            )
            for (pubsub, topic), counts in sorted(self._services.pubsub.counts.items()):
                for outcome in ("delivered", "retried", "dropped", "dead_lettered", "returned"):
                    deliveries.add_metric([pubsub, topic, outcome], getattr(counts, outcome))
            yield deliveries


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


class Metrics:
    def __init__(self, components: Components, services: Services | None = None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        self.calls = CallStats()
        self.registry.register(_CallCollector(self.calls, components, services))

    def render(self) -> bytes:
        return generate_latest(self.registry)
