"""The ``mesh:`` section of the ``--config`` YAML: listeners, their routes, and clusters.

Parsed into typed records here, with every mistake named by file and field path
(``mesh.listeners[0].routes[1].cluster``); the native proxy gets the result as plain dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from layotto_fast.errors import StartupError
from layotto_fast.runtime.metadata import is_host_port

if TYPE_CHECKING:
    from layotto_fast_native import MeshClusterConfig as NativeClusterConfig
    from layotto_fast_native import MeshConfig as NativeMeshConfig

PROTOCOLS = ("bolt", "dubbo")
BALANCING = ("round_robin", "least_request")
DEFAULT_PORTS = {"bolt": 12220, "dubbo": 20882}
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
# What a client that stops reading may leave queued before its connection is closed.
DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
# A client connection silent this long, with nothing owed to it, is closed: Dubbo
# consumers heartbeat an idle connection every 60 s (their providers close at 3 misses,
# 180 s), SOFA Bolt clients every 15 s (their servers close at 90 s).
DEFAULT_IDLE_TIMEOUT_MS = 180_000
# What a listener's client connections may hold together of frames not yet whole (or
# max_frame_size, when larger): clients that each send most of a large frame, then
# nothing, cannot take more.
DEFAULT_MAX_INCOMPLETE_BYTES = 256 * 1024 * 1024
# Client connections a listener keeps open at once; 0: no limit (as in MOSN and Envoy).
DEFAULT_MAX_CONNECTIONS = 0


@dataclass(frozen=True)
class RouteMatch:
    service: str | None = None
    service_prefix: str | None = None
    version: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RateLimit:
    requests_per_second: float
    burst: float


@dataclass(frozen=True)
class Route:
    name: str
    match: RouteMatch
    clusters: tuple[tuple[str, int], ...]  # (cluster name, weight)
    timeout_ms: int = 3000
    retries: int = 1
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class Listener:
    name: str
    protocol: str
    address: str
    routes: tuple[Route, ...] = ()
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_buffered: int = DEFAULT_MAX_BUFFERED
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_incomplete_bytes: int = DEFAULT_MAX_INCOMPLETE_BYTES


@dataclass(frozen=True)
class Cluster:
    name: str
    protocol: str
    hosts: tuple[str, ...]
    balancing: str = "round_robin"
    connect_timeout_ms: int = 1000
    max_requests: int = 10_000
    max_pending: int = 1024
    outlier_consecutive_failures: int = 5
    ejection_ms: int = 30_000
    max_ejection_percent: int = 50  # of the hosts out at once; at least one may always be
    health_check_interval_ms: int = 0  # 0: no health checks
    health_check_timeout_ms: int = 1000
    # A heartbeat on a connection idle this long, as SOFA Bolt and Dubbo clients send (their
    # servers close connections idle for 90 s and 180 s); 0: none.
    idle_heartbeat_ms: int = 15_000


# A cluster's and a route's defaults, read from the records themselves.
_CLUSTER = Cluster("", "", ())
_ROUTE = Route("", RouteMatch(), ())
# What an InvokeService call given ``rpc_target_address`` goes through, one per address and
# protocol (both filled in by the mesh thread): a cluster's defaults, without outlier
# ejection, since ejecting its one host would only turn its failures into refusals. Such
# clusters get no active health checks, and those already made keep their settings across
# a reload (this is a constant).
DIRECT_CLUSTER = Cluster("", "bolt", (), outlier_consecutive_failures=0)
# The interval of a health_check section that does not give one (no section: no checks).
HEALTH_CHECK_INTERVAL_MS = 5000


@dataclass(frozen=True)
class MeshSettings:
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = field(default=())

    def to_native(self) -> NativeMeshConfig:
        """The shape ``layotto_fast_native.MeshProxy`` takes."""
        return {
            "listeners": [
                {
                    "name": listener.name,
                    "protocol": listener.protocol,
                    "address": listener.address,
                    "max_frame_size": listener.max_frame_size,
                    "max_buffered": listener.max_buffered,
                    "idle_timeout_ms": listener.idle_timeout_ms,
                    "max_connections": listener.max_connections,
                    "max_incomplete_bytes": listener.max_incomplete_bytes,
                    "routes": [
                        {
                            "name": route.name,
                            "service": route.match.service,
                            "service_prefix": route.match.service_prefix,
                            "version": route.match.version,
                            "headers": list(route.match.headers),
                            "clusters": list(route.clusters),
                            "timeout_ms": route.timeout_ms,
                            "retries": route.retries,
                            "rate_limit": (
                                (route.rate_limit.requests_per_second, route.rate_limit.burst)
                                if route.rate_limit
                                else None
                            ),
                        }
                        for route in listener.routes
                    ],
                }
                for listener in self.listeners
            ],
            "clusters": [_native_cluster(c) for c in self.clusters],
            "direct": _native_cluster(DIRECT_CLUSTER),
        }


def _native_cluster(c: Cluster) -> NativeClusterConfig:
    return {
        "name": c.name,
        "protocol": c.protocol,
        "hosts": list(c.hosts),
        "balancing": c.balancing,
        "connect_timeout_ms": c.connect_timeout_ms,
        "max_requests": c.max_requests,
        "max_pending": c.max_pending,
        "outlier_consecutive_failures": c.outlier_consecutive_failures,
        "ejection_ms": c.ejection_ms,
        "max_ejection_percent": c.max_ejection_percent,
        "health_check_interval_ms": c.health_check_interval_ms,
        "health_check_timeout_ms": c.health_check_timeout_ms,
        "idle_heartbeat_ms": c.idle_heartbeat_ms,
    }


class _Fields:
    """One mapping of the YAML, read field by field; mistakes name the path."""

    def __init__(self, source: str, path: str, raw: Any, known: tuple[str, ...]) -> None:
        if not isinstance(raw, Mapping):
            raise StartupError(source, path, f"must be a mapping, got {raw!r}")
        unknown = sorted(set(map(str, raw)) - set(known))
        if unknown:
            raise StartupError(source, f"{path}.{unknown[0]}", f"unknown field (known: {', '.join(known)})")
        self.source, self.path, self.raw = source, path, raw

    def error(self, name: str, problem: str) -> StartupError:
        return StartupError(self.source, f"{self.path}.{name}", problem)

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.raw.get(name, default)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.error(name, f"must be a non-empty string, got {value!r}")
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise self.error(name, "is required")
        return value

    def integer(self, name: str, default: int, low: int = 0, high: int = 2**62) -> int:
        value = self.raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(name, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def number(self, name: str) -> float:
        value = self.raw.get(name)
        # not (value > 0): NaN compares false both ways, and the native proxy would refuse it
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == math.inf:
            raise self.error(name, f"must be a finite number above 0, got {value!r}")
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.raw.get(name, default)
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def items(self, name: str) -> list[Any]:
        value = self.raw.get(name, [])
        if not isinstance(value, list):
            raise self.error(name, f"must be a list, got {value!r}")
        return value

    def section(self, name: str, known: tuple[str, ...]) -> _Fields | None:
        if self.raw.get(name) is None:
            return None
        return _Fields(self.source, f"{self.path}.{name}", self.raw[name], known)


def _address(fields: _Fields, name: str, default_port: int) -> str:
    value = fields.raw.get(name, f"127.0.0.1:{default_port}")
    if not is_host_port(value, port_zero=True):
        raise fields.error(name, f"must be host:port, got {value!r}")
    return str(value)


def _cluster(source: str, path: str, raw: Any) -> Cluster:
    f = _Fields(
        source,
        path,
        raw,
        ("name", "protocol", "hosts", "balancing", "connect_timeout_ms", "circuit_breaker", "outlier_detection",
         "health_check", "idle_heartbeat_ms"),
    )  # fmt: skip
    hosts = f.items("hosts")
    if not hosts:
        raise f.error("hosts", "must list at least one host:port")
    for i, host in enumerate(hosts):
        # Port 0 is only a listener's "any port": no connection can be made to it.
        if not is_host_port(host):
            raise f.error(f"hosts[{i}]", f"must be host:port with a port from 1 to 65535, got {host!r}")
        if hosts.index(host) != i:  # its metrics and health would be one host's, counted twice
            raise f.error(f"hosts[{i}]", f"{host!r} is listed twice (hosts[{hosts.index(host)}])")
    breaker = f.section("circuit_breaker", ("max_requests", "max_pending"))
    outlier = f.section("outlier_detection", ("consecutive_failures", "ejection_ms", "max_ejection_percent"))
    health = f.section("health_check", ("interval_ms", "timeout_ms"))
    return Cluster(
        name=f.required_text("name"),
        protocol=f.choice("protocol", PROTOCOLS),
        hosts=tuple(hosts),
        balancing=f.choice("balancing", BALANCING, _CLUSTER.balancing),
        connect_timeout_ms=f.integer("connect_timeout_ms", _CLUSTER.connect_timeout_ms, 1, 600_000),
        max_requests=_integer(breaker, "max_requests", _CLUSTER.max_requests, 1),
        max_pending=_integer(breaker, "max_pending", _CLUSTER.max_pending, 1),
        outlier_consecutive_failures=_integer(
            outlier, "consecutive_failures", _CLUSTER.outlier_consecutive_failures, 0, 1_000_000
        ),
        ejection_ms=_integer(outlier, "ejection_ms", _CLUSTER.ejection_ms, 1, 86_400_000),
        max_ejection_percent=_integer(outlier, "max_ejection_percent", _CLUSTER.max_ejection_percent, 0, 100),
        health_check_interval_ms=(
            health.integer("interval_ms", HEALTH_CHECK_INTERVAL_MS, 10, 86_400_000)
            if health
            else _CLUSTER.health_check_interval_ms
        ),
        health_check_timeout_ms=_integer(health, "timeout_ms", _CLUSTER.health_check_timeout_ms, 1, 600_000),
        idle_heartbeat_ms=f.integer("idle_heartbeat_ms", _CLUSTER.idle_heartbeat_ms, 0, 86_400_000),
    )


def _integer(section: _Fields | None, name: str, default: int, low: int = 0, high: int = 2**62) -> int:
    """A field of an optional section: the default when the section is absent."""
    return section.integer(name, default, low, high) if section else default


def _route(source: str, path: str, raw: Any, clusters: Mapping[str, Cluster], protocol: str) -> Route:
    f = _Fields(source, path, raw, ("name", "match", "cluster", "clusters", "timeout_ms", "retries", "rate_limit"))
    match_fields = f.section("match", ("service", "service_prefix", "version", "headers"))
    match = RouteMatch()
    if match_fields is not None:
        if match_fields.raw.get("service") is not None and match_fields.raw.get("service_prefix") is not None:
            raise match_fields.error("service_prefix", "give service or service_prefix, not both")
        headers = match_fields.raw.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise match_fields.error("headers", f"must map header names to string values, got {headers!r}")
        match = RouteMatch(
            service=match_fields.text("service"),
            service_prefix=match_fields.text("service_prefix"),
            version=match_fields.raw.get("version") if isinstance(match_fields.raw.get("version"), str) else None,
            headers=tuple(sorted(headers.items())),
        )
        if "version" in match_fields.raw and match.version is None:
            raise match_fields.error("version", f"must be a string, got {match_fields.raw['version']!r}")
        if match.version is not None and protocol == "bolt":
            # A Bolt request carries no version of its own (the native side reads it as ""),
            # so a version condition there could never hold and every request would go unrouted.
            raise match_fields.error(
                "version",
                "Bolt requests carry no separate version: it is part of the service name "
                "(e.g. service: com.example.EchoService:1.0); match it there or drop version",
            )
    weighted: list[tuple[str, int]] = []
    if f.raw.get("cluster") is not None and f.raw.get("clusters") is not None:
        raise f.error("clusters", "give cluster or clusters, not both")
    if f.raw.get("cluster") is not None:
        weighted.append((f.required_text("cluster"), 1))
    for i, item in enumerate(f.items("clusters")):
        wf = _Fields(source, f"{path}.clusters[{i}]", item, ("name", "weight"))
        weighted.append((wf.required_text("name"), wf.integer("weight", 1, 1, 1_000_000)))
    if not weighted:
        raise f.error("cluster", "is required (or clusters: a list of {name, weight})")
    listed = f.raw.get("cluster") is not None  # the field as the route spells it
    for i, (name, _) in enumerate(weighted):
        field = "cluster" if listed else f"clusters[{i}].name"
        if name not in clusters:
            known = ", ".join(sorted(clusters)) or "none"
            raise f.error(field, f"{name!r} is not a cluster (known: {known})")
        if clusters[name].protocol != protocol:
            raise f.error(field, f"{name!r} speaks {clusters[name].protocol}, this listener {protocol}")
    limit = f.section("rate_limit", ("requests_per_second", "burst"))
    rate_limit = None
    if limit is not None:
        rate = limit.number("requests_per_second")
        # A request takes a whole token from a bucket holding at most `burst`: below one
        # the bucket never fills enough and the route would refuse every request.
        burst = limit.number("burst") if "burst" in limit.raw else max(1.0, rate)
        if burst < 1:
            raise limit.error("burst", f"must be at least 1 (one request takes one token), got {limit.raw['burst']!r}")
        rate_limit = RateLimit(rate, burst)
    return Route(
        name=f.required_text("name"),
        match=match,
        clusters=tuple(weighted),
        timeout_ms=f.integer("timeout_ms", _ROUTE.timeout_ms, 1, 3_600_000),
        retries=f.integer("retries", _ROUTE.retries, 0, 100),
        rate_limit=rate_limit,
    )


def parse(raw: Any, source: str) -> MeshSettings:
    """The ``mesh`` section of ``source``; raises StartupError naming the field."""
    top = _Fields(source, "mesh", raw, ("listeners", "clusters"))
    clusters: dict[str, Cluster] = {}
    for i, item in enumerate(top.items("clusters")):
        cluster = _cluster(source, f"mesh.clusters[{i}]", item)
        if cluster.name in clusters:
            raise StartupError(source, f"mesh.clusters[{i}].name", f"{cluster.name!r} is used twice")
        clusters[cluster.name] = cluster
    listeners: list[Listener] = []
    for i, item in enumerate(top.items("listeners")):
        path = f"mesh.listeners[{i}]"
        f = _Fields(
            source,
            path,
            item,
            ("name", "protocol", "address", "routes", "max_frame_size", "max_buffered", "idle_timeout_ms",
             "max_connections", "max_incomplete_bytes"),
        )  # fmt: skip
        protocol = f.choice("protocol", PROTOCOLS)
        routes = [_route(source, f"{path}.routes[{j}]", r, clusters, protocol) for j, r in enumerate(f.items("routes"))]
        names = [r.name for r in routes]
        for j, name in enumerate(names):
            if names.index(name) != j:
                raise StartupError(source, f"{path}.routes[{j}].name", f"{name!r} is used twice in this listener")
        max_frame_size = f.integer("max_frame_size", DEFAULT_MAX_FRAME_SIZE, 64, 2**31 - 1)
        max_incomplete_bytes = f.integer(
            "max_incomplete_bytes", max(DEFAULT_MAX_INCOMPLETE_BYTES, max_frame_size), 64, 2**40
        )
        if max_incomplete_bytes < max_frame_size:
            # below it, one client's largest frame could never arrive whole
            raise f.error(
                "max_incomplete_bytes",
                f"must be at least max_frame_size ({max_frame_size}), got {max_incomplete_bytes!r}",
            )
        listener = Listener(
            name=f.text("name", protocol) or protocol,
            protocol=protocol,
            address=_address(f, "address", DEFAULT_PORTS[protocol]),
            routes=tuple(routes),
            max_frame_size=max_frame_size,
            max_buffered=f.integer("max_buffered", DEFAULT_MAX_BUFFERED, 1024, 2**40),
            idle_timeout_ms=f.integer("idle_timeout_ms", DEFAULT_IDLE_TIMEOUT_MS, 0, 86_400_000),
            max_connections=f.integer("max_connections", DEFAULT_MAX_CONNECTIONS, 0, 1_000_000),
            max_incomplete_bytes=max_incomplete_bytes,
        )
        if any(existing.name == listener.name for existing in listeners):
            raise StartupError(source, f"{path}.name", f"{listener.name!r} is used twice")
        listeners.append(listener)
    return MeshSettings(listeners=tuple(listeners), clusters=tuple(clusters.values()))
