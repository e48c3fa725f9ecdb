"""The lock service: validation, store lookup and the stored key for try-lock, unlock and keep-alive.

A store is handed ``lock|||<prefix>||<resource_id>``, the prefix chosen by the store's
``keyPrefix`` (``key_prefixes``), never the resource id as the app sent it: locks taken
through Layotto sidecars over the same backend are the same locks.
"""

from __future__ import annotations

from layotto_fast.errors import InvalidArgument, require
from layotto_fast.runtime.key_prefixes import check_key, key_prefix
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.lock import LockStatus, LockStore

MAX_EXPIRE_SECONDS = 2**31 - 1


class LockService:
    def __init__(self, components: Components, app_id: str) -> None:
        self._components = components
        # Each store's prefix of the keys it is given; a bad keyPrefix stops start-up, naming its file.
        self._prefixes = {name: key_prefix(m, app_id) for name, m in components.manifests("lock").items()}

    def _validate_request(self, store_name: str, resource_id: str, owner: str) -> tuple[LockStore, str]:
        """The request's store and the key it keeps the lock under, once ``resource_id`` and
        ``lock_owner`` are checked too."""
        store: LockStore = self._components.lookup("lock", store_name, "store_name")
        require(resource_id, "resource_id")
        require(owner, "lock_owner")
        check_key(resource_id, "resource_id")
        return store, self._prefixes[store_name] + resource_id

    async def try_lock(self, store_name: str, resource_id: str, owner: str, expire_seconds: int) -> bool:
        store, key = self._validate_request(store_name, resource_id, owner)
        _check_expire(expire_seconds)
        return await store.try_lock(key, owner, expire_seconds)

    async def unlock(self, store_name: str, resource_id: str, owner: str) -> LockStatus:
        store, key = self._validate_request(store_name, resource_id, owner)
        return await store.unlock(key, owner)

    async def keep_alive(self, store_name: str, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        store, key = self._validate_request(store_name, resource_id, owner)
        _check_expire(expire_seconds)
        return await store.keep_alive(key, owner, expire_seconds)


def _check_expire(expire: int) -> None:
    if expire <= 0 or expire > MAX_EXPIRE_SECONDS:
        raise InvalidArgument(f"expire is {expire}: must be between 1 and {MAX_EXPIRE_SECONDS} seconds")
