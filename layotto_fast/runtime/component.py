"""What every component is, whatever its building block."""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

from layotto_fast.manifest import ComponentManifest


@runtime_checkable
class Component(Protocol):
    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        """Parse metadata into a typed config; raise StartupError naming the field."""
        ...

    async def init(self) -> None:
        """Connect to the backend; raise to mark the component DOWN."""
        ...

    async def ping(self) -> None:
        """Raise when the backend is unhealthy; feeds readiness."""
        ...

    async def close(self) -> None: ...


class NoBackend:
    """Mixin for embedded components: nothing to connect, always healthy."""

    async def init(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
