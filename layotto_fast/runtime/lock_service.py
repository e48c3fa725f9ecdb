"""The lock service: validation and store lookup for try-lock, unlock and keep-alive."""

from __future__ import annotations

from layotto_fast.errors import InvalidArgument, require
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.lock import LockStatus, LockStore

MAX_EXPIRE_SECONDS = 2**31 - 1


class LockService:
    def __init__(self, components: Components) -> None:
        self._components = components

    def _validate_request(self, store_name: str, resource_id: str, owner: str) -> LockStore:
        """The request's store, once ``resource_id`` and ``lock_owner`` are checked too."""
        store: LockStore = self._components.lookup("lock", store_name, "store_name")
        require(resource_id, "resource_id")
        require(owner, "lock_owner")
        return store

    async def try_lock(self, store_name: str, resource_id: str, owner: str, expire_seconds: int) -> bool:
        store = self._validate_request(store_name, resource_id, owner)
        _check_expire(expire_seconds)
        return await store.try_lock(resource_id, owner, expire_seconds)

    async def unlock(self, store_name: str, resource_id: str, owner: str) -> LockStatus:
        store = self._validate_request(store_name, resource_id, owner)
        return await store.unlock(resource_id, owner)

    async def keep_alive(self, store_name: str, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        store = self._validate_request(store_name, resource_id, owner)
        _check_expire(expire_seconds)
        return await store.keep_alive(resource_id, owner, expire_seconds)


def _check_expire(expire: int) -> None:
    if expire <= 0 or expire > MAX_EXPIRE_SECONDS:
        raise InvalidArgument(f"expire is {expire}: must be between 1 and {MAX_EXPIRE_SECONDS} seconds")
