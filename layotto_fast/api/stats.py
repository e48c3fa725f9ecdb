"""Call counts and latency per rpc, kept as plain numbers on the per-call path.

The actuator turns them into Prometheus metric families when /metrics is scraped.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class MethodStats:
    """One rpc's calls: OK and other codes counted apart, and a latency histogram."""

    __slots__ = ("buckets", "failures", "ok", "seconds")

    def __init__(self) -> None:
        self.ok = 0
        self.failures: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, plus one for +Inf
        self.seconds = 0.0

    def record_ok(self, seconds: float) -> None:
        self.ok += 1
        self.seconds += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def record(self, code: str, seconds: float) -> None:
        if code == "OK":
            self.record_ok(seconds)
            return
        self.failures[code] = self.failures.get(code, 0) + 1
        self.seconds += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1


class CallStats:
    """Every rpc's MethodStats; transports may hold on to one per method."""

    def __init__(self) -> None:
        self.methods: dict[str, MethodStats] = {}

    def method(self, name: str) -> MethodStats:
        stats = self.methods.get(name)
        if stats is None:
            stats = self.methods[name] = MethodStats()
        return stats

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.method(method).record(code, seconds)
