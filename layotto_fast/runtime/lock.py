"""The distributed lock building block: try-lock with expiry, unlock, keep-alive."""

from __future__ import annotations

import enum
from typing import Protocol

from layotto_fast.runtime.component import Component


class LockStatus(enum.IntEnum):
    """Matches the wire values of UnlockResponse.Status / LockKeepAliveResponse.Status."""

    SUCCESS = 0
    LOCK_UNEXIST = 1
    LOCK_BELONG_TO_OTHERS = 2
    INTERNAL_ERROR = 3


class LockStore(Component, Protocol):
    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool: ...

    async def unlock(self, resource_id: str, owner: str) -> LockStatus: ...

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus: ...
