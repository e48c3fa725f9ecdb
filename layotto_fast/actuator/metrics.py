"""Prometheus metrics: per-rpc counts by status and latency, component health, process RSS."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from layotto_fast.runtime.lifecycle import Components, Health

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self, components: Components) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        self._requests = Counter(
            "layotto_fast_grpc_requests",
            "gRPC calls handled, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "layotto_fast_grpc_request_duration_seconds",
            "Time from handler start to response, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._component_up = Gauge(
            "layotto_fast_component_up",
            "1 when the component is healthy, 0 when down or initialising",
            ["name", "type"],
            registry=self.registry,
        )
        self._components = components
        # Labelled children cached: a labels() lookup per call costs more than the count.
        self._counters: dict[tuple[str, str], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        counter = self._counters.get((method, code))
        if counter is None:
            counter = self._counters[(method, code)] = self._requests.labels(method, code)
        counter.inc()
        histogram = self._histograms.get(method)
        if histogram is None:
            histogram = self._histograms[method] = self._latency.labels(method)
        histogram.observe(seconds)

    def render(self) -> bytes:
        for slot in self._components.slots:
            up = 1.0 if slot.health == Health.UP else 0.0
            self._component_up.labels(slot.manifest.name, slot.manifest.type).set(up)
        return generate_latest(self.registry)
