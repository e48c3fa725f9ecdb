"""The per-rpc counters behind /metrics (compiled: the native transport updates them from C)."""

from __future__ import annotations

from layotto_fast.api.stats import LATENCY_BUCKETS, CallStats, MethodStats


def test_ok_calls_are_counted_and_timed() -> None:
    stats = MethodStats()
    stats.record_ok(0.0002)
    stats.record("OK", 0.003)
    assert stats.ok == 2
    assert stats.failures == {}
    assert abs(stats.seconds - 0.0032) < 1e-12
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    expected[LATENCY_BUCKETS.index(0.00025)] += 1
    expected[LATENCY_BUCKETS.index(0.005)] += 1
    assert stats.buckets == expected


def test_a_bound_belongs_to_its_own_bucket_and_the_slowest_to_inf() -> None:
    stats = MethodStats()
    for bound in LATENCY_BUCKETS:  # Prometheus buckets are "less than or equal"
        stats.record_ok(bound)
    stats.record_ok(5.0)
    assert stats.buckets == [1] * (len(LATENCY_BUCKETS) + 1)


def test_failures_are_counted_by_code_and_still_timed() -> None:
    calls = CallStats()
    calls.method("GetState").record("NOT_FOUND", 0.5)
    calls.method("GetState").record("NOT_FOUND", 0.5)
    calls.method("GetState").record("INTERNAL", 0.00005)
    stats = calls.method("GetState")
    assert stats is calls.methods["GetState"]
    assert stats.ok == 0
    assert stats.failures == {"NOT_FOUND": 2, "INTERNAL": 1}
    assert stats.seconds == 1.00005
    assert stats.buckets[0] == 1 and stats.buckets[LATENCY_BUCKETS.index(1.0)] == 2
    assert sum(stats.buckets) == 3
