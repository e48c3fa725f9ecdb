"""Builds InvokeService's targets (channels and filter steps) from the ``invoke:`` settings."""

from __future__ import annotations

from collections.abc import Callable

from layotto_fast.components.invoke.config import FilterSpec, InvokeSettings, TargetSpec
from layotto_fast.components.invoke.http import HttpChannel, HttpChannelConfig
from layotto_fast.components.invoke.mesh_channels import BoltChannel, DubboChannel, MeshChannelConfig, MeshInvoker
from layotto_fast.http.client import MAX_RESPONSE_BYTES
from layotto_fast.runtime.invoke import Channel, InvokeFilter, filter_factory
from layotto_fast.runtime.invoke_service import Target


def needs_mesh(settings: InvokeSettings) -> bool:
    return any(t.channel in ("bolt", "dubbo") for t in settings.targets)


def build_targets(
    settings: InvokeSettings, invoker: Callable[[], MeshInvoker], max_answer_bytes: int = MAX_RESPONSE_BYTES
) -> dict[str, Target]:
    """``invoker`` gives the mesh's invoker; it is asked for only when a bolt or dubbo target
    exists. ``max_answer_bytes``: the largest http answer body read (the sidecar's largest message)."""
    return {spec.id: _target(spec, invoker, max_answer_bytes) for spec in settings.targets}


def _channel(spec: TargetSpec, invoker: Callable[[], MeshInvoker], max_answer_bytes: int) -> Channel:
    if spec.channel == "http":
        assert spec.address is not None
        return HttpChannel(
            HttpChannelConfig(
                address=spec.address, max_connections=spec.max_connections, max_response_bytes=max_answer_bytes
            )
        )
    config = MeshChannelConfig(
        cluster=spec.cluster,
        address=spec.address,
        service=spec.service,
        version=spec.version,
        group=spec.group,
        service_configured=spec.service_configured,
        class_name=spec.class_name,
        codec=spec.codec,
    )
    if spec.channel == "bolt":
        return BoltChannel(config, invoker())
    return DubboChannel(config, invoker())


def _target(spec: TargetSpec, invoker: Callable[[], MeshInvoker], max_answer_bytes: int) -> Target:
    def steps(specs: tuple[FilterSpec, ...]) -> list[InvokeFilter]:
        made = []
        for step in specs:
            factory = filter_factory(step.name)
            assert factory is not None, "checked when the settings were read"
            made.append(factory(step.config))
        return made

    return Target(
        id=spec.id,
        channel=_channel(spec, invoker, max_answer_bytes),
        timeout_ms=spec.timeout_ms,
        before=steps(spec.before_invoke),
        after=steps(spec.after_invoke),
        channel_kind=spec.channel,
    )
