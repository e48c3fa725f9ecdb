"""InvokeService: look up the target, apply the request headers' rules, run the
before-filters, send through the target's channel, run the after-filters."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from layotto_fast.errors import InvalidArgument, NotFound
from layotto_fast.runtime.invoke import (
    TARGET_ADDRESS_HEADER,
    TIMEOUT_HEADER,
    Channel,
    InvokeFilter,
    InvokeRequest,
    InvokeResult,
)

T = TypeVar("T")
MAX_TIMEOUT_MS = 3_600_000


@dataclass(frozen=True)
class Target:
    id: str
    channel: Channel
    timeout_ms: int
    before: Sequence[InvokeFilter] = ()
    after: Sequence[InvokeFilter] = ()


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
        request.target_address = request.headers.pop(TARGET_ADDRESS_HEADER, "")
        for step in target.before:
            request = await _settle(step.before(request))
        result = await target.channel.call(request)
        for step in target.after:
            result = await _settle(step.after(request, result))
        return result

    async def close(self) -> None:
        for target in self._targets.values():
            await target.channel.close()


def _timeout(header: str | None, default: int) -> int:
    if header is None or header == "":
        return default
    try:
        value = int(header)
    except ValueError:
        raise InvalidArgument(f"{TIMEOUT_HEADER}: {header!r} is not a number of milliseconds") from None
    if not 0 < value <= MAX_TIMEOUT_MS:
        raise InvalidArgument(f"{TIMEOUT_HEADER}: {value} is out of range (1 to {MAX_TIMEOUT_MS} ms)")
    return value
