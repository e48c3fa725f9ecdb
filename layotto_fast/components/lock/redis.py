"""``lock.redis``: distributed locks in Redis (``redisType: node`` or ``cluster``).

Layout, as Layotto's Redis lock keeps it: one string per held lock, its key the one the
lock service gives with nothing put before it (``lock|||<prefix>||<resourceId>``, the
prefix chosen by the manifest's ``keyPrefix``: ``runtime/key_prefixes.py``), its value the
owner and its expiry the lock's (milliseconds, so the whole of ``expire_seconds``
counts). Every operation touches that one key, so it runs on the one node owning its
hash slot and needs no hash tag on a cluster.

- try-lock is ``SET key owner NX PX ms``: only the first caller gets it, whichever
  sidecar it goes through; it is not re-entrant (a second try-lock of the owner fails).
- unlock and keep-alive are Lua scripts that compare the value with the owner and
  only then delete the key / set its new expiry, atomically; they answer the
  LockStatus value (SUCCESS, LOCK_UNEXIST, LOCK_BELONG_TO_OTHERS).

An expired lock is gone: Redis removes it, and the next try-lock of anyone succeeds.
One limit, shared with every SET-NX lock: when a connection breaks after Redis took
a try-lock but before its reply arrived, the lock is held by nobody who knows it until
it expires. On one node the call fails UNAVAILABLE (nothing is sent twice); on a
cluster redis-py sends again what no node answered, and the second try-lock finds the
lock taken (false), a second unlock finds it gone (LOCK_UNEXIST).

The commands of calls made in one loop pass go out as one pipeline
(``components/redis_pipeline.py``): a burst of calls costs one round trip.
"""

from __future__ import annotations

from typing import Self

from layotto_fast.components.redis_client import REDIS_ERRORS, RedisConfig, failure
from layotto_fast.components.redis_pipeline import PipelinedRedis, Script
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.lock import LockStatus

# KEYS[1]: the lock. ARGV[1]: the owner. Answers a LockStatus value.
UNLOCK = Script(
    """
local holder = redis.call("GET", KEYS[1])
if not holder then return 1 end
if holder ~= ARGV[1] then return 2 end
redis.call("DEL", KEYS[1])
return 0
"""
)

# KEYS[1]: the lock. ARGV[1]: the owner, ARGV[2]: the new expiry in ms.
KEEP_ALIVE = Script(
    """
local holder = redis.call("GET", KEYS[1])
if not holder then return 1 end
if holder ~= ARGV[1] then return 2 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return 0
"""
)


class RedisLockStore(PipelinedRedis):
    """Its ``resource_id`` is the Redis key: the config's ``key_prefix`` (``keyPrefix``) is the
    lock service's strategy, not text put before the key."""

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(RedisConfig.from_manifest(manifest))

    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        assert self._pipeline is not None, "init() first"
        command = ("SET", resource_id, owner, "NX", "PX", expire_seconds * 1000)
        try:
            done = await self._pipeline.call(command)
        except REDIS_ERRORS as exc:
            raise failure(self._config, exc) from None
        return done is not None

    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        return await self._script(UNLOCK, resource_id, owner)

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        return await self._script(KEEP_ALIVE, resource_id, owner, str(expire_seconds * 1000))

    async def _script(self, script: Script, resource_id: str, *args: str) -> LockStatus:
        assert self._pipeline is not None, "init() first"
        try:
            status = await self._pipeline.script(script, [resource_id], args)
        except REDIS_ERRORS as exc:
            raise failure(self._config, exc) from None
        return LockStatus(int(status))
