"""``configuration.etcd``: configuration items in etcd, watched with etcd's watch.

Layout (default ``keyPrefix`` ``/``, so that the keys are those Layotto's etcd store
writes and reads):

``{keyPrefix}{app_id}/{group}/{label}/{key}``
    The raw content, so that ``etcdctl put /app/g/l/k hello`` is an item (and a change)
    like one saved through a sidecar. An empty group or label is an empty path segment
    (``/app///k``), never a placeholder name, so every item reads back exactly as it was
    saved; through the API a blank group and label are ``default`` (the runtime's rule):
    ``/app/default/default/k``, as Layotto writes it. The key may contain
    ``/``; app id, group and label may not (InvalidArgument), and the app id ``.attrs``
    is reserved. Keys under the app with fewer segments are not items and are ignored.
``{keyPrefix}.attrs/{app_id}/{group}/{label}/{key}``
    The item's tags and metadata as JSON ``{"tags": {...}, "metadata": {...}}``,
    written in the same transaction as the content, only when either is non-empty,
    and deleted with it. An item written with etcdctl simply has none.

Queries: an empty group or label matches any; empty keys matches every key of the
app (``ConfigQuery.matches``). A get is one transaction (content and attributes read
at one revision); a save or a delete is one transaction per 64 items (etcd allows
128 operations in one).

Watches: one etcd watch per watched app, on ``{keyPrefix}{app_id}/``, run by a
background task that maps each watch response to ConfigItems (a delete has empty
content) and calls the listeners whose query matches, on the loop. Items saved or
deleted through this store are also delivered before ``save``/``delete`` return;
the watch then skips those revisions, so each change reaches a listener once.
Changes made by others (another sidecar, ``etcdctl``) are delivered from the app's
first watch: the task reads the app's items, then watches from the revision after that
read, established typically milliseconds after ``watch()`` (``wait_watching``). The
watch asks for etcd's progress notifications (every 10 min by default, etcd's
``--experimental-watch-progress-notify-interval``), so the revision it has seen
moves on while the app's keys are quiet and others' writes move etcd's. When etcd goes
away, or the connection replaces the client under the watch (a failed ping moved it to
another endpoint, an expired token was renewed: the old client's stream ends cancelled),
the task watches again (backing off up to 1 s) and resumes at the revision after the
last one it saw, so nothing is missed. If that revision has been compacted away, the
app's items are read again and compared with the ones the watch knows (each key of the
app with its mod_revision, from the first read and every change since): an item newer
than the one known is delivered as changed, a known one now gone as deleted, and the
others not at all; then it watches from the revision of that read. The cancel a
``watch()`` returns stops the app's etcd watch with its last query; ``close()`` stops
them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Self

import orjson
from aetcd import rpc  # type: ignore[import-untyped]

from layotto_fast.components.etcd_client import (
    MAX_TXN_OPS,
    EtcdConfig,
    EtcdConnection,
    op_delete,
    op_get,
    op_put,
    prefix_end,
    range_kvs,
    unauthenticated,
)
from layotto_fast.errors import InvalidArgument, RuntimeApiError, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.configuration import ChangeListener, ConfigItem, ConfigQuery, Watches
from layotto_fast.runtime.timeouts import end_if_cancelled

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/"  # Layotto's layout: /{app_id}/{group}/{label}/{key}
ATTRS = ".attrs"
ITEMS_PER_TXN = MAX_TXN_OPS // 2  # two operations per item: content and attributes
TXN_BYTES = 1024 * 1024  # keys and values written by one transaction, below etcd's request limit
RETRY_MIN, RETRY_MAX = 0.05, 1.0  # seconds between attempts to watch again
DELIVERED_TTL = 30.0  # how long a delivered revision is remembered to skip its echo
PRUNE_AT = 1024

ItemId = tuple[str, str, str, str]  # app_id, group, label, key


def _item_id(item: ConfigItem) -> ItemId:
    return item.app_id, item.group, item.label, item.key


def _relative(item: ConfigItem) -> str:
    return f"{item.group}/{item.label}/{item.key}"


def _chunks(items: Sequence[ConfigItem], size: int) -> Iterable[Sequence[ConfigItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_names(app_id: str, group: str, label: str) -> None:
    for field, value in (("app_id", app_id), ("group", group), ("label", label)):
        if "/" in value:
            raise InvalidArgument(f"{field} {value!r} contains '/': the etcd configuration store separates with it")
    if app_id == ATTRS:
        raise InvalidArgument(f"app_id {ATTRS!r} is reserved by the etcd configuration store")


def _attrs_json(item: ConfigItem) -> bytes:
    return orjson.dumps({"tags": item.tags, "metadata": item.metadata})


def _parse_attrs(raw: bytes | None) -> tuple[dict[str, str], dict[str, str]]:
    if not raw:
        return {}, {}
    try:
        document = orjson.loads(raw)
        tags, meta = document.get("tags") or {}, document.get("metadata") or {}
        return {str(k): str(v) for k, v in tags.items()}, {str(k): str(v) for k, v in meta.items()}
    except (orjson.JSONDecodeError, AttributeError):
        return {}, {}


class _AppWatch:
    """The listeners of one app, the task that follows its etcd watch, and what it delivered."""

    def __init__(self, app_id: str, prefix: bytes) -> None:
        self.app_id = app_id
        self.prefix = prefix
        self.watches = Watches()
        self.task: asyncio.Task[None] | None = None
        self.revision = 0  # every event up to this revision has been handled (0: none yet)
        self.established = asyncio.Event()
        self._delivered: dict[str, tuple[int, float]] = {}  # relative key -> (revision, when)
        # Relative key -> mod_revision of every item of the app, as the first read found it
        # or as delivered since (a deleted one is dropped): what a resync compares with.
        self.known: dict[str, int] = {}

    def seen(self, relative: str, revision: int) -> bool:
        done = self._delivered.get(relative)
        return done is not None and done[0] >= revision

    def claim(self, changes: Iterable[tuple[str, int, ConfigItem, bool]]) -> list[ConfigItem]:
        """The items not delivered yet at their revision, now marked delivered (and known, or
        no longer known when deleted); each change is (relative key, revision, item, deleted)."""
        now = time.monotonic()
        fresh = []
        for relative, revision, item, deleted in changes:
            if not self.seen(relative, revision):
                self._delivered[relative] = (revision, now)
                if deleted:
                    self.known.pop(relative, None)
                else:
                    self.known[relative] = revision
                fresh.append(item)
        if len(self._delivered) > PRUNE_AT:
            stale = now - DELIVERED_TTL
            self._delivered = {key: done for key, done in self._delivered.items() if done[1] > stale}
        return fresh

    def start_known(self, found: dict[str, int], revision: int) -> None:
        """Know the app's items as read at ``revision`` (relative key -> mod_revision), but for
        what this store delivered after that revision itself (a save or delete meanwhile)."""
        known = dict(found)
        for relative, (delivered, _) in self._delivered.items():
            if delivered > revision:
                if relative in self.known:
                    known[relative] = self.known[relative]
                else:
                    known.pop(relative, None)
        self.known = known


class EtcdConfigurationStore:
    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._conn = EtcdConnection(config)
        self._apps: dict[str, _AppWatch] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the watches run on

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(EtcdConfig.from_manifest(manifest, DEFAULT_PREFIX))

    async def init(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._conn.open()

    async def ping(self) -> None:
        await self._conn.ping()

    async def close(self) -> None:
        watches, self._apps = list(self._apps.values()), {}
        tasks = [watch.task for watch in watches if watch.task is not None] + list(self._stopping)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._conn.close()

    # --- keys ---------------------------------------------------------------------------------------

    def _app_prefix(self, app_id: str) -> str:
        return f"{self.config.key_prefix}{app_id}/"

    def _attrs_prefix(self, app_id: str) -> str:
        return f"{self.config.key_prefix}{ATTRS}/{app_id}/"

    def _to_item(self, app_id: str, relative: bytes, content: bytes, attrs: bytes | None) -> ConfigItem | None:
        parts = relative.decode(errors="replace").split("/", 2)
        if len(parts) != 3 or not parts[2]:
            return None
        group, label, key = parts
        tags, meta = _parse_attrs(attrs)
        return ConfigItem(app_id, key, content.decode(errors="replace"), group, label, tags, meta)

    # --- get / save / delete ------------------------------------------------------------------------

    async def _read(self, query: ConfigQuery) -> tuple[list[tuple[ConfigItem, int]], int]:
        """The items matching ``query`` with their mod_revision, and the revision read at."""
        _check_names(query.app_id, query.group, query.label)
        scope = ""
        if query.group:
            scope = f"{query.group}/{query.label}/" if query.label else f"{query.group}/"
        content_prefix = self._app_prefix(query.app_id).encode()
        attrs_prefix = self._attrs_prefix(query.app_id).encode()
        response = await self._conn.txn(
            [],
            [op_get(content_prefix + scope.encode(), prefix=True), op_get(attrs_prefix + scope.encode(), prefix=True)],
        )
        attrs = {bytes(kv.key[len(attrs_prefix) :]): bytes(kv.value) for kv in range_kvs(response, 1)}
        found = []
        for kv in range_kvs(response, 0):
            relative = bytes(kv.key[len(content_prefix) :])
            item = self._to_item(query.app_id, relative, kv.value, attrs.get(relative))
            if item is not None and query.matches(item):
                found.append((item, int(kv.mod_revision)))
        return found, int(response.header.revision)

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        found, _ = await self._read(query)
        return [item for item, _ in found]

    async def save(self, items: list[ConfigItem]) -> None:
        unique: dict[ItemId, ConfigItem] = {}
        for item in items:
            _check_names(item.app_id, item.group, item.label)
            unique[_item_id(item)] = item  # etcd refuses a transaction that writes a key twice
        # A transaction holds at most ITEMS_PER_TXN items and about TXN_BYTES: etcd refuses a
        # request over its --max-request-bytes (1.5 MiB by default) whatever it holds. An item
        # past that alone goes alone, for etcd to refuse (INVALID_ARGUMENT).
        chunk: list[ConfigItem] = []
        operations: list[Any] = []
        size = 0
        for item in unique.values():
            relative = _relative(item)
            content_key = f"{self._app_prefix(item.app_id)}{relative}".encode()
            attrs_key = f"{self._attrs_prefix(item.app_id)}{relative}".encode()
            content = item.content.encode()
            attrs = _attrs_json(item) if item.tags or item.metadata else b""
            weight = len(content_key) + len(content) + len(attrs_key) + len(attrs)
            if chunk and (len(chunk) >= ITEMS_PER_TXN or size + weight > TXN_BYTES):
                await self._put(chunk, operations)
                chunk, operations, size = [], [], 0
            chunk.append(item)
            operations.append(op_put(content_key, content))
            operations.append(op_put(attrs_key, attrs) if attrs else op_delete(attrs_key))
            size += weight
        if chunk:
            await self._put(chunk, operations)

    async def _put(self, chunk: list[ConfigItem], operations: list[Any]) -> None:
        response = await self._conn.txn([], operations)
        self._notify(chunk, int(response.header.revision), deleted=False)

    async def delete(self, query: ConfigQuery) -> None:
        found = [item for item, _ in (await self._read(query))[0]]
        for chunk in _chunks(found, ITEMS_PER_TXN):
            operations = []
            for item in chunk:
                relative = _relative(item)
                operations.append(op_delete(f"{self._app_prefix(item.app_id)}{relative}".encode()))
                operations.append(op_delete(f"{self._attrs_prefix(item.app_id)}{relative}".encode()))
            response = await self._conn.txn([], operations)
            gone = [
                replace(item, content="")
                for index, item in enumerate(chunk)
                if response.responses[2 * index].response_delete_range.deleted
            ]
            self._notify(gone, int(response.header.revision), deleted=True)

    def _notify(self, items: Sequence[ConfigItem], revision: int, deleted: bool) -> None:
        """Deliver this store's own changes now; the watch skips them when they come back."""
        for app_id, watch in self._apps.items():
            mine = [(_relative(item), revision, item, deleted) for item in items if item.app_id == app_id]
            if mine:
                watch.watches.notify(watch.claim(mine))

    # --- watch --------------------------------------------------------------------------------------

    def watch(self, query: ConfigQuery, listener: ChangeListener) -> Callable[[], None]:
        _check_names(query.app_id, query.group, query.label)
        app_id = query.app_id
        watch = self._apps.get(app_id)
        if watch is None:
            watch = _AppWatch(app_id, self._app_prefix(app_id).encode())
            loop = self._loop or asyncio.get_running_loop()  # watch() may be called off the loop
            watch.task = loop.create_task(self._follow(watch), name=f"{self.config.component} watch of app {app_id!r}")
            self._apps[app_id] = watch
        watch_id = watch.watches.add(query, listener)
        return lambda: self._unwatch(watch, watch_id)

    def _unwatch(self, watch: _AppWatch, watch_id: int) -> None:
        if not watch.watches.remove(watch_id) or watch.watches:
            return
        if self._apps.get(watch.app_id) is watch:
            del self._apps[watch.app_id]
        if watch.task is not None:
            watch.task.cancel()
            self._stopping.add(watch.task)
            watch.task.add_done_callback(self._stopping.discard)

    async def wait_watching(self, app_id: str, timeout: float) -> bool:
        """Wait until the etcd watch of ``app_id`` is established; False when it is not in time."""
        watch = self._apps.get(app_id)
        if watch is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.established.wait(), timeout)
        return watch.established.is_set()

    async def _follow(self, watch: _AppWatch) -> None:
        """Keep one etcd watch of the app open, reconnecting after failures, until cancelled."""
        pause, failing = RETRY_MIN, False
        while True:
            client: Any = None
            failure: BaseException | None = None
            why = ""
            try:
                client = self._conn.client()
                await self._stream(watch, client)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # this watch is stopped (its cancel, close())
                # Nobody cancelled this task: gRPC ends the calls of a channel being closed with
                # CancelledError, and the connection closes its client when it moves to another
                # endpoint (ping) or renews the token. The watch is lost: watch again, on the
                # client in use now, from the revision after the last one seen.
                failure, why = exc, "the etcd client it read from was closed and replaced"
            except Exception as exc:
                failure = exc
                why = exc.message if isinstance(exc, RuntimeApiError) else self._conn.unavailable(exc).message
            if failure is None:
                pause = RETRY_MIN  # ended by a compaction: watch again at once
            else:
                if watch.established.is_set():  # it worked until now: a new failure
                    pause, failing = RETRY_MIN, False
                if not failing:
                    log.warning(
                        "%s: watch of app %r failed (%s); watching again", self.config.component, watch.app_id, why
                    )
                failing = True
                if client is not None and self.config.username and unauthenticated(failure):
                    with contextlib.suppress(RuntimeApiError):
                        await self._conn.renew(client)
            watch.established.clear()
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _stream(self, watch: _AppWatch, client: Any) -> None:
        """One watch stream: returns after resyncing from a compaction, raises when it fails."""
        timeout = self.config.operation_timeout
        if not watch.revision:
            # The first watch of the app: what it holds now is what a resync compares with,
            # and the watch starts right after the revision of that read.
            found, revision = await self._read(ConfigQuery(watch.app_id))
            watch.start_known({_relative(item): mod_revision for item, mod_revision in found}, revision)
            watch.revision = revision
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            create = rpc.WatchCreateRequest(
                key=watch.prefix,
                range_end=prefix_end(watch.prefix),
                start_revision=watch.revision + 1,
                # Progress notifications (eventless responses) tell how far etcd's revision has
                # gone: a quiet watch follows it, and does not resume below a compaction.
                progress_notify=True,
            )
            await asyncio.wait_for(call.write(rpc.WatchRequest(create_request=create)), timeout)
            responses = call.__aiter__()
            created = await asyncio.wait_for(anext(responses), timeout)
            end_if_cancelled()  # a cancel lost by wait_for would leave the watch read below open
            if created.compact_revision:
                await self._resync(watch)
                return
            if created.canceled or not created.created:
                raise ConnectionError(f"etcd refused the watch: {created.cancel_reason or 'no reason given'}")
            if not watch.established.is_set():
                watch.established.set()
                log.info("%s: watching app %r from revision %d", self.config.component, watch.app_id, watch.revision)
            async for response in responses:
                if response.compact_revision:
                    await self._resync(watch)
                    return
                if response.canceled:
                    raise ConnectionError(f"etcd cancelled the watch: {response.cancel_reason or 'no reason given'}")
                if response.events:
                    await self._on_events(watch, response.events)
                else:  # a progress notification: every event up to its revision has been sent
                    watch.revision = max(watch.revision, int(response.header.revision))
            raise ConnectionError("etcd ended the watch stream")
        finally:
            call.cancel()

    async def _on_events(self, watch: _AppWatch, events: Sequence[Any]) -> None:
        last: dict[bytes, Any] = {}  # key -> its last event in this response
        top = watch.revision
        for event in events:
            last[bytes(event.kv.key)] = event
            top = max(top, int(event.kv.mod_revision))
        changes: list[tuple[str, int, ConfigItem, bool]] = []
        written: list[str] = []  # put, not deleted: their attributes are read
        for key, event in last.items():
            deleted = event.type == rpc.Event.DELETE
            item = self._to_item(watch.app_id, key[len(watch.prefix) :], b"" if deleted else event.kv.value, None)
            revision = int(event.kv.mod_revision)
            if item is None or watch.seen(_relative(item), revision):
                continue  # not an item, or saved through this store and told already
            changes.append((_relative(item), revision, item, deleted))
            if not deleted:
                written.append(_relative(item))
        if written:
            attrs = await self._read_attrs(watch.app_id, written)
            for index, (relative, revision, item, deleted) in enumerate(changes):
                if relative in attrs:
                    tags, meta = _parse_attrs(attrs[relative])
                    changes[index] = (relative, revision, replace(item, tags=tags, metadata=meta), deleted)
        watch.revision = max(watch.revision, top)
        watch.watches.notify(watch.claim(changes))

    async def _read_attrs(self, app_id: str, relatives: list[str]) -> dict[str, bytes]:
        """The stored attributes of items; none when etcd does not answer (the change is still told)."""
        prefix = self._attrs_prefix(app_id)
        found: dict[str, bytes] = {}
        try:
            for start in range(0, len(relatives), MAX_TXN_OPS):
                chunk = relatives[start : start + MAX_TXN_OPS]
                response = await self._conn.txn([], [op_get(f"{prefix}{relative}".encode()) for relative in chunk])
                for index, relative in enumerate(chunk):
                    kvs = range_kvs(response, index)
                    if kvs:
                        found[relative] = bytes(kvs[0].value)
        except Unavailable as exc:
            log.debug("%s: attributes of changed items not read: %s", self.config.component, exc.message)
        return found

    async def _resync(self, watch: _AppWatch) -> None:
        """The revision to resume from was compacted: read the app's items again and tell what
        differs from the ones known (newer, new, or gone); watch on from that read."""
        found, revision = await self._read(ConfigQuery(watch.app_id))
        log.warning(
            "%s: watch of app %r lost history to a compaction; its items are read again and the changes told",
            self.config.component,
            watch.app_id,
        )
        current = {_relative(item): (item, mod_revision) for item, mod_revision in found}
        changes = [
            (relative, mod_revision, item, False)
            for relative, (item, mod_revision) in current.items()
            if watch.known.get(relative, 0) < mod_revision
        ]
        for relative, known_revision in watch.known.items():
            # Gone at the read; not when known from a save after it (this store's own, told).
            if relative not in current and known_revision <= revision:
                item = self._to_item(watch.app_id, relative.encode(), b"", None)
                if item is not None:
                    changes.append((relative, revision, item, True))
        watch.revision = revision
        watch.watches.notify(watch.claim(changes))
