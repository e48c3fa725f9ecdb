"""``state.redis``: state in Redis (``redisType: node`` or ``cluster``).

Layout, as Dapr's Redis state store keeps it: one hash per key (the key as the runtime
gives it, behind the manifest's ``keyPrefix`` strategy: ``runtime/key_prefixes.py``) with the
fields ``data`` and ``version``; the etag is the version, and every write changes it.
``ttlInSeconds`` is the key's expiry. Every write stores a new random 62-bit version:
no read of the old one is needed, two writers drawing the same version is a 2^-62
chance, and an etag taken before a key was deleted (or expired) does not match the key
written again after (a count would start again at 1; Dapr's HINCRBY still works on
these versions). A write that checks an etag (or first-write) is one Lua script, so the
check and the write it guards are atomic, and a request of several items checks every
etag before it writes anything. A write with nothing to check is one MULTI/EXEC on a
single node (about half the Redis CPU of the script).

Commands of calls that arrive in the same loop pass are written to Redis as one
pipeline (auto-pipelining, ``components/redis_pipeline.py``), each call keeping its own result.
On a cluster, a request whose keys sit in several hash slots is split by slot;
a transaction must keep its keys in one slot (a hash tag such as ``{order}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from random import getrandbits
from typing import Any, Self

from redis import exceptions as redis_errors

from layotto_fast.components.redis_client import RedisConfig
from layotto_fast.components.redis_pipeline import PipelinedRedis, Script
from layotto_fast.components.redis_resp import EXEC, MULTI, bulk, raise_replied
from layotto_fast.components.state import WRITTEN_IN_THIS_REQUEST, check_write, key_exists, stale_etag
from layotto_fast.errors import FailedPrecondition, InvalidArgument
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.records import state_entry
from layotto_fast.runtime.state import DeleteOp, Feature, SetOp, StateEntry

# KEYS: the keys. ARGV: per key, op ("s" set, "d" delete), etag ("" none, else "=" and
# the etag, so that an empty etag is one too), first-write ("1"/"0"), ttl seconds ("0"
# none), value, new version. Checks all, then applies all; a later operation on a key checks against
# what the earlier ones leave (nothing after a delete; after a write, a version no caller
# holds yet: "EARLIER"); answers the number of keys, or an error naming the first stale key.
APPLY = Script(
    """
local n = #KEYS
local left = {}
for i = 1, n do
  local base = (i - 1) * 6
  local etag, first = ARGV[base + 2], ARGV[base + 3]
  if etag ~= "" or first == "1" then
    local current = left[KEYS[i]]
    if current == true then
      if etag ~= "" then
        return redis.error_reply("EARLIER " .. i)
      end
      return redis.error_reply("EXISTS " .. i)
    end
    if current == nil then
      current = redis.call("HGET", KEYS[i], "version")
    end
    if etag ~= "" then
      if current ~= string.sub(etag, 2) then
        return redis.error_reply("STALE " .. i .. " " .. (current or ""))
      end
    elseif current then
      return redis.error_reply("EXISTS " .. i)
    end
  end
  if ARGV[base + 1] == "d" then
    left[KEYS[i]] = false
  else
    left[KEYS[i]] = true
  end
end
for i = 1, n do
  local base = (i - 1) * 6
  if ARGV[base + 1] == "d" then
    redis.call("DEL", KEYS[i])
  else
    redis.call("HSET", KEYS[i], "data", ARGV[base + 5], "version", ARGV[base + 6])
    local ttl = tonumber(ARGV[base + 4])
    if ttl > 0 then
      redis.call("EXPIRE", KEYS[i], ttl)
    else
      redis.call("PERSIST", KEYS[i])
    end
  end
end
return n
"""
)


# The parts of the commands a single node gets in RESP (components/redis_resp.bulk).
HMGET = b"*4\r\n$5\r\nHMGET\r\n"
DATA_VERSION = b"$4\r\ndata\r\n$7\r\nversion\r\n"
HSET_DATA_VERSION = b"*6\r\n$4\r\nHSET\r\n"  # key, "data", value, "version", version
DATA = b"$4\r\ndata\r\n"
VERSION = b"$7\r\nversion\r\n"
EXPIRE = b"*3\r\n$6\r\nEXPIRE\r\n"
PERSIST = b"*2\r\n$7\r\nPERSIST\r\n"
DEL = b"*2\r\n$3\r\nDEL\r\n"


class RedisStateStore(PipelinedRedis):
    features = frozenset({Feature.ETAG, Feature.TTL, Feature.TRANSACTIONAL})

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(RedisConfig.from_manifest(manifest))

    async def get(self, key: str, strong: bool = False, metadata: Mapping[str, str] | None = None) -> StateEntry | None:
        pipeline = self._pipeline
        assert pipeline is not None, "init() first"
        if pipeline.transactions:  # a single node: the command in RESP, assembled here
            command: Any = b"".join((HMGET, bulk(key.encode()), DATA_VERSION))
        else:
            command = ("HMGET", key, "data", "version")
        try:
            data, version = await pipeline.call(command)
        except redis_errors.ResponseError as exc:  # WRONGTYPE: the key holds no state entry
            raise self._refused(exc, "read") from None
        if version is None:
            return None
        return state_entry(data or b"", version.decode(), None)

    async def bulk_get(self, keys: list[str], metadata: Mapping[str, str] | None = None) -> list[StateEntry | None]:
        assert self._pipeline is not None, "init() first"
        try:
            replies = await self._pipeline.gather([("HMGET", key, "data", "version") for key in keys])
        except redis_errors.ResponseError as exc:
            raise self._refused(exc, "read") from None
        return [
            None if version is None else state_entry(data or b"", version.decode(), None) for data, version in replies
        ]

    async def set(self, ops: list[SetOp]) -> None:
        pipeline = self._pipeline
        if len(ops) == 1 and pipeline is not None and pipeline.transactions:
            op = ops[0]
            if op.etag is None and not op.first_write:  # the common write, in as few steps as it takes
                key = bulk(op.key.encode())
                expiry = (EXPIRE, key, bulk(b"%d" % op.ttl_seconds)) if op.ttl_seconds else (PERSIST, key)
                packed = b"".join(
                    (MULTI, HSET_DATA_VERSION, key, DATA, bulk(op.value), VERSION, _new_version(), *expiry, EXEC)
                )
                try:
                    raise_replied(await pipeline.transaction(packed, 2))
                except redis_errors.ResponseError as exc:
                    raise self._refused(exc) from None
                return
        await self._apply(list(ops), transaction=False)

    async def delete(self, ops: list[DeleteOp]) -> None:
        await self._apply(list(ops), transaction=False)

    async def transact(self, ops: list[SetOp | DeleteOp], metadata: Mapping[str, str] | None = None) -> None:
        await self._apply(ops, transaction=True)

    async def _apply(self, ops: list[SetOp | DeleteOp], transaction: bool) -> None:
        if not ops:
            return
        groups = self._by_slot(ops)
        if len(groups) > 1:
            if transaction:
                raise InvalidArgument(
                    f"state store {self._config.component}: a transaction on Redis Cluster must keep every key "
                    "in one hash slot; give the keys a common hash tag such as {order}"
                )
            # Checked first, all together, so that a stale etag changes nothing.
            await self._check(ops)
        for group in groups:
            if self._pipeline is not None and self._pipeline.transactions and not _guarded(group):
                await self._transaction(group)
            else:
                await self._script(group)

    def _by_slot(self, ops: list[SetOp | DeleteOp]) -> list[list[SetOp | DeleteOp]]:
        if not self._config.cluster or len(ops) == 1:
            return [ops]
        client: Any = self._client
        groups: dict[int, list[SetOp | DeleteOp]] = {}
        for op in ops:
            groups.setdefault(client.keyslot(op.key), []).append(op)
        return list(groups.values())

    async def _check(self, ops: list[SetOp | DeleteOp]) -> None:
        assert self._pipeline is not None, "init() first"
        guarded = [op for op in ops if op.etag is not None or op.first_write]
        versions = await self._pipeline.gather([("HGET", op.key, "version") for op in guarded])
        for op, version in zip(guarded, versions, strict=True):
            current = None if version is None else version.decode()
            check_write(op.key, op.etag, op.first_write, current)

    async def _transaction(self, ops: list[SetOp | DeleteOp]) -> None:
        """Writes with nothing to check, as MULTI/EXEC: what APPLY does, with random versions."""
        commands: list[bytes] = [MULTI]
        count = 0
        for op in ops:
            key = bulk(op.key.encode())
            if isinstance(op, DeleteOp):
                commands += (DEL, key)
                count += 1
                continue
            commands += (HSET_DATA_VERSION, key, DATA, bulk(op.value), VERSION, _new_version())
            if op.ttl_seconds:
                commands += (EXPIRE, key, bulk(b"%d" % op.ttl_seconds))
            else:
                commands += (PERSIST, key)
            count += 2
        commands.append(EXEC)
        assert self._pipeline is not None, "init() first"
        try:
            raise_replied(await self._pipeline.transaction(b"".join(commands), count))
        except redis_errors.ResponseError as exc:
            raise self._refused(exc) from None

    def _refused(self, exc: redis_errors.ResponseError, what: str = "write") -> FailedPrecondition:
        return FailedPrecondition(f"state store {self._config.component}: redis refused the {what}: {exc}")

    async def _script(self, ops: list[SetOp | DeleteOp]) -> None:
        keys: list[str] = []
        args: list[str | bytes] = []
        for op in ops:
            keys.append(op.key)
            if isinstance(op, DeleteOp):
                args += ("d", _etag_arg(op.etag), "1" if op.first_write else "0", "0", b"", b"")
            else:
                first = "1" if op.first_write else "0"
                args += ("s", _etag_arg(op.etag), first, str(op.ttl_seconds or 0), op.value, _version_number())
        assert self._pipeline is not None, "init() first"
        try:
            await self._pipeline.script(APPLY, keys, args)
        except redis_errors.ResponseError as exc:
            raise self._conflict(str(exc), ops) from None

    def _conflict(self, reply: str, ops: list[SetOp | DeleteOp]) -> Exception:
        kind, _, rest = reply.partition(" ")
        if kind in ("STALE", "EXISTS", "EARLIER"):
            index_text, _, current = rest.partition(" ")
            op = ops[int(index_text) - 1]
            if kind == "EXISTS":
                return key_exists(op.key)
            if kind == "EARLIER":
                return stale_etag(op.key, op.etag, WRITTEN_IN_THIS_REQUEST)
            return stale_etag(op.key, op.etag, current or None)  # the script answers "" for no value
        return FailedPrecondition(f"state store {self._config.component}: redis refused the write: {reply}")


def _etag_arg(etag: str | None) -> str:
    return "" if etag is None else "=" + etag


def _version_number() -> bytes:
    """A version no caller holds an etag for, from 1 to 2^62: see the module's docstring."""
    return b"%d" % (getrandbits(62) + 1)


def _new_version() -> bytes:
    """A new version in RESP."""
    return bulk(_version_number())


def _guarded(ops: list[SetOp | DeleteOp]) -> bool:
    """Whether a write must first check what is stored (an etag, or first-write)."""
    return any(op.etag is not None or op.first_write for op in ops)
