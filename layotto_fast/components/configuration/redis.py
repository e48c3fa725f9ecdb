"""``configuration.redis``: configuration items in Redis, watched through keyspace
notifications (``redisType: node`` or ``cluster``).

Layout: one hash per item at ``{keyPrefix}{app_id}|{group}|{label}|{key}`` with the
fields ``content`` (the value), ``tags`` and ``metadata`` (JSON objects of strings;
missing or unreadable reads as empty). In each of the four parts ``%`` is written
``%25`` and ``|`` is written ``%7C``, so ``|`` only ever separates parts and every
key names exactly one item; an empty group or label is an empty part (``app||l|k``),
though through the API a blank group and label are ``default`` (the runtime's rule).
A plain ``redis-cli HSET 'app|g|l|k' content v`` is therefore a change like any
other, and a key under the prefix that is not such a hash is not an item.

- get: the exact keys when the query names keys, group and label; otherwise a SCAN
  (on a cluster, of every master) matching the query, then every hash read by
  HGETALL in one pipeline. Items come back sorted by key, group and label.
- save: one HSET per item (all three fields, written together); delete: DEL of the
  matching keys. On one node a request is one MULTI/EXEC; on a cluster the items of
  a request sit in different slots, so each item is written atomically on its own.
- watch: keyspace notifications, in redis_watch.py (KeyspaceWatcher).

At most MAX_CONCURRENT operations run at once, so a burst of calls waits instead of
exhausting redis-py's connection pool.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

from layotto_fast.components.configuration.redis_watch import PING_INTERVAL, KeyspaceWatcher
from layotto_fast.components.redis_client import BACKEND_ERRORS, REDIS_ERRORS, Client, RedisConfig, failure, ping
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.configuration import ChangeListener, ConfigItem, ConfigQuery

SEPARATOR = "|"
SCAN_COUNT = 1000
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


class RedisConfigurationStore:
    def __init__(self, config: RedisConfig, watch_ping_interval: float = PING_INTERVAL) -> None:
        """``watch_ping_interval``: seconds of silence on the watch's connection before it is
        checked with a PING (redis_watch)."""
        self._config = config
        self._prefix = config.key_prefix
        self._client: Client | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._watcher = KeyspaceWatcher(self, config, _glob(config.key_prefix) + "*", watch_ping_interval)

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(RedisConfig.from_manifest(manifest))

    # --- lifecycle -------------------------------------------------------------------------

    async def init(self) -> None:
        if self._client is None:
            self._client = self._config.connect()
        await self.ping()
        await self._watcher.start()

    async def ping(self) -> None:
        assert self._client is not None, "init() first"
        await ping(self._client, self._config)

    async def close(self) -> None:
        await self._watcher.stop()
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

    def client(self) -> Any:
        """The client (a cluster client on a cluster); init() first."""
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
        pipe = self.client().pipeline(transaction=not self._config.cluster)
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
                pipe = self.client().pipeline(transaction=not self._config.cluster)
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
        async for raw in self.client().scan_iter(match=pattern, count=SCAN_COUNT):
            redis_key = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            item_id = self._item_id(redis_key)
            if item_id is not None and query.matches(_identity(item_id)):
                found[redis_key] = item_id
        return found

    async def _read(self, keys: dict[str, ItemId]) -> dict[str, ConfigItem | None]:
        """Each key's item, None where it is gone (or is not a hash); raises backend errors."""
        if not keys:
            return {}
        pipe = self.client().pipeline(transaction=False)
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

    # --- watches (redis_watch) -------------------------------------------------------------

    def watch(self, query: ConfigQuery, listener: ChangeListener) -> Callable[[], None]:
        return self._watcher.watch(query, listener)

    @property
    def watch_count(self) -> int:
        return self._watcher.watch_count

    # --- what the watcher reads through (redis_watch.WatchedStore; also client()) ----------

    def identity(self, redis_key: str) -> ConfigItem | None:
        """The item (without content) a Redis key names, or None when it names none."""
        item_id = self._item_id(redis_key)
        return None if item_id is None else _identity(item_id)

    async def read_items(self, items: Mapping[str, ConfigItem]) -> dict[str, ConfigItem | None]:
        """Each Redis key's item now, None where it is gone; ``items`` maps each key to its
        ``identity``. Raises backend errors."""
        keys = {redis_key: (item.app_id, item.group, item.label, item.key) for redis_key, item in items.items()}
        async with self._slots:
            return await self._read(keys)

    async def read_matching(self, queries: Callable[[], Iterable[ConfigQuery]]) -> dict[str, ConfigItem | None]:
        """The items the queries may match, by Redis key (None where gone). ``queries`` is
        called once the read may start, so a watch added while it waited is covered. Raises
        backend errors."""
        found: dict[str, ItemId] = {}
        async with self._slots:
            for query in queries():
                found.update(await self._find(query))
            return await self._read(found)
