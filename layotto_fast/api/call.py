"""The metadata of the call a handler is serving, in both directions, whatever the transport.

A handler reads ``current_call().metadata`` (the request's application metadata)
and may add to ``headers`` (sent before the first response message) and
``trailers`` (sent with the status). Transports set it around each handler; it
lives in a ContextVar so it follows the handler across awaits. The lists are made
on first use: most calls carry no metadata, and this object is built per call.
"""

from __future__ import annotations

from contextvars import ContextVar

Pairs = list[tuple[str, str]]


class Call:
    __slots__ = ("_headers", "_trailers", "raw_metadata")

    def __init__(self, raw_metadata: list[tuple[str, bytes]] | None = None) -> None:
        self.raw_metadata = raw_metadata
        self._headers: Pairs | None = None
        self._trailers: Pairs | None = None

    @property
    def metadata(self) -> dict[str, str | bytes]:
        """Request metadata by lower-case key: ``-bin`` keys as bytes, the rest as text."""
        result: dict[str, str | bytes] = {}
        for name, value in self.raw_metadata or ():
            result[name] = value if name.endswith("-bin") else value.decode("latin-1")
        return result

    def text(self, name: str) -> str:
        """The last value of text metadata ``name`` (lower case), "" when absent: no dict built."""
        found = ""
        for key, value in self.raw_metadata or ():
            if key == name:
                found = value.decode("latin-1")
        return found

    @property
    def headers(self) -> Pairs:
        if self._headers is None:
            self._headers = []
        return self._headers

    @property
    def trailers(self) -> Pairs:
        if self._trailers is None:
            self._trailers = []
        return self._trailers

    def take_headers(self) -> Pairs | None:
        """Initial metadata not sent yet (None when there is none), now considered sent."""
        headers, self._headers = self._headers or None, None
        return headers

    def pending_trailers(self) -> Pairs | None:
        return self._trailers or None


# None while no one has asked for the call's metadata (the common case).
CURRENT: ContextVar[Call | None] = ContextVar("layotto_fast_call", default=None)


def current_call() -> Call:
    """The call being served; outside a handler, a fresh empty one."""
    call = CURRENT.get()
    if call is None:
        call = Call()
        CURRENT.set(call)
    return call
