"""The mesh's counters as Prometheus families, read from the proxy when /metrics is scraped."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from layotto_fast.mesh.proxy import Mesh

if TYPE_CHECKING:
    from layotto_fast_native import MeshRequestStats


_ListenerCount = Literal[
    "connections", "no_route", "bad_frames", "heartbeats", "idle_closed", "max_connections_closed",
    "incomplete_closed", "unread_closed",
]  # fmt: skip
_ClusterCount = Literal["ejections", "ejections_capped", "breaker_refused", "connect_failures", "unknown_responses"]


class MeshCollector(Collector):
    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    def collect(self) -> Iterator[Metric]:
        stats = self._mesh.stats()
        yield from _request_families(
            "layotto_fast_mesh", "through a mesh route", ["listener", "route"],
            [([r["listener"], r["name"]], r) for r in stats["routes"]],
        )  # fmt: skip
        yield from _request_families(
            "layotto_fast_mesh_cluster", "to a cluster (from any route or InvokeService target)", ["cluster"],
            [([c["name"]], c) for c in stats["clusters"]],
        )  # fmt: skip
        yield from _request_families(
            "layotto_fast_mesh_direct", "to an address an InvokeService call named (rpc_target_address)",
            ["protocol", "address"], [([d["protocol"], d["address"]], d) for d in stats["direct"]],
        )  # fmt: skip
        listener_counts: dict[_ListenerCount, tuple[str, str]] = {
            "connections": ("layotto_fast_mesh_connections", "Client connections accepted"),
            "no_route": ("layotto_fast_mesh_no_route", "Requests no route matched (answered 'no such service')"),
            "bad_frames": ("layotto_fast_mesh_bad_frames", "Malformed or oversized frames (their connection closed)"),
            "heartbeats": ("layotto_fast_mesh_heartbeats", "Client heartbeats answered"),
            "idle_closed": ("layotto_fast_mesh_idle_closed", "Client connections closed after idle_timeout_ms silent"),
            "max_connections_closed": (
                "layotto_fast_mesh_max_connections_closed",
                "Client connections closed as accepted: max_connections were open",
            ),
            "incomplete_closed": (
                "layotto_fast_mesh_incomplete_closed",
                "Client connections closed holding part of a frame: the listener's partial frames passed "
                "max_incomplete_bytes",
            ),
            "unread_closed": (
                "layotto_fast_mesh_unread_closed",
                "Client connections ended whose last answers were not read within 5 s: given up",
            ),
        }
        for key, (name, text) in listener_counts.items():
            family = CounterMetricFamily(name, text, labels=["listener"])
            for listener in stats["listeners"]:
                family.add_metric([listener["name"]], listener[key])
            yield family
        open_connections = GaugeMetricFamily(
            "layotto_fast_mesh_open_connections", "Client connections open now", labels=["listener"]
        )
        for listener in stats["listeners"]:
            open_connections.add_metric([listener["name"]], listener["open_connections"])
        yield open_connections
        cluster_counts: dict[_ClusterCount, tuple[str, str]] = {
            "ejections": ("layotto_fast_mesh_ejections", "Hosts ejected after consecutive failures"),
            "ejections_capped": (
                "layotto_fast_mesh_ejections_capped",
                "Ejections left undone: max_ejection_percent of the hosts were out already",
            ),
            "breaker_refused": ("layotto_fast_mesh_breaker_refused", "Requests refused by the circuit breaker"),
            "connect_failures": ("layotto_fast_mesh_connect_failures", "Connections to a host that failed"),
            "unknown_responses": (
                "layotto_fast_mesh_unknown_responses",
                "Responses to request ids never sent (their connection closed)",
            ),
        }
        for count, (name, text) in cluster_counts.items():
            family = CounterMetricFamily(name, text, labels=["cluster"])
            for cluster in stats["clusters"]:
                family.add_metric([cluster["name"]], cluster[count])
            yield family
        reloads = CounterMetricFamily(
            "layotto_fast_mesh_config_reloads",
            "Reloads of the mesh configuration: applied, or refused (the running one kept)",
            labels=["outcome"],
        )
        reloads.add_metric(["applied"], self._mesh.reloads)
        reloads.add_metric(["refused"], self._mesh.refused_reloads)
        yield reloads
        up = GaugeMetricFamily(
            "layotto_fast_mesh_upstream_up",
            "1 when the host is healthy and not ejected",
            labels=["cluster", "host"],
        )
        for cluster in stats["clusters"]:
            for host in cluster["hosts"]:
                serving = host["healthy"] and not host["ejected"]
                up.add_metric([cluster["name"], host["address"]], 1.0 if serving else 0.0)
        yield up


def _request_families(
    prefix: str, where: str, label_names: list[str], sources: Sequence[tuple[list[str], MeshRequestStats]]
) -> Iterator[Metric]:
    """Requests by outcome, answers by status and latency, for routes or clusters."""
    requests = CounterMetricFamily(
        f"{prefix}_requests",
        f"Requests {where}, by how they ended: answered (by the upstream, whatever its status), "
        "timeout, unavailable, rate_limited, breaker_refused, sent (a oneway request, handed to an upstream), "
        "cancelled (an InvokeService call its caller gave up on)",
        labels=[*label_names, "outcome"],
    )
    statuses = CounterMetricFamily(
        f"{prefix}_responses",
        f"Upstream answers {where}, by the protocol's status number (Bolt: 0 success, 6 no processor, ...; "
        "Dubbo: 20 OK, 70 service error, ...)",
        labels=[*label_names, "status"],
    )
    latency = HistogramMetricFamily(
        f"{prefix}_request_duration_seconds",
        f"Time from forwarding a request {where} to its upstream's answer",
        labels=label_names,
    )
    for labels, source in sources:
        for outcome, count in source["outcomes"].items():
            requests.add_metric([*labels, outcome], count)
        for status, count in source["statuses"].items():
            statuses.add_metric([*labels, str(status)], count)
        cumulative, total = [], 0
        bounds = [*(b / 1e6 for b in source["latency_bounds_us"]), float("inf")]
        for bound, count in zip(bounds, source["latency_counts"], strict=True):
            total += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        latency.add_metric(labels, cumulative, source["latency_sum_us"] / 1e6)
    yield requests
    yield statuses
    yield latency
