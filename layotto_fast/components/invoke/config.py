"""The ``invoke:`` section of the ``--config`` YAML: InvokeService's targets.

```yaml
invoke:
  filter_modules: [my_company.filters]   # imported at start-up; they call register_filter
  targets:
    - id: echo-http                      # InvokeServiceRequest.id
      channel: http                      # http | bolt | dubbo
      address: 127.0.0.1:8080            # http: the upstream; bolt/dubbo: one host, instead of cluster
      timeout_ms: 3000                   # when the call has no rpc_request_timeout header
      max_connections: 256               # http: open at once per upstream address (0: no limit)
      before_invoke: [{name: headers, set: {x-from: sidecar}}]
      after_invoke: []
    - id: com.example.EchoService:1.0
      channel: bolt
      cluster: bolt-echo                 # a cluster of the mesh: section
      service: com.example.EchoService:1.0   # default: the id
      class: com.alipay.sofa.rpc.core.request.SofaRequest
      codec: hessian2                    # hessian2 | protobuf | a Bolt codec number
    - id: dubbo-echo
      channel: dubbo
      cluster: dubbo-echo
      service: com.example.EchoService   # the Dubbo path
      version: "1.0"
      group: team-a                      # the provider's group, when it was exported with one
      before_invoke: [{name: dubbo_json_rpc}]
      after_invoke: [{name: dubbo_json_rpc}]
```
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layotto_fast.errors import StartupError
from layotto_fast.runtime.invoke import DEFAULT_TIMEOUT_MS, filter_factory, registered_filters
from layotto_fast.runtime.invoke_service import MAX_TIMEOUT_MS
from layotto_fast.runtime.metadata import is_host_port

CHANNELS = ("http", "bolt", "dubbo")
# Connections the http channel opens to one upstream address at once, each carrying one
# request: calls past that wait for one within their timeout, rather than open sockets
# without bound (Layotto's http channel takes its pool size from its config too).
DEFAULT_HTTP_MAX_CONNECTIONS = 256
MAX_HTTP_MAX_CONNECTIONS = 65_536
BOLT_CODECS = {"hessian2": 1, "protobuf": 11}


@dataclass(frozen=True)
class FilterSpec:
    name: str
    config: Mapping[str, Any]


@dataclass(frozen=True)
class TargetSpec:
    id: str
    channel: str
    address: str | None = None
    cluster: str | None = None
    service: str = ""
    version: str = ""
    group: str = ""  # dubbo only
    service_configured: bool = False  # service: was written (else it is the id)
    class_name: str = "com.alipay.sofa.rpc.core.request.SofaRequest"
    codec: int = 1
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS  # http only
    before_invoke: tuple[FilterSpec, ...] = ()
    after_invoke: tuple[FilterSpec, ...] = ()


@dataclass(frozen=True)
class InvokeSettings:
    targets: tuple[TargetSpec, ...] = ()
    filter_modules: tuple[str, ...] = ()


def _fail(source: str, field: str, problem: str) -> StartupError:
    return StartupError(source, field, problem)


def _text(raw: Mapping[str, Any], name: str, path: str, source: str, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise _fail(source, f"{path}.{name}", "is required")
        return None
    if not isinstance(value, str) or not value:
        raise _fail(source, f"{path}.{name}", f"must be a non-empty string, got {value!r}")
    return value


def _filters(raw: Any, path: str, source: str, channel: str) -> tuple[FilterSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(source, path, f"must be a list of {{name: ...}} steps, got {raw!r}")
    specs = []
    for i, step in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(step, Mapping) or not isinstance(step.get("name"), str):
            raise _fail(source, where, f"must be a mapping with a name, got {step!r}")
        name = step["name"]
        factory = filter_factory(name)
        if factory is None:
            raise _fail(source, f"{where}.name", f"no filter {name!r} (known: {', '.join(registered_filters())})")
        config = {k: v for k, v in step.items() if k != "name"}
        try:
            built = factory(config)
        except (ValueError, TypeError) as exc:
            raise _fail(source, where, f"filter {name!r} refused its configuration: {exc}") from None
        except Exception as exc:  # a user's factory may fail in any way
            raise _fail(source, where, f"filter {name!r} failed to build: {type(exc).__name__}: {exc}") from None
        serves = getattr(built, "channels", None)  # a filter made for some channels says which
        if serves is not None and channel not in serves:
            raise _fail(source, f"{where}.name",
                        f"filter {name!r} works on {', '.join(serves)} targets, not on a {channel} one")  # fmt: skip
        specs.append(FilterSpec(name, config))
    return tuple(specs)


def parse(raw: Any, source: str) -> InvokeSettings:
    if not isinstance(raw, Mapping):
        raise _fail(source, "invoke", f"must be a mapping, got {raw!r}")
    unknown = sorted(set(map(str, raw)) - {"targets", "filter_modules"})
    if unknown:
        raise _fail(source, f"invoke.{unknown[0]}", "unknown field (known: filter_modules, targets)")
    modules = raw.get("filter_modules") or []
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise _fail(source, "invoke.filter_modules", f"must be a list of module names, got {modules!r}")
    # The package's own filters register on import, the user's modules after them.
    importlib.import_module("layotto_fast.components.invoke.filters")
    for i, module in enumerate(modules):
        try:
            importlib.import_module(module)
        except Exception as exc:  # a user's module may fail in any way while it runs
            raise _fail(
                source, f"invoke.filter_modules[{i}]", f"cannot import {module!r}: {type(exc).__name__}: {exc}"
            ) from None
    targets: list[TargetSpec] = []
    items = raw.get("targets") or []
    if not isinstance(items, list):
        raise _fail(source, "invoke.targets", f"must be a list, got {items!r}")
    known = ("id", "channel", "address", "cluster", "service", "version", "group", "class", "codec", "timeout_ms",
             "max_connections", "before_invoke", "after_invoke")  # fmt: skip
    for i, item in enumerate(items):
        path = f"invoke.targets[{i}]"
        if not isinstance(item, Mapping):
            raise _fail(source, path, f"must be a mapping, got {item!r}")
        extra = sorted(set(map(str, item)) - set(known))
        if extra:
            raise _fail(source, f"{path}.{extra[0]}", f"unknown field (known: {', '.join(known)})")
        target_id = _text(item, "id", path, source, required=True)
        assert target_id is not None
        if any(t.id == target_id for t in targets):
            raise _fail(source, f"{path}.id", f"{target_id!r} is used twice")
        channel = item.get("channel")
        if channel not in CHANNELS:
            raise _fail(source, f"{path}.channel", f"must be one of {', '.join(CHANNELS)}, got {channel!r}")
        address = _text(item, "address", path, source)
        cluster = _text(item, "cluster", path, source)
        if address is not None and not is_host_port(address):
            raise _fail(source, f"{path}.address", f"must be host:port, got {address!r}")
        if channel == "http":
            if address is None:
                raise _fail(source, f"{path}.address", "is required for the http channel")
            if cluster is not None:
                raise _fail(source, f"{path}.cluster", "the http channel takes an address, not a cluster")
        elif (address is None) == (cluster is None):
            raise _fail(source, f"{path}.cluster", f"the {channel} channel needs a cluster or an address (one)")
        codec = item.get("codec", "hessian2")
        codec_id = BOLT_CODECS.get(codec) if isinstance(codec, str) else codec
        if isinstance(codec_id, bool) or not isinstance(codec_id, int) or not 0 <= codec_id <= 255:
            raise _fail(source, f"{path}.codec", f"must be hessian2, protobuf or a number 0-255, got {codec!r}")
        timeout = item.get("timeout_ms", DEFAULT_TIMEOUT_MS)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT_MS:
            raise _fail(source, f"{path}.timeout_ms", f"must be an integer from 1 to {MAX_TIMEOUT_MS}, got {timeout!r}")
        max_connections = item.get("max_connections", DEFAULT_HTTP_MAX_CONNECTIONS)
        if "max_connections" in item and channel != "http":
            raise _fail(source, f"{path}.max_connections",
                        f"the {channel} channel's connections are its cluster's (mesh: clusters)")  # fmt: skip
        if (isinstance(max_connections, bool) or not isinstance(max_connections, int)
                or not 0 <= max_connections <= MAX_HTTP_MAX_CONNECTIONS):  # fmt: skip
            raise _fail(source, f"{path}.max_connections",
                        f"must be an integer from 0 (no limit) to {MAX_HTTP_MAX_CONNECTIONS}, "
                        f"got {max_connections!r}")  # fmt: skip
        version = item.get("version", "")
        if not isinstance(version, str):
            raise _fail(source, f"{path}.version", f"must be a string, got {version!r}")
        if "version" in item and channel != "dubbo":
            hint = " (a bolt target names it in its service, as SOFARPC does: com.example.Echo:1.0)"
            raise _fail(source, f"{path}.version", "only a dubbo target has a version" + hint * (channel == "bolt"))
        for bolt_only in ("class", "codec"):
            if bolt_only in item and channel != "bolt":
                raise _fail(source, f"{path}.{bolt_only}", f"only a bolt target has a {bolt_only}")
        group = item.get("group", "")
        if not isinstance(group, str):
            raise _fail(source, f"{path}.group", f"must be a string, got {group!r}")
        if group and channel != "dubbo":
            raise _fail(source, f"{path}.group", "only a dubbo target has a group")
        targets.append(
            TargetSpec(
                id=target_id,
                channel=channel,
                address=address,
                cluster=cluster,
                service=_text(item, "service", path, source) or target_id,
                version=version,
                group=group,
                service_configured=item.get("service") is not None,
                class_name=_text(item, "class", path, source) or TargetSpec.class_name,
                codec=codec_id,
                timeout_ms=timeout,
                max_connections=max_connections,
                before_invoke=_filters(item.get("before_invoke"), f"{path}.before_invoke", source, channel),
                after_invoke=_filters(item.get("after_invoke"), f"{path}.after_invoke", source, channel),
            )
        )
    return InvokeSettings(targets=tuple(targets), filter_modules=tuple(modules))
