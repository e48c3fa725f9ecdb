"""``state.redis``: state in Redis (``redisType: node`` or ``cluster``).

Layout, as Dapr's Redis state store keeps it: one hash per key (the key as the runtime
gives it, behind the manifest's ``keyPrefix`` strategy: ``runtime/key_prefixes.py``) with the
fields ``data`` and ``version``; the etag is the version, and every write changes it.
``ttlInSeconds`` is the key's expiry. Every write stores a new random 62-bit version:
no read of the old one is needed, two writers drawing the same version is a 2^-62
chance, and an etag taken before a key was deleted (or expired) does not match the key
written again after (a count would start again at 1; Dapr's HINCRBY still works on
these versions). A write that checks an etag (or first-write), and every transaction, is one
Lua script, so the check and the write it guards are atomic, and a request of several items
checks every etag, and that every key it writes holds a hash or nothing, before it writes
anything: a key holding another type (a plain string...) refuses the whole request. A
write with nothing to check is one MULTI/EXEC on a single node (about half the Redis CPU of
the script); MULTI/EXEC has no rollback, so a SaveState there is refused for a key of
another type (WRONGTYPE) without its value changing, but its other items are written and
its EXPIRE or PERSIST still reaches that key.

Redis refusing a write for its own state (a read-only replica, OOM, still loading, its
master down) is UNAVAILABLE with Redis' reason, also through MULTI/EXEC, where EXEC only
answers EXECABORT: ``redis_resp`` keeps the command's own refusal.

A write with strong consistency asked, on a single node that had replicas connected at
``init``, is followed by ``WAIT <replicas> 1000`` as in Dapr (whose count of replicas that
acknowledged is not checked either): the script and the WAIT go over a connection of
redis-py's pool, since WAIT blocks its connection, which must not be the one every other
call shares.

Commands of calls that arrive in the same loop pass are written to Redis as one
pipeline (auto-pipelining, ``components/redis_pipeline.py``), each call keeping its own result.
On a cluster, a request whose keys sit in several hash slots is split by slot. Its etags
and first-writes are checked first in every slot, as the script checks them in one (each
against what the request's earlier operations leave; a checked key of another type is
WRONGTYPE), so a request they refuse writes no slot, unless another writer changes a key
in between (that slot's script still refuses; the slots before it are written). A key of
another type that nothing checks is refused by its slot's script, the other slots written,
as MULTI/EXEC does on a single node. A transaction must keep its keys in one slot (a hash
tag such as ``{order}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from random import getrandbits
from typing import Any, Self

from redis import exceptions as redis_errors

from layotto_fast.components.redis_client import BACKEND_ERRORS, RedisConfig, refused_for_its_state
from layotto_fast.components.redis_pipeline import PipelinedRedis, Script
from layotto_fast.components.redis_resp import EXEC, MULTI, bulk, raise_replied
from layotto_fast.components.state import (
    WRITTEN_IN_THIS_REQUEST,
    PendingEtag,
    check_write,
    key_exists,
    stale_etag,
)
from layotto_fast.errors import FailedPrecondition, InvalidArgument, RuntimeApiError, StartupError
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.records import state_entry
from layotto_fast.runtime.state import DeleteOp, Feature, KeyUnreadable, SetOp, StateEntry
from layotto_fast.runtime.state_rules import TTL_KEY, ttl_from_metadata

# KEYS: the keys. ARGV: per key, op ("s" set, "d" delete), etag ("" none, else "=" and
# the etag, so that an empty etag is one too), first-write ("1"/"0"), ttl seconds ("0"
# none), value, new version. Checks all, then applies all; a later operation on a key checks against
# what the earlier ones leave (nothing after a delete; after a write, a version no caller
# holds yet: "EARLIER"); a key written (or checked) that holds neither a hash nor nothing
# refuses the whole batch ("FOREIGN", with its type). Answers the number of keys, or an
# error naming the first key that refuses it.
APPLY = Script(
    """
local n = #KEYS
local left = {}
for i = 1, n do
  local base = (i - 1) * 6
  local op, etag, first = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local current = left[KEYS[i]]
  if current == nil and (op == "s" or etag ~= "" or first == "1") then
    local kind = redis.call("TYPE", KEYS[i])["ok"]
    if kind ~= "none" and kind ~= "hash" then
      return redis.error_reply("FOREIGN " .. i .. " " .. kind)
    end
  end
  if etag ~= "" or first == "1" then
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
  left[KEYS[i]] = op ~= "d"
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

WAIT_MILLISECONDS = 1000  # Dapr's WAIT timeout after a strong write


class RedisStateStore(PipelinedRedis):
    features = frozenset({Feature.ETAG, Feature.TTL, Feature.TRANSACTIONAL})

    _replicas = 0  # replicas connected (at init, then at each ping): a strong write waits for them

    def __init__(self, config: RedisConfig, default_ttl: int | None = None) -> None:
        super().__init__(config)
        # The manifest's ttlInSeconds, for a write that gives none (None: no default)
        self._default_ttl = default_ttl

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(RedisConfig.from_manifest(manifest), _default_ttl(manifest))

    def _ttl(self, op: SetOp) -> int:
        """Seconds to live for ``op``, 0 for none: its own, else the manifest's. A write with
        none takes the key's expiry off, as Dapr's state conformance suite has it (Dapr's
        Redis store, which it skips there, leaves the expiry on)."""
        if op.ttl_seconds is not None:
            return op.ttl_seconds
        return self._default_ttl or 0

    def _expiry(self, op: SetOp, key: bytes) -> tuple[bytes, ...]:
        """The command after the HSET that sets ``op``'s expiry, in RESP."""
        ttl = self._ttl(op)
        return (EXPIRE, key, bulk(b"%d" % ttl)) if ttl else (PERSIST, key)

    async def init(self) -> None:
        await super().init()
        self._replicas = 0 if self._config.cluster else await self._connected_replicas()

    async def ping(self) -> None:
        await super().ping()
        if not self._config.cluster:  # replicas come and go: WAIT asks for those connected now
            self._replicas = await self._connected_replicas()

    async def _connected_replicas(self) -> int:
        """``connected_slaves`` of INFO replication, as Dapr reads it at init (0: a server that refuses INFO)."""
        assert self._client is not None, "init() first"
        try:
            info = await self._client.info("replication")
        except BACKEND_ERRORS as exc:
            raise self._config.unavailable(exc) from None
        except redis_errors.ResponseError:
            return 0
        return int(info.get("connected_slaves", 0))

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
            return await self._plain_value(key, exc)
        if version is None:
            return None
        return state_entry(data or b"", version.decode(), None)

    async def _plain_value(self, key: str, refusal: redis_errors.ResponseError) -> StateEntry | None:
        """The value of ``key`` when it holds a plain string (older Dapr versions wrote state so,
        and other tools do), without an etag, as Dapr's and Layotto's stores read it; a key of
        another type, or Redis refusing for its own state, refuses the read."""
        assert self._pipeline is not None, "init() first"
        if not str(refusal).startswith("WRONGTYPE"):
            raise self._refused(refusal, "read") from None
        try:
            value = await self._pipeline.call(("GET", key))
        except redis_errors.ResponseError:  # a list, a set...: no value a state entry can be
            raise self._refused(refusal, "read") from None
        return None if value is None else state_entry(value, "", None)

    async def bulk_get(
        self, keys: list[str], metadata: Mapping[str, str] | None = None
    ) -> list[StateEntry | KeyUnreadable | None]:
        assert self._pipeline is not None, "init() first"
        replies = await self._pipeline.gather([("HMGET", key, "data", "version") for key in keys], errors_in_place=True)
        entries: list[StateEntry | KeyUnreadable | None] = []
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, redis_errors.ResponseError):
                refused = self._refused(reply, "read")
                if not isinstance(refused, FailedPrecondition):  # Redis's own state: no key can be read
                    raise refused from None
                try:  # WRONGTYPE: a plain string is read as its value, another type says why not
                    entries.append(await self._plain_value(key, reply))
                except FailedPrecondition as unreadable:
                    entries.append(KeyUnreadable(str(unreadable)))
            elif isinstance(reply, BaseException):
                raise reply
            else:
                data, version = reply
                entries.append(None if version is None else state_entry(data or b"", version.decode(), None))
        return entries

    async def set(self, ops: list[SetOp]) -> None:
        pipeline = self._pipeline
        if len(ops) == 1 and pipeline is not None and pipeline.transactions:
            op = ops[0]
            # the common write, in as few steps as it takes
            if op.etag is None and not op.first_write and not (op.strong and self._replicas):
                key = bulk(op.key.encode())
                ttl = op.ttl_seconds if op.ttl_seconds is not None else self._default_ttl  # _ttl(), inlined
                expiry = (EXPIRE, key, bulk(b"%d" % ttl)) if ttl else (PERSIST, key)
                packed = b"".join(
                    (MULTI, HSET_DATA_VERSION, key, DATA, bulk(op.value), VERSION, _new_version(), *expiry, EXEC)
                )
                try:
                    raise_replied(await pipeline.transaction(packed, 2))
                except redis_errors.ResponseError as exc:
                    raise self._refused(exc, key=op.key) from None
                return
        await self._apply(list(ops), transaction=False)

    async def delete(self, ops: list[DeleteOp]) -> None:
        await self._apply(list(ops), transaction=False)

    async def transact(self, ops: list[SetOp | DeleteOp], metadata: Mapping[str, str] | None = None) -> None:
        await self._apply(ops, transaction=True)

    async def _apply(self, ops: list[SetOp | DeleteOp], transaction: bool) -> None:
        if not ops:
            return
        if self._replicas and any(op.strong for op in ops):
            await self._script_then_wait(ops)
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
            if self._pipeline is not None and self._pipeline.transactions and not _checked(group, transaction):
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
        """What APPLY checks in one slot, made for every slot of the request before any is
        written: each etag and first-write, against the store or, for a key an earlier
        operation of the request touched, against what that one leaves; a key whose stored
        version a check reads must hold a hash or nothing."""
        assert self._pipeline is not None, "init() first"
        if not any(op.etag is not None or op.first_write for op in ops):
            return
        # What is stored matters only to a key's first operation: the later ones see what it leaves.
        read: list[str] = []
        touched: set[str] = set()
        for op in ops:
            if op.key not in touched and (op.etag is not None or op.first_write):
                read.append(op.key)
            touched.add(op.key)
        replies = await self._pipeline.gather([("HGET", key, "version") for key in read], errors_in_place=True)
        stored = dict(zip(read, replies, strict=True))
        left: dict[str, str | PendingEtag | None] = {}
        for op in ops:
            if op.etag is not None or op.first_write:
                current = left[op.key] if op.key in left else await self._stored_version(op.key, stored[op.key])
                check_write(op.key, op.etag, op.first_write, current)
            left[op.key] = None if isinstance(op, DeleteOp) else WRITTEN_IN_THIS_REQUEST

    async def _stored_version(self, key: str, reply: Any) -> str | None:
        """The version in an HGET's ``reply``, or the error the script gives for its key."""
        if isinstance(reply, redis_errors.ResponseError):
            if not str(reply).startswith("WRONGTYPE"):
                raise self._refused(reply, key=key)
            assert self._pipeline is not None, "init() first"
            try:
                kind = await self._pipeline.call(("TYPE", key))
            except redis_errors.ResponseError as exc:
                raise self._refused(exc, key=key) from None
            raise self._foreign(key, kind.decode() if isinstance(kind, bytes) else str(kind))
        if isinstance(reply, BaseException):
            raise reply
        return None if reply is None else str(reply.decode())

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
            commands += (HSET_DATA_VERSION, key, DATA, bulk(op.value), VERSION, _new_version(), *self._expiry(op, key))
            count += 2
        commands.append(EXEC)
        assert self._pipeline is not None, "init() first"
        replies: list[Any] = []
        try:
            replies = await self._pipeline.transaction(b"".join(commands), count)
            raise_replied(replies)
        except redis_errors.ResponseError as exc:  # a key of another type; OOM as EXEC's own refusal
            raise self._refused(exc, key=_refused_key(replies, ops)) from None

    def _foreign(self, key: str, stored: str) -> FailedPrecondition:
        """A request refused, unwritten, for a key that holds ``stored``, another type than a hash."""
        return FailedPrecondition(
            f"state store {self._config.component}: redis refused the write: WRONGTYPE key "
            f"{key!r} holds a {stored}, not a state entry (a hash); nothing was written"
        )

    def _refused(self, exc: redis_errors.ResponseError, what: str = "write", key: str | None = None) -> RuntimeApiError:
        """FAILED_PRECONDITION for a command Redis refused (a key of another type), naming
        ``key`` when known; UNAVAILABLE when Redis refuses for its own state."""
        if refused_for_its_state(exc):
            return self._config.unavailable(exc)
        about = "" if key is None else f" of key {key!r}"
        return FailedPrecondition(f"state store {self._config.component}: redis refused the {what}{about}: {exc}")

    async def _script(self, ops: list[SetOp | DeleteOp]) -> None:
        keys, args = _script_args(ops, self._ttl)
        assert self._pipeline is not None, "init() first"
        try:
            await self._pipeline.script(APPLY, keys, args)
        except redis_errors.ResponseError as exc:
            raise self._conflict(exc, ops) from None

    async def _script_then_wait(self, ops: list[SetOp | DeleteOp]) -> None:
        """The script, then WAIT for the replicas, on one connection of redis-py's pool (a
        single node): WAIT covers the writes made on its own connection, and blocks it."""
        keys, args = _script_args(ops, self._ttl)
        assert self._client is not None, "init() first"
        client: Any = self._client
        try:
            for _ in range(2):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.evalsha(APPLY.sha, len(keys), *keys, *args)
                    pipe.execute_command("WAIT", self._replicas, WAIT_MILLISECONDS)
                    applied, _ = await pipe.execute(raise_on_error=False)
                if not isinstance(applied, redis_errors.NoScriptError):
                    break
                await client.script_load(APPLY.source)  # Redis forgot it (a restart): once more
        except BACKEND_ERRORS as exc:
            raise self._config.unavailable(exc) from None
        if isinstance(applied, BACKEND_ERRORS):
            raise self._config.unavailable(applied)
        if isinstance(applied, redis_errors.ResponseError):
            raise self._conflict(applied, ops)

    def _conflict(self, exc: redis_errors.ResponseError, ops: list[SetOp | DeleteOp]) -> Exception:
        reply = str(exc)
        kind, _, rest = reply.partition(" ")
        if kind == "FOREIGN":
            index_text, _, stored = rest.partition(" ")
            return self._foreign(ops[int(index_text) - 1].key, stored)
        if kind in ("STALE", "EXISTS", "EARLIER"):
            index_text, _, current = rest.partition(" ")
            op = ops[int(index_text) - 1]
            if kind == "EXISTS":
                return key_exists(op.key)
            if kind == "EARLIER":
                return stale_etag(op.key, op.etag, WRITTEN_IN_THIS_REQUEST)
            return stale_etag(op.key, op.etag, current or None)  # the script answers "" for no value
        return self._refused(exc)


def _script_args(ops: list[SetOp | DeleteOp], ttl_of: Callable[[SetOp], int]) -> tuple[list[str], list[str | bytes]]:
    """APPLY's KEYS and ARGV for ``ops``, each write's expiry as ``ttl_of`` gives it."""
    keys: list[str] = []
    args: list[str | bytes] = []
    for op in ops:
        keys.append(op.key)
        if isinstance(op, DeleteOp):
            args += ("d", _etag_arg(op.etag), "1" if op.first_write else "0", "0", b"", b"")
        else:
            first = "1" if op.first_write else "0"
            args += ("s", _etag_arg(op.etag), first, str(ttl_of(op)), op.value, _version_number())
    return keys, args


def _default_ttl(manifest: ComponentManifest) -> int | None:
    """The manifest's ``ttlInSeconds`` (Dapr's store-wide default), read as a request's is."""
    raw = manifest.metadata.get(TTL_KEY, "")
    if not raw:
        return None
    try:
        return ttl_from_metadata({TTL_KEY: raw}, "metadata")
    except InvalidArgument as exc:
        problem = exc.message.removeprefix(f"metadata.{TTL_KEY} ")  # "is '5x': must be ..."
        raise StartupError(manifest.source, manifest.metadata_field(TTL_KEY), problem) from None


def _etag_arg(etag: str | None) -> str:
    return "" if etag is None else "=" + etag


def _version_number() -> bytes:
    """A version no caller holds an etag for, from 1 to 2^62: see the module's docstring."""
    return b"%d" % (getrandbits(62) + 1)


def _new_version() -> bytes:
    """A new version in RESP."""
    return bulk(_version_number())


def _checked(ops: list[SetOp | DeleteOp], transaction: bool) -> bool:
    """Whether writing ``ops`` must first check what is stored, so takes the script: an etag
    or first-write, or a transaction's write (all or none, also for a key of another type,
    which MULTI/EXEC would only refuse once the others are written)."""
    return any(op.etag is not None or op.first_write or (transaction and not isinstance(op, DeleteOp)) for op in ops)


def _refused_key(replies: list[Any], ops: list[SetOp | DeleteOp]) -> str | None:
    """The key of the first operation whose command EXEC answered with an error."""
    index = 0
    for op in ops:
        width = 1 if isinstance(op, DeleteOp) else 2  # DEL; HSET then EXPIRE or PERSIST
        if any(isinstance(reply, Exception) for reply in replies[index : index + width]):
            return op.key
        index += width
    return None
