"""The secrets building block: read-only secrets by key."""

from __future__ import annotations

from typing import Protocol

from layotto_fast.runtime.component import Component


class SecretStore(Component, Protocol):
    async def get(self, key: str) -> dict[str, str]:
        """The values stored under ``key``; NotFound when there is none."""
        ...

    async def bulk_get(self) -> dict[str, dict[str, str]]: ...
