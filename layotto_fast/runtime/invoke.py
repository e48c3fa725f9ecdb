"""Service invocation: the records a call is made of, and the interfaces of its parts.

A call to target ``id`` runs the target's before-filters, goes out through the
target's channel (http, bolt, dubbo), and runs its after-filters. Filters are named
steps registered with ``register_filter``; the package registers its own, and a user's
module named in the config's ``invoke.filter_modules`` registers more on import.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_TIMEOUT_MS = 3000
# Request headers with a meaning to the sidecar, as Layotto names them.
TIMEOUT_HEADER = "rpc_request_timeout"
TARGET_ADDRESS_HEADER = "rpc_target_address"


@dataclass
class InvokeRequest:
    id: str
    method: str
    data: bytes
    content_type: str = ""
    verb: str = ""  # the HTTP verb ("" when the caller gave none)
    querystring: str = ""
    # Each value is its header bytes, one character per byte, as gRPC metadata arrives (see
    # ``as_header_bytes``, ``header_text``): a channel sends those bytes, whatever they spell.
    headers: dict[str, str] = field(default_factory=dict)
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    target_address: str = ""
    # The kind of channel the call goes out on (http, bolt, dubbo), for filters that act by it.
    channel: str = ""
    # Protocol-specific instructions a filter leaves for the channel (see the dubbo channel).
    extensions: dict[str, Any] = field(default_factory=dict)


def as_header_bytes(text: str) -> str:
    """``text`` (any Unicode, as a proto string or a config value) as a request header value:
    its UTF-8 bytes, one character per byte."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def header_text(value: str) -> str:
    """A request header value read back as the text its bytes spell in UTF-8, for a protocol
    whose headers are text (Bolt, Dubbo); bytes that are no UTF-8 (or a value past Latin-1,
    which holds no bytes) are kept as they are."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


@dataclass
class InvokeResult:
    data: bytes
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # What the channel decoded beyond the bytes (see the dubbo channel).
    extensions: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """One way out: sends a request to the target and returns its answer, or raises a
    domain error (DeadlineExceeded, Unavailable, or the upstream's own status as one)."""

    async def call(self, request: InvokeRequest) -> InvokeResult: ...

    async def close(self) -> None: ...


class InvokeFilter(Protocol):
    """A named step. ``before`` may rewrite the request, ``after`` the result; either may
    be a coroutine, and either may raise a domain error to fail the call. A filter used
    only before (or after) the call may leave the other as the identity."""

    def before(self, request: InvokeRequest) -> InvokeRequest | Awaitable[InvokeRequest]: ...

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult | Awaitable[InvokeResult]: ...


FilterFactory = Callable[[Mapping[str, Any]], InvokeFilter]
_FILTERS: dict[str, FilterFactory] = {}


def register_filter(name: str) -> Callable[[FilterFactory], FilterFactory]:
    """Registers ``factory(config) -> filter`` under ``name`` (config: the step's YAML keys).
    A filter made for some channels only says which in a ``channels`` attribute (a tuple of
    channel names): a target of another channel naming it stops start-up."""

    def register(factory: FilterFactory) -> FilterFactory:
        _FILTERS[name] = factory
        return factory

    return register


def filter_factory(name: str) -> FilterFactory | None:
    return _FILTERS.get(name)


def registered_filters() -> list[str]:
    return sorted(_FILTERS)


class PassThrough:
    """Base for filters that act on one side only."""

    def before(self, request: InvokeRequest) -> InvokeRequest | Awaitable[InvokeRequest]:
        return request

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult | Awaitable[InvokeResult]:
        return result
