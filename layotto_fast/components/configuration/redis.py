"""``configuration.redis``: configuration items in Redis, watched through keyspace
notifications (``redisType: node`` or ``cluster``).

Layout: one hash per item at ``{keyPrefix}{app_id}|{group}|{label}|{key}`` with the
fields ``content`` (the value), ``tags`` and ``metadata`` (JSON objects of strings;
missing or unreadable reads as empty). In each of the four parts ``%`` is written
``%25`` and ``|`` is written ``%7C``, so ``|`` only ever separates parts and every
key names exactly one item; an empty group or label is an empty part (``app||l|k``).
A plain ``redis-cli HSET 'app|g|l|k' content v`` is therefore a change like any
other, and a key under the prefix that is not such a hash is not an item.

- get: the exact keys when the query names keys, group and label; otherwise a SCAN
  (on a cluster, of every master) matching the query, then every hash read by
  HGETALL in one pipeline. Items come back sorted by key, group and label.
- save: one HSET per item (all three fields, written together); delete: DEL of the
  matching keys. On one node a request is one MULTI/EXEC; on a cluster the items of
  a request sit in different slots, so each item is written atomically on its own.
- watch: keyspace notifications. ``init`` turns on the classes needed (``K``
  keyspace, ``g`` DEL/EXPIRE/RENAME, ``h`` hashes, ``$`` strings, ``x`` expiry) when
  the server lacks them, and logs a warning when the server refuses CONFIG (enable
  them there by hand). One pubsub per store (per master on a cluster: each node only
  reports its own keys) PSUBSCRIBEs ``__keyspace@{db}__:{keyPrefix}*``; a reported key
  that a watch covers is read again and the listeners whose query matches get the
  item, or the item with empty content when it is gone. A save or delete through
  this store reaches its listeners the same way as one made elsewhere (another
  sidecar, redis-cli), a few milliseconds after the write, so every listener sees
  changes in the order Redis applied them (quick changes of one key may arrive as the
  last one). Listeners are told only about a change: a key reread with the item they
  were last told about is not reported again.
- when the pubsub's connection fails or closes (a Redis restart) it reconnects with
  backoff (at most 1 s apart), turns the notifications on again (a restarted Redis
  forgets CONFIG SET), and compares every watched item with what the listeners were
  last told: what changed, appeared or disappeared meanwhile is reported then. A
  connection that dies silently (no reset, no close) is not noticed.

At most MAX_CONCURRENT operations run at once, so a burst of calls waits instead of
exhausting redis-py's connection pool. Without a ``keyPrefix`` the pubsub receives an
event for every key written in the database; on a Redis shared with other data, give
the store a prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Self

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from layotto_fast.components.redis_client import BACKEND_ERRORS, REDIS_ERRORS, Client, RedisConfig, failure, ping
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.configuration import ChangeListener, ConfigItem, ConfigQuery, Watches

log = logging.getLogger(__name__)


SEPARATOR = "|"
NOTIFY_SETTING = "notify-keyspace-events"
NEEDED_EVENTS = "Kgh$x"
ALL_EVENTS = "g$lshzxet"  # what the class "A" stands for
RETRY_FIRST, RETRY_MAX = 0.05, 1.0  # seconds between attempts to subscribe again
SCAN_COUNT = 1000
MAX_BATCH = 1000  # notifications handled in one read of the changed keys
# Operations in flight at once, each holding one pooled connection (per node) at a time:
# a burst of calls waits here instead of exhausting redis-py's pool (100 connections).
MAX_CONCURRENT = 32

ItemId = tuple[str, str, str, str]  # app_id, group, label, key

_ESCAPED = re.compile("%(25|7C)")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(SEPARATOR, "%7C")


def _unescape(part: str) -> str:
    return _ESCAPED.sub(lambda match: "%" if match[1] == "25" else SEPARATOR, part)


def _glob(text: str) -> str:
    """``text`` matched literally in a SCAN MATCH or PSUBSCRIBE pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _identity(item_id: ItemId) -> ConfigItem:
    app_id, group, label, key = item_id
    return ConfigItem(app_id=app_id, key=key, group=group, label=label)


def _string_map(raw: bytes | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(name): text if isinstance(text, str) else json.dumps(text) for name, text in value.items()}


def _json(mapping: dict[str, str]) -> str:
    return json.dumps(mapping, ensure_ascii=False, separators=(",", ":"))


def _missing_events(current: str) -> str:
    """The classes of NEEDED_EVENTS that the setting ``current`` lacks."""
    have = set(current) | (set(ALL_EVENTS) if "A" in current else set())
    return "".join(flag for flag in NEEDED_EVENTS if flag not in have)


class _Subscription:
    """A pubsub on one node (its own connection), receiving the store's keyspace events."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pubsub: Any = None  # redis.asyncio.client.PubSub (its methods are untyped)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


class RedisConfigurationStore:
    def __init__(self, config: RedisConfig) -> None:
        self._config = config
        self._prefix = config.key_prefix
        self._channel_prefix = f"__keyspace@{config.db}__:".encode()
        self._pattern = f"__keyspace@{config.db}__:{_glob(config.key_prefix)}*"
        self._client: Client | None = None
        self._watches = Watches()
        # Redis key -> the item its listeners were last told about (None: that it is gone).
        self._told: dict[str, ConfigItem | None] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._config_warned = False
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(RedisConfig.from_manifest(manifest))

    # --- lifecycle -------------------------------------------------------------------------

    async def init(self) -> None:
        if self._client is None:
            self._client = self._config.connect()
        await self.ping()
        if self._watcher is None:
            try:
                subscriptions = await self._subscribe()
            except REDIS_ERRORS as exc:
                raise failure(self._config, exc) from None
            self._watcher = asyncio.get_running_loop().create_task(self._watch(subscriptions))

    async def ping(self) -> None:
        assert self._client is not None, "init() first"
        await ping(self._client, self._config)

    async def close(self) -> None:
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # --- keys ------------------------------------------------------------------------------

    def redis_key(self, app_id: str, group: str, label: str, key: str) -> str:
        """The Redis key of an item."""
        return self._prefix + SEPARATOR.join(_escape(part) for part in (app_id, group, label, key))

    def _item_id(self, redis_key: str) -> ItemId | None:
        """The item a Redis key names, or None when it names none."""
        if not redis_key.startswith(self._prefix):
            return None
        parts = redis_key[len(self._prefix) :].split(SEPARATOR)
        if len(parts) != 4:
            return None
        app_id, group, label, key = (_unescape(part) for part in parts)
        if not app_id or not key:
            return None
        return app_id, group, label, key

    # --- reads and writes -----------------------------------------------------------------

    def _any_client(self) -> Any:
        assert self._client is not None, "init() first"
        return self._client

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        try:
            async with self._slots:
                found = await self._find(query)
                items = await self._read(found)
        except REDIS_ERRORS as exc:
            raise failure(self._config, exc) from None
        present = [item for item in items.values() if item is not None]
        return sorted(present, key=lambda item: (item.key, item.group, item.label))

    async def save(self, items: list[ConfigItem]) -> None:
        if not items:
            return
        pipe = self._any_client().pipeline(transaction=not self._config.cluster)
        for item in items:
            fields = {"content": item.content, "tags": _json(item.tags), "metadata": _json(item.metadata)}
            pipe.hset(self.redis_key(item.app_id, item.group, item.label, item.key), mapping=fields)
        try:
            async with self._slots:
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise failure(self._config, exc) from None

    async def delete(self, query: ConfigQuery) -> None:
        try:
            async with self._slots:
                found = await self._find(query)
                if not found:
                    return
                pipe = self._any_client().pipeline(transaction=not self._config.cluster)
                for redis_key in found:
                    pipe.delete(redis_key)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise failure(self._config, exc) from None

    async def _find(self, query: ConfigQuery) -> dict[str, ItemId]:
        """The Redis keys of the items ``query`` may match (some may not exist)."""
        if query.keys and query.group and query.label:
            return {
                self.redis_key(query.app_id, query.group, query.label, key): (
                    query.app_id,
                    query.group,
                    query.label,
                    key,
                )
                for key in query.keys
            }
        parts = [_glob(_escape(query.app_id))]
        for part in (query.group, query.label, query.keys[0] if len(query.keys) == 1 else ""):
            parts.append(_glob(_escape(part)) if part else "*")
        pattern = _glob(self._prefix) + SEPARATOR.join(parts)
        found: dict[str, ItemId] = {}
        async for raw in self._any_client().scan_iter(match=pattern, count=SCAN_COUNT):
            redis_key = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            item_id = self._item_id(redis_key)
            if item_id is not None and query.matches(_identity(item_id)):
                found[redis_key] = item_id
        return found

    async def _read(self, keys: dict[str, ItemId]) -> dict[str, ConfigItem | None]:
        """Each key's item, None where it is gone (or is not a hash); raises backend errors."""
        if not keys:
            return {}
        pipe = self._any_client().pipeline(transaction=False)
        for redis_key in keys:
            pipe.hgetall(redis_key)
        replies = await pipe.execute(raise_on_error=False)
        items: dict[str, ConfigItem | None] = {}
        for (redis_key, item_id), reply in zip(keys.items(), replies, strict=True):
            if isinstance(reply, BACKEND_ERRORS):
                raise reply
            if isinstance(reply, Exception) or not reply:  # WRONGTYPE: some other value, not an item
                items[redis_key] = None
                continue
            app_id, group, label, key = item_id
            items[redis_key] = ConfigItem(
                app_id=app_id,
                key=key,
                content=reply.get(b"content", b"").decode(errors="replace"),
                group=group,
                label=label,
                tags=_string_map(reply.get(b"tags")),
                metadata=_string_map(reply.get(b"metadata")),
            )
        return items

    # --- watches ---------------------------------------------------------------------------

    def watch(self, query: ConfigQuery, listener: ChangeListener) -> Callable[[], None]:
        watch_id = self._watches.add(query, listener)

        def cancel() -> None:
            if self._watches.remove(watch_id):
                self._forget_unwatched()

        return cancel

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    def _watched(self, item_id: ItemId) -> bool:
        identity = _identity(item_id)
        return any(query.matches(identity) for query in self._watches.queries())

    def _forget_unwatched(self) -> None:
        for redis_key in list(self._told):
            item_id = self._item_id(redis_key)
            if item_id is None or not self._watched(item_id):
                del self._told[redis_key]

    def _changes(
        self, current: dict[str, ConfigItem | None], keys: Iterable[str], unknown_gone: bool = True
    ) -> list[ConfigItem]:
        """What listeners were not told yet about ``keys``, whose items are now ``current``;
        with ``unknown_gone``, also that an item they were never told about is gone."""
        changed = []
        for redis_key in keys:
            item = current.get(redis_key)
            told = self._told.get(redis_key)
            if item is None:
                known = redis_key in self._told
                if (known and told is None) or (not known and not unknown_gone):
                    continue
                if told is None:
                    item_id = self._item_id(redis_key)
                    if item_id is None:
                        continue
                    told = _identity(item_id)
                changed.append(replace(told, content=""))
            elif item == told:
                continue
            else:
                changed.append(item)
            self._told[redis_key] = item
        return changed

    async def _refresh(self, redis_keys: Iterable[str]) -> None:
        """Read the watched ones of ``redis_keys`` again and tell their listeners what changed."""
        wanted: dict[str, ItemId] = {}
        for redis_key in redis_keys:
            item_id = self._item_id(redis_key)
            if item_id is not None and self._watched(item_id):
                wanted[redis_key] = item_id
        if wanted:
            async with self._slots:
                current = await self._read(wanted)
            self._watches.notify(self._changes(current, wanted))

    async def _resync(self) -> None:
        """After events may have been lost: report every watched item that differs from what was told."""
        found: dict[str, ItemId] = {}
        async with self._slots:
            for query in self._watches.queries():
                found.update(await self._find(query))
            current = await self._read(found)
        gone = [redis_key for redis_key, told in self._told.items() if told is not None and redis_key not in found]
        self._watches.notify(self._changes(current, [*found, *gone], unknown_gone=False))

    # --- the subscription ------------------------------------------------------------------

    async def _nodes(self, refresh: bool) -> list[tuple[str, int]]:
        """The nodes that emit the store's keyspace events: the server, or every master."""
        if not self._config.cluster:
            return [(self._config.host, self._config.port)]
        cluster = self._any_client()
        await cluster.initialize()
        if refresh:  # the masters now: a failover or a restart may have changed them
            await cluster.nodes_manager.initialize()
        return [(node.host, node.port) for node in cluster.get_primaries()]

    async def _subscribe(self, refresh: bool = False) -> list[_Subscription]:
        """Subscribed pubsubs on every node, with keyspace events turned on; raises backend errors."""
        subscriptions: list[_Subscription] = []
        try:
            for host, port in await self._nodes(refresh):
                # No retries inside redis-py: a lost connection must reach _watch, which resyncs.
                node = replace(self._config, host=host, port=port, cluster=False, max_retries=0).connect()
                assert isinstance(node, aioredis.Redis)
                subscription = _Subscription(node)
                subscriptions.append(subscription)
                await self._enable_events(node)
                pubsub = subscription.pubsub = node.pubsub()
                await pubsub.psubscribe(self._pattern)
                # Events are delivered once Redis has confirmed the subscription.
                reply = await pubsub.get_message(timeout=self._config.read_timeout or 5.0)
                if not reply or reply.get("type") != "psubscribe":
                    raise TimeoutError(f"no confirmation of PSUBSCRIBE from {host}:{port}")
        except BaseException:
            for subscription in subscriptions:
                await subscription.close()
            raise
        return subscriptions

    async def _enable_events(self, node: aioredis.Redis) -> None:
        try:
            reply = await node.config_get(NOTIFY_SETTING)
            current = str(reply.get(NOTIFY_SETTING, ""))
            missing = _missing_events(current)
            if missing:
                await node.config_set(NOTIFY_SETTING, current + missing)
        except redis_errors.ReadOnlyError:
            raise
        except redis_errors.ResponseError as exc:  # CONFIG refused: renamed, forbidden by ACL, managed Redis
            if not self._config_warned:
                self._config_warned = True
                log.warning(
                    "%s: redis at %s refused CONFIG (%s): make sure %s includes %r there, or watches see nothing",
                    self._config.component,
                    self._config.address,
                    exc,
                    NOTIFY_SETTING,
                    NEEDED_EVENTS,
                )

    async def _watch(self, subscriptions: list[_Subscription]) -> None:
        """Runs until close(): read events; when Redis is lost, subscribe again and resync."""
        while True:
            try:
                await self._listen(subscriptions)
            except Exception as exc:  # the loop must outlive any failure
                self._log_failure("lost its subscription", exc)
            finally:
                for subscription in subscriptions:
                    await subscription.close()
            subscriptions = await self._resubscribe()
            log.info("%s: configuration watch on redis at %s restored", self._config.component, self._config.address)

    async def _resubscribe(self) -> list[_Subscription]:
        delay = RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            try:
                subscriptions = await self._subscribe(refresh=True)
            except Exception as exc:
                self._log_failure("cannot subscribe", exc, quiet=True)
                continue
            try:
                await self._resync()
            except Exception as exc:
                self._log_failure("cannot resync", exc, quiet=True)
                for subscription in subscriptions:
                    await subscription.close()
                continue
            return subscriptions

    def _log_failure(self, what: str, exc: Exception, quiet: bool = False) -> None:
        where = f"{self._config.component}: configuration watch on redis at {self._config.address}"
        if isinstance(exc, BACKEND_ERRORS):
            log.log(logging.DEBUG if quiet else logging.WARNING, "%s %s: %s", where, what, exc)
        else:
            log.error("%s %s", where, what, exc_info=exc)

    async def _listen(self, subscriptions: list[_Subscription]) -> None:
        """Handle events from every subscription; returns only by raising."""
        tasks = [asyncio.ensure_future(self._read_events(subscription)) for subscription in subscriptions]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionError("keyspace subscription ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_events(self, subscription: _Subscription) -> None:
        pubsub = subscription.pubsub
        assert pubsub is not None
        while True:
            keys: dict[str, None] = {}  # in order, each once
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            while message is not None:  # and whatever else has arrived: one read for them all
                channel = message.get("channel")
                if message.get("type") == "pmessage" and isinstance(channel, bytes):
                    keys[channel.removeprefix(self._channel_prefix).decode(errors="replace")] = None
                if len(keys) >= MAX_BATCH:
                    break
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            if keys:
                await self._refresh(keys)
