"""The metadata of the call a handler is serving, in both directions, whatever the transport.

A handler reads ``current_call().metadata`` (the request's application metadata)
and may add to ``headers`` (sent before the first response message) and
``trailers`` (sent with the status). Transports set it around each handler; it
lives in a ContextVar so it follows the handler across awaits.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

Pairs = list[tuple[str, str]]


@dataclass(slots=True)
class Call:
    raw_metadata: list[tuple[str, bytes]] | None = None
    headers: Pairs = field(default_factory=list)
    trailers: Pairs = field(default_factory=list)

    @property
    def metadata(self) -> dict[str, str | bytes]:
        """Request metadata by lower-case key: ``-bin`` keys as bytes, the rest as text."""
        result: dict[str, str | bytes] = {}
        for name, value in self.raw_metadata or ():
            result[name] = value if name.endswith("-bin") else value.decode("latin-1")
        return result


CURRENT: ContextVar[Call] = ContextVar("layotto_fast_call")


def current_call() -> Call:
    """The call being served; outside a handler, a fresh empty one."""
    call = CURRENT.get(None)
    if call is None:
        call = Call()
        CURRENT.set(call)
    return call
