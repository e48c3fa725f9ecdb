"""``lock.etcd``: distributed locks held in etcd, released by a lease when they expire.

A lock is the key ``{keyPrefixPath}{resource_id}`` holding the owner, attached to a
lease of ``expire_seconds``, as Layotto's etcd lock keeps it: ``resource_id`` is the key
the lock service gives (``lock|||<prefix>||<id>``, its prefix chosen by the manifest's
``keyPrefix``: ``runtime/key_prefixes.py``), and ``keyPrefixPath`` is the component's own
(default ``/layotto/``; a ``/`` is put at either end where it is missing). So a lock
taken through a Layotto sidecar on the same etcd is the same key.

- try-lock grants a lease, then runs one transaction "the key was never created
  (create_revision == 0) -> put key = owner with the lease". etcd applies
  transactions one at a time, so of any number of sidecars only one can succeed
  until the key is gone again (unlock, or the lease expiring).
- unlock is one transaction "the key holds the owner -> delete it".
- keep-alive moves the key to a new lease of ``expire_seconds`` when it still holds
  the owner and has not changed since it was read (mod_revision), then revokes the
  old lease. A lease is never refreshed: each one expires when it was granted for.

etcd revokes an expired lease up to about half a second late (its lessor checks
twice a second, and a new leader extends every lease). So that a lock expires on
time here as it does in ``lock.in-memory``, this sidecar remembers when each lease it
granted expires by its own clock (measured from before the grant was sent, so never
later than etcd's expiry) and treats a key on such a lease as absent from then on,
revoking the lease. A lock taken or extended through another sidecar expires when
etcd says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any, Self

from layotto_fast.components.etcd_client import (
    EtcdConfig,
    EtcdConnection,
    op_delete,
    op_get,
    op_put,
    range_kvs,
    same_create,
    same_mod,
    same_value,
)
from layotto_fast.errors import Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.lock import LockStatus

PATH_KEY = "keyPrefixPath"
DEFAULT_PATH = "/layotto/"
KEEP_ALIVE_ATTEMPTS = 5
REVOKE_TIMEOUT = 1.0
FORGET_AFTER = 10.0  # seconds past its expiry a lease's deadline is still kept
PRUNE_AT = 4096


class EtcdLockStore:
    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._conn = EtcdConnection(config)
        self._deadlines: dict[int, float] = {}  # lease granted here -> when it expires (monotonic)
        self._prune_at = PRUNE_AT
        self._cleanup: set[asyncio.Task[Any]] = set()  # revokes, and grants whose caller went away

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        # keyPrefix is the lock service's strategy here, not a path: only keyPrefixPath is one.
        config = EtcdConfig.from_manifest(manifest, DEFAULT_PATH)
        return cls(dataclasses.replace(config, key_prefix=path_prefix(manifest)))

    async def init(self) -> None:
        await self._conn.open()

    async def ping(self) -> None:
        await self._conn.ping()

    async def close(self) -> None:
        # Grants whose caller went away, and revokes, finish first, for REVOKE_TIMEOUT at most:
        # a grant cancelled here would leave its lease, keyless, for its whole expiry. A grant
        # that finishes adds its revoke, which is waited for in turn.
        loop = asyncio.get_running_loop()
        until = loop.time() + REVOKE_TIMEOUT
        while self._cleanup and (left := until - loop.time()) > 0:
            await asyncio.wait(list(self._cleanup), timeout=left)
        for task in list(self._cleanup):
            task.cancel()
        await asyncio.gather(*self._cleanup, return_exceptions=True)
        await self._conn.close()

    def _key(self, resource_id: str) -> bytes:
        return f"{self.config.key_prefix}{resource_id}".encode()

    # --- leases granted here ----------------------------------------------------------------------

    def _granted(self, lease_id: int, deadline: float) -> None:
        if len(self._deadlines) >= self._prune_at:
            stale = time.monotonic() - FORGET_AFTER
            self._deadlines = {lease: due for lease, due in self._deadlines.items() if due > stale}
            # Twice what is left: with many leases live, pruning at a fixed size would walk
            # them all on every grant.
            self._prune_at = max(PRUNE_AT, 2 * len(self._deadlines))
        self._deadlines[lease_id] = deadline

    def _expired_here(self, lease_id: int) -> bool:
        deadline = self._deadlines.get(lease_id)
        return deadline is not None and deadline <= time.monotonic()

    async def _release_expired(self, lease_id: int) -> None:
        """Revoke a lease this sidecar knows has expired: its key goes now rather than later."""
        self._deadlines.pop(lease_id, None)
        await self._conn.revoke(lease_id)

    def _revoke_later(self, lease_id: int) -> None:
        """Revoke a lease no key uses any more, without making the caller wait for it."""
        self._deadlines.pop(lease_id, None)
        if lease_id:
            task = asyncio.get_running_loop().create_task(self._revoke_quietly(lease_id))
            self._cleanup.add(task)
            task.add_done_callback(self._cleanup.discard)

    def _settle_later(self, key: bytes, new_lease: int, deadline: float, old_lease: int) -> None:
        """After a keep-alive whose move of ``key`` onto ``new_lease`` may or may not have
        happened: the lease the key is not on is revoked, once that is known. Left unknown
        (etcd unreachable), neither is: each expires by itself."""
        task = asyncio.get_running_loop().create_task(self._settle(key, new_lease, deadline, old_lease))
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    async def _settle(self, key: bytes, new_lease: int, deadline: float, old_lease: int) -> None:
        try:
            held = _first(range_kvs(await self._conn.txn([], [op_get(key)]), 0))
        except Unavailable:
            return
        if held is not None and held.lease == new_lease:
            self._granted(new_lease, deadline)
            await self._revoke_quietly(old_lease)
        else:
            await self._revoke_quietly(new_lease)

    async def _revoke_quietly(self, lease_id: int) -> None:
        with contextlib.suppress(Unavailable):  # it expires by itself anyway
            await self._conn.revoke(lease_id, REVOKE_TIMEOUT)

    async def _grant(self, expire_seconds: int) -> tuple[int, float]:
        started = time.monotonic()
        grant = asyncio.ensure_future(self._conn.grant(expire_seconds))
        try:
            lease_id = await asyncio.shield(grant)
        except asyncio.CancelledError:
            # The caller went away, not the grant: etcd may hold the lease already, or get it
            # still, and with no key on it, it would live for expire_seconds (up to 68 years).
            # Cancelling the call would not undo that, and would lose its id: let it finish.
            self._cleanup.add(grant)
            grant.add_done_callback(self._granted_too_late)
            raise
        return lease_id, started + expire_seconds

    def _granted_too_late(self, grant: asyncio.Task[int]) -> None:
        self._cleanup.discard(grant)
        if not grant.cancelled() and grant.exception() is None:
            self._revoke_later(grant.result())

    # --- the lock ---------------------------------------------------------------------------------

    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        key = self._key(resource_id)
        for _ in range(2):  # once more after releasing a lock that expired by this sidecar's clock
            lease_id, deadline = await self._grant(expire_seconds)
            try:
                response = await self._conn.txn(
                    [same_create(key, 0)], [op_put(key, owner.encode(), lease_id)], [op_get(key)]
                )
            except BaseException:
                self._revoke_later(lease_id)  # the put may have happened: do not leave it held
                raise
            if response.succeeded:
                self._granted(lease_id, deadline)
                return True
            self._revoke_later(lease_id)
            holder = _first(range_kvs(response, 0))
            if holder is None or not self._expired_here(holder.lease):
                return False
            await self._release_expired(holder.lease)
        return False

    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        key = self._key(resource_id)
        response = await self._conn.txn([same_value(key, owner.encode())], [op_get(key), op_delete(key)], [op_get(key)])
        held = _first(range_kvs(response, 0))
        if response.succeeded:
            expired = held is not None and self._expired_here(held.lease)
            if held is not None:
                self._revoke_later(held.lease)
            return LockStatus.LOCK_UNEXIST if expired else LockStatus.SUCCESS
        if held is None:
            return LockStatus.LOCK_UNEXIST
        if self._expired_here(held.lease):
            self._revoke_later(held.lease)
            return LockStatus.LOCK_UNEXIST
        return LockStatus.LOCK_BELONG_TO_OTHERS

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        key = self._key(resource_id)
        response = await self._conn.txn([], [op_get(key)])
        held = _first(range_kvs(response, 0))
        for _ in range(KEEP_ALIVE_ATTEMPTS):
            if held is None:
                return LockStatus.LOCK_UNEXIST
            if self._expired_here(held.lease):
                await self._release_expired(held.lease)
                return LockStatus.LOCK_UNEXIST
            if held.value != owner.encode():
                return LockStatus.LOCK_BELONG_TO_OTHERS
            lease_id, deadline = await self._grant(expire_seconds)
            try:
                response = await self._conn.txn(
                    [same_mod(key, held.mod_revision)], [op_put(key, held.value, lease_id)], [op_get(key)]
                )
            except BaseException:
                # The move may have happened (the caller gone, the answer lost): revoking the
                # new lease blindly would delete a lock its owner still holds.
                self._settle_later(key, lease_id, deadline, held.lease)
                raise
            if response.succeeded:
                self._granted(lease_id, deadline)
                self._revoke_later(held.lease)
                return LockStatus.SUCCESS
            self._revoke_later(lease_id)
            held = _first(range_kvs(response, 0))  # changed since read: decide again
        raise Unavailable(
            f"{self.config.component}: keep-alive of {resource_id!r} raced with {KEEP_ALIVE_ATTEMPTS} other writes"
        )


def path_prefix(manifest: ComponentManifest) -> str:
    """The text before every key: ``keyPrefixPath`` with a ``/`` at either end, or the default."""
    path = metadata.text(manifest, PATH_KEY, "")
    if not path:
        return DEFAULT_PATH
    return f"{'' if path.startswith('/') else '/'}{path}{'' if path.endswith('/') else '/'}"


def _first(kvs: list[Any]) -> Any:
    return kvs[0] if kvs else None
