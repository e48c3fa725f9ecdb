"""Prometheus metrics: per-rpc counts by status and latency, component health, process RSS.

The per-call path only bumps plain ints (one dict update and one list slot): the
prometheus_client metric objects take a lock per update and cost about 5 µs a call,
a fifth of the native transport's whole budget. The totals become metric families
when /metrics is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from layotto_fast.runtime.lifecycle import Components, Health

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class CallStats:
    """Calls by (method, code) and a latency histogram per method, as plain numbers."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}  # per bucket, plus one for +Inf
        self.sums: dict[str, float] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        self.counts[key] = self.counts.get(key, 0) + 1
        buckets = self.buckets.get(method)
        if buckets is None:
            buckets = self.buckets[method] = [0] * (len(LATENCY_BUCKETS) + 1)
            self.sums[method] = 0.0
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sums[method] += seconds


class _CallCollector(Collector):
    def __init__(self, stats: CallStats, components: Components) -> None:
        self._stats = stats
        self._components = components

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "layotto_fast_grpc_requests", "gRPC calls handled, by method and status code", labels=["method", "code"]
        )
        for (method, code), count in sorted(self._stats.counts.items()):
            requests.add_metric([method, code], count)
        yield requests
        latency = HistogramMetricFamily(
            "layotto_fast_grpc_request_duration_seconds",
            "Time from handler start to response, by method",
            labels=["method"],
        )
        for method, buckets in sorted(self._stats.buckets.items()):
            cumulative, total = [], 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                total += count
                cumulative.append((_bound(bound), total))
            latency.add_metric([method], cumulative, self._stats.sums[method])
        yield latency
        health = GaugeMetricFamily(
            "layotto_fast_component_up", "1 when the component is healthy, 0 when down or initialising",
            labels=["name", "type"],
        )  # fmt: skip
        for slot in self._components.slots:
            health.add_metric([slot.manifest.name, slot.manifest.type], 1.0 if slot.health == Health.UP else 0.0)
        yield health


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


class Metrics:
    def __init__(self, components: Components) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        self.calls = CallStats()
        self.registry.register(_CallCollector(self.calls, components))
        self.observe_call = self.calls.observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
