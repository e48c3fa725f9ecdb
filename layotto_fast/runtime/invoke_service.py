"""InvokeService: look up the target, apply the request headers' rules, run the
before-filters, send through the target's channel, run the after-filters."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from layotto_fast.errors import Internal, InvalidArgument, NotFound, RuntimeApiError
from layotto_fast.runtime.invoke import (
    TARGET_ADDRESS_HEADER,
    TIMEOUT_HEADER,
    Channel,
    InvokeFilter,
    InvokeRequest,
    InvokeResult,
)
from layotto_fast.runtime.metadata import as_integer, is_host_port

T = TypeVar("T")
MAX_TIMEOUT_MS = 3_600_000


@dataclass(frozen=True)
class Target:
    id: str
    channel: Channel
    timeout_ms: int
    before: Sequence[InvokeFilter] = ()
    after: Sequence[InvokeFilter] = ()
    channel_kind: str = ""  # http, bolt, dubbo: InvokeRequest.channel


async def _settle(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


class InvokeService:
    def __init__(self, targets: Mapping[str, Target]) -> None:
        self._targets = dict(targets)

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        if not request.id:
            raise InvalidArgument("id: the target app id must not be empty")
        target = self._targets.get(request.id)
        if target is None:
            known = ", ".join(sorted(self._targets)) or "none configured"
            raise NotFound(f"id: no invoke target {request.id!r} (known: {known})")
        # The sidecar's own headers are read here and not sent on by any channel.
        request.timeout_ms = _timeout(request.headers.pop(TIMEOUT_HEADER, None), target.timeout_ms)
        request.target_address = _target_address(request.headers.pop(TARGET_ADDRESS_HEADER, ""))
        request.channel = target.channel_kind
        for i, step in enumerate(target.before):
            try:
                request = await _settle(step.before(request))
            except RuntimeApiError:
                raise  # a filter's own verdict on the call
            except Exception as exc:
                raise _filter_failed(target, "before_invoke", i, step, exc) from exc
            if not isinstance(request, InvokeRequest):
                raise _filter_failed(target, "before_invoke", i, step, _not_a(InvokeRequest, request))
        result = await target.channel.call(request)
        for i, step in enumerate(target.after):
            try:
                result = await _settle(step.after(request, result))
            except RuntimeApiError:
                raise
            except Exception as exc:
                raise _filter_failed(target, "after_invoke", i, step, exc) from exc
            if not isinstance(result, InvokeResult):
                raise _filter_failed(target, "after_invoke", i, step, _not_a(InvokeResult, result))
        return result

    async def close(self) -> None:
        for target in self._targets.values():
            await target.channel.close()


def _not_a(wanted: type, returned: object) -> TypeError:
    return TypeError(f"returned {type(returned).__name__}, not an {wanted.__name__}")


def _filter_failed(target: Target, stage: str, index: int, step: InvokeFilter, exc: Exception) -> Internal:
    # Named as the config names the step, and by its class, which its author knows.
    return Internal(
        f"invoke target {target.id!r}: filter {stage}[{index}] ({type(step).__name__}) failed: "
        f"{type(exc).__name__}: {exc}"
    )


def _timeout(header: str | None, default: int) -> int:
    if header is None or header == "":
        return default
    try:
        value = as_integer(header)
    except ValueError:
        raise InvalidArgument(f"{TIMEOUT_HEADER}: {header!r} is not a number of milliseconds") from None
    if value == 0:  # Layotto's SDKs send 0 for "not set": its invoker uses the default then
        return default
    if not 0 < value <= MAX_TIMEOUT_MS:
        raise InvalidArgument(f"{TIMEOUT_HEADER}: {value} is out of range (1 to {MAX_TIMEOUT_MS} ms)")
    return value


def _target_address(header: str) -> str:
    # Checked here for every channel: a mesh channel would otherwise make a direct cluster
    # of any text and only find out it cannot be dialled when the call fails.
    if header and not is_host_port(header):
        raise InvalidArgument(f"{TARGET_ADDRESS_HEADER}: must be host:port, got {header!r}")
    return header
