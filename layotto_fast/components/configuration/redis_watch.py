"""The watch of ``configuration.redis`` (redis.py): Redis keyspace notifications turned
into changes for the store's listeners.

- ``init`` turns on the classes needed (``K`` keyspace, ``g`` DEL/EXPIRE/RENAME, ``h``
  hashes, ``$`` strings, ``x`` expiry) when the server lacks them, and logs a warning
  when the server refuses CONFIG (enable them there by hand). One pubsub per store
  (per master on a cluster: each node only reports its own keys) PSUBSCRIBEs
  ``__keyspace@{db}__:{keyPrefix}*``; a reported key that a watch covers is read again
  and the listeners whose query matches get the item, or the item with empty content
  when it is gone. A save or delete through this store reaches its listeners the same
  way as one made elsewhere (another sidecar, redis-cli), a few milliseconds after the
  write, so every listener sees changes in the order Redis applied them (quick changes
  of one key may arrive as the last one). Listeners are told only about a change: a
  key reread with the item they were last told about is not reported again.
- a new watch reads its keys once (absent ones as absent), in a task of its own: what they
  held then is the baseline that events and a later resync compare with, as if the
  listeners had been told it, so an item deleted while the connection was down is reported
  gone, and one that did not change is not reported. Events of writes made before that
  read may still be on their way, so the baseline is only provisional until a marker PING
  sent on each pubsub after the read is answered there (as for a deletion, below). Each
  pubsub's reader sends it at its next turn, after its next message or ``ping_interval`` of
  silence: only the reader writes there, as a command sent from elsewhere on a connection
  that failed makes redis-py connect it again unseen by the reader, which would then never
  resync nor turn the notifications on again. Until then
  the next event of a key has its item reported whatever the baseline holds (a
  change made after ``watch()`` is never lost), and a resync reports the item if present,
  its deletion if gone. A key read again since the baseline's read began keeps what that
  told; a key already known (another watch's) keeps what it has.
- a deletion is reported once. The events of a key sent before the read that found it gone
  may still be on their way (a batch cut at MAX_BATCH, the socket); each would read it
  gone again. So the key is remembered as gone until a PING, sent on each pubsub after
  that read, is answered there: Redis answers it after every event it sent before, and
  an event after it means the key was written again. Then it is forgotten: a watch on
  keys that come and go does not keep one entry for every key it ever saw deleted.
- when the pubsub's connection fails or closes (a Redis restart) it reconnects with
  backoff (at most 1 s apart), turns the notifications on again (a restarted Redis
  forgets CONFIG SET), and compares every watched item with what the listeners were
  last told (or its baseline): what changed, appeared or disappeared meanwhile is
  reported then.
- a connection that dies silently (the peer host gone, a NAT or firewall that forgot
  it: no reset, no close) is noticed too: after ``ping_interval`` (5 s) without a
  message on a pubsub's connection it sends PING there, and when nothing at all comes
  back within the store's ``readTimeout`` (3 s; the interval when 0) the connection is
  taken as lost and goes through the same reconnect and resync. A change made while it
  was dead is reported within about ``ping_interval + readTimeout`` plus the reconnect.

Without a ``keyPrefix`` the pubsub receives an event for every key written in the
database; on a Redis shared with other data, give the store a prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from layotto_fast.components.redis_client import BACKEND_ERRORS, REDIS_ERRORS, RedisConfig, failure
from layotto_fast.runtime.configuration import ChangeListener, ConfigItem, ConfigQuery, Watches
from layotto_fast.runtime.timeouts import end_if_cancelled

# The store's logger: to whoever reads or filters the logs, the watch is part of configuration.redis.
log = logging.getLogger("layotto_fast.components.configuration.redis")


NOTIFY_SETTING = "notify-keyspace-events"
NEEDED_EVENTS = "Kgh$x"
ALL_EVENTS = "g$lshzxet"  # what the class "A" stands for
RETRY_FIRST, RETRY_MAX = 0.05, 1.0  # seconds between attempts to subscribe again
PING_INTERVAL = 5.0  # seconds of silence on a pubsub's connection before it is pinged
MAX_BATCH = 1000  # notifications handled in one read of the changed keys


def _missing_events(current: str) -> str:
    """The classes of NEEDED_EVENTS that the setting ``current`` lacks."""
    have = set(current) | (set(ALL_EVENTS) if "A" in current else set())
    return "".join(flag for flag in NEEDED_EVENTS if flag not in have)


def _marker(data: object) -> int:
    """The count a marker PING carried, from its answer; 0 for any other PING's (the
    liveness check's carries nothing)."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
    return int(text) if text.isdigit() else 0


class WatchedStore(Protocol):
    """What the watcher asks of the store whose keys it watches (RedisConfigurationStore)."""

    def client(self) -> Any:
        """The store's client: a cluster client on a cluster."""
        ...

    def identity(self, redis_key: str) -> ConfigItem | None:
        """The item (without content) a Redis key names, or None when it names none."""
        ...

    async def read_items(self, items: Mapping[str, ConfigItem]) -> dict[str, ConfigItem | None]:
        """Each Redis key's item now, None where it is gone; ``items`` maps each key to its
        ``identity``. Raises backend errors."""
        ...

    async def read_matching(self, queries: Callable[[], Iterable[ConfigQuery]]) -> dict[str, ConfigItem | None]:
        """The items the queries may match, by Redis key (None where gone). ``queries`` is
        called once the read may start, so a watch added while it waited is covered. Raises
        backend errors."""
        ...


class _Subscription:
    """A pubsub on one node (its own connection), receiving the store's keyspace events."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pubsub: Any = None  # redis.asyncio.client.PubSub (its methods are untyped)
        # The last marker PING sent here, and the last answered (KeyspaceWatcher._marks then).
        self.asked = 0
        self.answered = 0

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


class _BaselineRead:
    """A new watch's read of its keys, in flight: the keys handled since it began (what it read
    of them may be older than what was told), and whether a resync began since (void)."""

    def __init__(self) -> None:
        self.handled: set[str] = set()
        self.void = False


class KeyspaceWatcher:
    """The watches of one store, and the task that reports the changes of their keys."""

    def __init__(
        self, store: WatchedStore, config: RedisConfig, key_pattern: str, ping_interval: float = PING_INTERVAL
    ) -> None:
        """``key_pattern``: the glob that matches every Redis key of the store; ``ping_interval``:
        the seconds of silence after which a pubsub's connection is asked whether it is alive."""
        self._store = store
        self._config = config
        self._ping_interval = ping_interval
        self._channel_prefix = f"__keyspace@{config.db}__:".encode()
        self._pattern = f"__keyspace@{config.db}__:{key_pattern}"
        self._watches = Watches()
        # Redis key -> the item its listeners were last told about (None: that it is gone), or
        # the item it held when its watch began (its baseline), when told nothing since.
        self._told: dict[str, ConfigItem | None] = {}
        # Marks, each with its count (_marks): a key told gone (a grave) is forgotten, and a
        # baseline confirmed, once every subscription answered a marker PING sent after it.
        self._marks = 0
        self._graves: dict[str, int] = {}  # the keys told gone
        self._pending: dict[str, int] = {}  # the keys whose baseline is not confirmed yet
        self._baselines: list[_BaselineRead] = []  # the reads of new watches in flight
        self._baseline_tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[_Subscription] = []  # the ones listened to now
        self._task: asyncio.Task[None] | None = None
        self._config_warned = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe on every node and watch from then on; raises as the store's calls do."""
        if self._task is None:
            try:
                subscriptions = await self._subscribe()
            except REDIS_ERRORS as exc:
                raise failure(self._config, exc) from None
            self._task = asyncio.get_running_loop().create_task(self._watch(subscriptions))

    async def stop(self) -> None:
        tasks = list(self._baseline_tasks)
        if self._task is not None:
            tasks.append(self._task)
            self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- watches ---------------------------------------------------------------------------

    def watch(self, query: ConfigQuery, listener: ChangeListener) -> Callable[[], None]:
        watch_id = self._watches.add(query, listener)
        if self._task is not None:  # watching: read the baseline of the new watch's keys
            task = self._task.get_loop().create_task(self._baseline(query))
            self._baseline_tasks.add(task)
            task.add_done_callback(self._baseline_tasks.discard)

        def cancel() -> None:
            if self._watches.remove(watch_id):
                self._forget_unwatched()

        return cancel

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    def _watched(self, identity: ConfigItem) -> bool:
        return any(query.matches(identity) for query in self._watches.queries())

    def _forget_unwatched(self) -> None:
        for redis_key in list(self._told):
            identity = self._store.identity(redis_key)
            if identity is None or not self._watched(identity):
                del self._told[redis_key]
                self._pending.pop(redis_key, None)

    def _changes(
        self, current: dict[str, ConfigItem | None], keys: Iterable[str], unknown_gone: bool = True
    ) -> list[ConfigItem]:
        """What listeners were not told yet about ``keys``, whose items are now ``current``;
        with ``unknown_gone``, also that an item they were never told about is gone."""
        changed = []
        for redis_key in keys:
            for baseline in self._baselines:  # handled now: what a baseline read before is stale
                baseline.handled.add(redis_key)
            item = current.get(redis_key)
            told = self._told.get(redis_key)
            known = redis_key in self._told
            # A provisional baseline: the event that brought this read may be of a write made
            # before the baseline's read, so an item is told even when the baseline has it,
            # and a key gone since a baseline of absence as when nothing was known of it.
            pending = self._pending.pop(redis_key, None) is not None
            if pending and told is None:
                known = False
            if item is None:
                if known and told is None:
                    # Still gone, on a read after some event of it: events sent before this
                    # read may yet come, so the key waits for a marker sent after it.
                    self._bury(redis_key)
                    continue
                if not known and not unknown_gone:
                    continue
                if told is None:
                    told = self._store.identity(redis_key)
                    if told is None:
                        continue
                changed.append(replace(told, content=""))
            elif item == told and not pending:
                continue
            else:
                changed.append(item)
            self._told[redis_key] = item
            if item is None:
                self._bury(redis_key)
            else:
                self._graves.pop(redis_key, None)
        return changed

    def _bury(self, redis_key: str) -> None:
        """File ``redis_key``, told gone, under the next mark: it is forgotten once every
        subscription answered a marker sent after now."""
        self._graves.pop(redis_key, None)
        self._marks += 1
        self._graves[redis_key] = self._marks  # at the end: the dict stays in mark order

    def _answered(self, subscription: _Subscription, marker: int) -> None:
        """``subscription`` answered the marker PING sent when the marks counted ``marker``:
        forget the keys told gone, and confirm the baselines, up to where every subscription
        has answered."""
        subscription.answered = max(subscription.answered, marker)
        answered = min(other.answered for other in self._subscriptions)
        while self._graves:
            redis_key, buried = next(iter(self._graves.items()))
            if buried > answered:
                break
            del self._graves[redis_key]
            if redis_key in self._told and self._told[redis_key] is None:
                del self._told[redis_key]
        while self._pending:
            redis_key, read = next(iter(self._pending.items()))
            if read > answered:
                break
            del self._pending[redis_key]  # confirmed: later events are compared with it

    async def _baseline(self, query: ConfigQuery) -> None:
        """Record what the keys of a new watch hold now (absent ones as absent), for the keys
        no listener was told about yet; each pubsub's reader sends the marker PING that
        confirms it."""
        baseline = _BaselineRead()
        self._baselines.append(baseline)
        try:
            current = await self._store.read_matching(lambda: [query])
        except Exception as exc:  # the watch goes on without (a lost connection resyncs it anyway)
            self._log_failure("cannot read the items of a new watch", exc, quiet=True)
            return
        finally:
            self._baselines.remove(baseline)
        if baseline.void:
            return  # a resync read them since, and set what the listeners know
        self._marks += 1
        for redis_key, item in current.items():
            if redis_key in self._told or redis_key in baseline.handled:
                continue  # known already, or read again since this read
            identity = self._store.identity(redis_key)
            if identity is not None and self._watched(identity):  # not cancelled meanwhile
                self._told[redis_key] = item
                self._pending[redis_key] = self._marks

    async def _refresh(self, redis_keys: Iterable[str]) -> None:
        """Read the watched ones of ``redis_keys`` again and tell their listeners what changed."""
        wanted: dict[str, ConfigItem] = {}
        for redis_key in redis_keys:
            identity = self._store.identity(redis_key)
            if identity is not None and self._watched(identity):
                wanted[redis_key] = identity
        if wanted:
            current = await self._store.read_items(wanted)
            self._watches.notify(self._changes(current, wanted))

    async def _resync(self) -> None:
        """After events may have been lost: report every watched item that differs from what
        was told (or from its baseline), and the ones gone since."""
        for baseline in self._baselines:  # read before this resync: what it sets stands
            baseline.void = True
        current = await self._store.read_matching(self._watches.queries)
        gone = [redis_key for redis_key, told in self._told.items() if told is not None and redis_key not in current]
        self._watches.notify(self._changes(current, [*current, *gone], unknown_gone=False))

    # --- the subscription ------------------------------------------------------------------

    async def _nodes(self, refresh: bool) -> list[tuple[str, int]]:
        """The nodes that emit the store's keyspace events: the server, or every master."""
        if not self._config.cluster:
            return [(self._config.host, self._config.port)]
        cluster = self._store.client()
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
        """Runs until stop(): read events; when Redis is lost, subscribe again and resync.
        Every task here checks ``end_if_cancelled`` after what sends to Redis: stop() must
        end them although redis-py may lose its cancel."""
        while True:
            try:
                end_if_cancelled()
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
            end_if_cancelled()
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
        self._subscriptions = subscriptions
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
        """Handle one pubsub's events; raises when its connection fails, or is silent and
        leaves a PING unanswered (a dead peer that sent no reset)."""
        pubsub = subscription.pubsub
        assert pubsub is not None
        loop = asyncio.get_running_loop()
        answer_within = self._config.read_timeout or self._ping_interval
        pinged_at: float | None = None  # when a PING went out that nothing has answered since
        while True:
            keys: dict[str, None] = {}  # in order, each once
            marking = self._graves or self._pending
            if marking and self._marks > subscription.asked and subscription.answered >= subscription.asked:
                subscription.asked = self._marks  # one marker at a time: one a round trip at most
                async with asyncio.timeout(answer_within):
                    await pubsub.ping(str(subscription.asked))
            if pinged_at is None:
                wait = self._ping_interval
            else:
                wait = pinged_at + answer_within - loop.time()
                if wait <= 0:
                    raise ConnectionError(f"no answer to PING within {answer_within:g} s: the connection is dead")
            end_if_cancelled()  # after the PINGs and the last turn's reads
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is None:  # silence (or a message of no interest)
                if pinged_at is None:
                    async with asyncio.timeout(answer_within):  # a send can stall on a dead peer too
                        await pubsub.ping()  # the answer comes as a message: get_message reads it
                    pinged_at = loop.time()
                continue
            pinged_at = None  # anything received (events, the PONG) shows the connection alive
            marker = 0  # the last marker PING answered in this read
            while message is not None:  # and whatever else has arrived: one read for them all
                channel = message.get("channel")
                if message.get("type") == "pmessage" and isinstance(channel, bytes):
                    keys[channel.removeprefix(self._channel_prefix).decode(errors="replace")] = None
                elif message.get("type") == "pong":
                    marker = max(marker, _marker(message.get("data")))
                if len(keys) >= MAX_BATCH:
                    break
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            if keys:
                await self._refresh(keys)
            if marker:  # after the events that came before it: a key they name may be a grave
                self._answered(subscription, marker)
