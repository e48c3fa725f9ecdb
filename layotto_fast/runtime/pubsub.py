"""The pub/sub building block (delivery to the app's callback comes with its own issue)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from layotto_fast.runtime.component import Component


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    topic: str
    data: bytes
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Message], Awaitable[None]]


class PubSub(Component, Protocol):
    async def publish(self, topic: str, data: bytes, content_type: str, metadata: dict[str, str]) -> str:
        """Publish and return the message id."""
        ...

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]: ...
