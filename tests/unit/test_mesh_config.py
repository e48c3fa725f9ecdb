"""The ``mesh:`` section of --config: defaults, the native shape, and errors that name the field."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from layotto_fast_native import MeshProxy

from layotto_fast import settings
from layotto_fast.errors import StartupError
from layotto_fast.mesh.config import MeshSettings, parse

if TYPE_CHECKING:
    from layotto_fast_native import MeshConfig as NativeMeshConfig

R0 = "mesh.listeners[0].routes[0]"
CLUSTER = {"name": "echo", "protocol": "bolt", "hosts": ["127.0.0.1:12200"]}


def mesh(**listener: Any) -> dict[str, Any]:
    return {
        "listeners": [{"protocol": "bolt", "routes": [{"name": "r", "cluster": "echo"}], **listener}],
        "clusters": [CLUSTER],
    }


def test_defaults_follow_the_documented_ports_and_limits() -> None:
    parsed = parse(mesh(), "f.yaml")
    listener = parsed.listeners[0]
    assert (listener.name, listener.address) == ("bolt", "127.0.0.1:12220")
    route = listener.routes[0]
    assert (route.timeout_ms, route.retries, route.rate_limit, route.clusters) == (3000, 1, None, (("echo", 1),))
    cluster = parsed.clusters[0]
    assert (cluster.balancing, cluster.max_requests, cluster.outlier_consecutive_failures) == ("round_robin", 10_000, 5)
    assert cluster.health_check_interval_ms == 0
    dubbo = parse({"listeners": [{"protocol": "dubbo"}]}, "f.yaml")
    assert dubbo.listeners[0].address == "127.0.0.1:20882"


def test_the_native_shape_carries_every_setting() -> None:
    raw = mesh(
        protocol="dubbo",  # a version condition is Dubbo's: Bolt's version is in its service name
        routes=[
            {
                "name": "r",
                "match": {"service_prefix": "com.", "version": "1.0", "headers": {"zone": "gz"}},
                "clusters": [{"name": "echo", "weight": 3}],
                "timeout_ms": 250,
                "retries": 2,
                "rate_limit": {"requests_per_second": 100, "burst": 10},
            }
        ],
    )
    raw["clusters"][0] = {
        **CLUSTER,
        "protocol": "dubbo",
        "balancing": "least_request",
        "circuit_breaker": {"max_requests": 7, "max_pending": 3},
        "outlier_detection": {"consecutive_failures": 2, "ejection_ms": 500, "max_ejection_percent": 20},
        "health_check": {"interval_ms": 100, "timeout_ms": 50},
        "idle_heartbeat_ms": 0,
    }
    native = parse(raw, "f.yaml").to_native()
    route = native["listeners"][0]["routes"][0]
    assert route == {
        "name": "r",
        "service": None,
        "service_prefix": "com.",
        "version": "1.0",
        "headers": [("zone", "gz")],
        "clusters": [("echo", 3)],
        "timeout_ms": 250,
        "retries": 2,
        "rate_limit": (100.0, 10.0),
    }
    cluster = native["clusters"][0]
    assert (cluster["max_requests"], cluster["max_pending"], cluster["balancing"]) == (7, 3, "least_request")
    assert (cluster["outlier_consecutive_failures"], cluster["ejection_ms"]) == (2, 500)
    assert cluster["max_ejection_percent"] == 20
    assert (cluster["health_check_interval_ms"], cluster["health_check_timeout_ms"]) == (100, 50)
    assert cluster["idle_heartbeat_ms"] == 0
    assert parse(mesh(), "f.yaml").to_native()["clusters"][0]["idle_heartbeat_ms"] == 15_000


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        (mesh(protocol="http"), "mesh.listeners[0].protocol", "must be one of bolt, dubbo"),
        (mesh(address="nowhere"), "mesh.listeners[0].address", "must be host:port"),
        (mesh(routes=[{"name": "r", "cluster": "nope"}]), f"{R0}.cluster", "'nope' is not a cluster"),
        (mesh(routes=[{"name": "r"}]), f"{R0}.cluster", "is required"),
        (mesh(routes=[{"name": "r", "cluster": "echo", "timeout_ms": 0}]), f"{R0}.timeout_ms", "from 1"),
        (mesh(routes=[{"name": "r", "cluster": "echo", "match": {"service": "a", "service_prefix": "b"}}]),
         f"{R0}.match.service_prefix", "not both"),
        (mesh(routes=[{"name": "r", "cluster": "echo", "surprise": 1}]), f"{R0}.surprise", "unknown field"),
        (mesh(routes=[{"name": "r", "cluster": "echo"}, {"name": "r", "cluster": "echo"}]),
         "mesh.listeners[0].routes[1].name", "used twice"),
        ({"listeners": [{"protocol": "dubbo", "routes": [{"name": "r", "cluster": "echo"}]}], "clusters": [CLUSTER]},
         f"{R0}.cluster", "speaks bolt, this listener dubbo"),
        ({"clusters": [{**CLUSTER, "hosts": []}]}, "mesh.clusters[0].hosts", "at least one"),
        ({"clusters": [{**CLUSTER, "hosts": ["x"]}]}, "mesh.clusters[0].hosts[0]", "host:port"),
        # Port 0 is a listener's "any port" (listeners here bind 127.0.0.1:0): nothing connects to it.
        ({"clusters": [{**CLUSTER, "hosts": ["127.0.0.1:12200", "127.0.0.1:0"]}]}, "mesh.clusters[0].hosts[1]",
         "port from 1 to 65535, got '127.0.0.1:0'"),
        # Bolt requests reach the routes with no version (it is inside the service header):
        # the condition would leave every request unrouted.
        (mesh(routes=[{"name": "r", "cluster": "echo", "match": {"service": "com.example.EchoService",
                                                               "version": "1.0"}}]),
         f"{R0}.match.version", "part of the service name (e.g. service: com.example.EchoService:1.0)"),
        ({"clusters": [{**CLUSTER, "balancing": "random"}]}, "mesh.clusters[0].balancing", "round_robin, least"),
        ({"clusters": [CLUSTER, CLUSTER]}, "mesh.clusters[1].name", "used twice"),
        (mesh(routes=[{"name": "r", "cluster": "echo", "rate_limit": {"requests_per_second": 5, "burst": 0.5}}]),
         f"{R0}.rate_limit.burst", "at least 1"),
        # NaN passed "<= 0" and stopped the native proxy with a ValueError naming no file
        (mesh(routes=[{"name": "r", "cluster": "echo", "rate_limit": {"requests_per_second": float("nan")}}]),
         f"{R0}.rate_limit.requests_per_second", "finite number above 0, got nan"),
        (mesh(routes=[{"name": "r", "cluster": "echo",
                       "rate_limit": {"requests_per_second": 5, "burst": float("nan")}}]),
         f"{R0}.rate_limit.burst", "finite number above 0"),
        (mesh(routes=[{"name": "r", "cluster": "echo", "rate_limit": {"requests_per_second": float("inf")}}]),
         f"{R0}.rate_limit.requests_per_second", "finite number above 0, got inf"),
        # metrics and health would be one host's, counted twice (and /metrics would repeat a sample)
        ({"clusters": [{**CLUSTER, "hosts": ["127.0.0.1:12200", "127.0.0.1:12200"]}]}, "mesh.clusters[0].hosts[1]",
         "listed twice (hosts[0])"),
        # named as the route spells it: before, ".cluster", which it does not have
        (mesh(routes=[{"name": "r", "clusters": [{"name": "echo"}, {"name": "nope", "weight": 2}]}]),
         f"{R0}.clusters[1].name", "'nope' is not a cluster"),
        ([], "mesh", "must be a mapping"),
    ],
)  # fmt: skip
def test_mistakes_name_the_field(raw: Any, field: str, problem: str) -> None:
    with pytest.raises(StartupError) as caught:
        parse(raw, "mesh.yaml")
    assert caught.value.source == "mesh.yaml"
    assert caught.value.field == field
    assert problem in caught.value.problem


@pytest.mark.parametrize(("rate", "burst"), [(0.5, 1.0), (1, 1.0), (250, 250.0)])
def test_a_rate_limits_burst_defaults_to_its_rate_and_holds_at_least_one_token(rate: float, burst: float) -> None:
    # Below one token the native bucket never lets a request through: a slow rate such as
    # one request every two seconds must still let that request pass.
    raw = mesh(routes=[{"name": "r", "cluster": "echo", "rate_limit": {"requests_per_second": rate}}])
    limit = parse(raw, "f.yaml").listeners[0].routes[0].rate_limit
    assert limit is not None and (limit.requests_per_second, limit.burst) == (float(rate), burst)


def test_the_config_file_carries_the_mesh_and_its_ports_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"grpc_port": 5000, "mesh": mesh()}))
    loaded = settings.load(str(path), {})
    assert isinstance(loaded.mesh, MeshSettings) and loaded.config_file == str(path)
    assert settings.read_mesh(str(path)) == loaded.mesh
    path.write_text(yaml.safe_dump({"grpc_port": 12220, "mesh": mesh()}))
    with pytest.raises(StartupError, match=r"mesh.listeners\[0\].address: 12220 is also the grpc_port"):
        settings.load(str(path), {})


def test_the_readme_s_annotated_mesh_section_is_valid(tmp_path: Path) -> None:
    """Copied as written, it starts (before, it gave a version condition to a Bolt route)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("mesh:\n  listeners:")]
    path = tmp_path / "config.yaml"
    path.write_text(block)
    loaded = settings.load(str(path), {})
    assert loaded.mesh is not None and loaded.mesh.listeners[0].routes[0].rate_limit is not None


def test_the_quick_start_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "mesh.yaml"
    loaded = settings.load(str(example), {})
    assert loaded.mesh is not None
    listeners = {listener.protocol: listener for listener in loaded.mesh.listeners}
    assert listeners["bolt"].address == "127.0.0.1:12220"
    assert listeners["bolt"].routes[0].match.service == "com.example.EchoService:1.0"
    assert listeners["dubbo"].address == "127.0.0.1:20882"
    assert {c.name: c.hosts for c in loaded.mesh.clusters} == {
        "bolt-echo": ("127.0.0.1:12200",),
        "dubbo-echo": ("127.0.0.1:20880",),
    }


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda c: c["listeners"][0].update(protocol="http"), 'ListenerConfig.protocol: protocol "http"'),
        (lambda c: c["listeners"][0]["routes"][0].update(clusters=[]), 'route "r": names no cluster'),
        (lambda c: c["listeners"][0]["routes"][0].update(clusters=[("nope", 1)]), '"nope" is not a cluster'),
        (lambda c: c["clusters"][0].update(protocol="dubbo"), "speaks dubbo, the listener bolt"),
        (lambda c: c["listeners"][0]["routes"][0].update(rate_limit=(0.5, 0.5)), "burst 0.5"),
    ],
)
def test_the_native_proxy_refuses_a_configuration_the_thread_could_not_run(
    spoil: Callable[[NativeMeshConfig], None], problem: str
) -> None:
    config = parse(mesh(address="127.0.0.1:0"), "f.yaml").to_native()
    spoil(config)
    with pytest.raises(ValueError, match=re.escape(problem)):
        MeshProxy(config)


def test_a_call_given_an_address_goes_through_a_clusters_defaults_without_ejection() -> None:
    native = parse(mesh(address="127.0.0.1:0"), "f.yaml").to_native()
    given = native["clusters"][0]  # named in the YAML with nothing but its hosts
    direct = native["direct"]
    assert direct["outlier_consecutive_failures"] == 0  # ejecting its one host would refuse every call
    assert {
        k: v for k, v in direct.items() if k not in ("name", "protocol", "hosts", "outlier_consecutive_failures")
    } == {k: v for k, v in given.items() if k not in ("name", "protocol", "hosts", "outlier_consecutive_failures")}
    MeshProxy(native).stop()


def test_the_native_proxy_refuses_a_reload_that_changes_its_listeners() -> None:
    """Each bound socket is served with its listener's codec and routes: a reload naming
    other listeners (here none) is refused rather than run against them."""
    native = parse(mesh(address="127.0.0.1:0"), "f.yaml").to_native()
    proxy = MeshProxy(native)
    try:
        proxy.reload(native)  # the same listeners: taken
        with pytest.raises(ValueError, match="keeps the listeners"):
            proxy.reload({**native, "listeners": []})
    finally:
        proxy.stop()
