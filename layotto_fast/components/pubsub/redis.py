"""``pubsub.redis``: Redis Streams with consumer groups (Dapr's metadata names).

A topic is a stream; a publish is ``XADD`` (trimmed to about ``maxLenApprox`` entries when
set) and answers once Redis has it, as durable as Redis' own persistence makes it. A
subscription reads as one consumer of its group (``consumerID``, the subscription's own
first): consumers of one group share the entries, each group gets all of them, from the
start of the stream for a group that is new.

An entry is acknowledged (``XACK``) only after SUCCESS, or DROP (Redis has no other way to
give one up). Anything else leaves it pending; every ``redeliverInterval`` each subscription
claims (``XAUTOCLAIM``) the entries pending longer than ``processingTimeout`` in its group,
its own included, and handles them again: entries read by a sidecar that crashed are not
lost, they move to a live consumer. The ones it still holds (read and waiting for a slot,
being handled, or being acknowledged) it does not hand out again, and it keeps them fresh
in Redis (their idle time made zero FRESHENINGS_PER_TIMEOUT times a ``processingTimeout``),
so that the group's other consumers do not claim them from it either. Either duration at 0
turns claiming off, as in Dapr.

Every subscription is a consumer of its own, under a name of its own, and Redis keeps a
consumer in its group until it is deleted: a sidecar that dies, or a subscription stopped with
entries pending on it, would leave one behind for good (thousands a day where app connections
come and go). Every few minutes each subscription deletes the consumers of its group that have
nothing pending and have not been seen for STALE_CONSUMER_SECONDS, or STALE_CONSUMER_TIMEOUTS
times ``processingTimeout`` when that is longer (``_sweep``); one with entries pending stays until
they are claimed from it.

The two durations read as Dapr's Redis Streams component reads them: plain digits are
milliseconds, and they default to 60s (``processingTimeout``) and 15s (``redeliverInterval``).

Acknowledgements wait up to ``ACK_DELAY`` to go out together, one ``XACK`` for many ids: a
write and a command per message cost the sidecar and Redis more than the rest of a delivery
(measured here). A sidecar that dies in that window leaves the entries pending, and they are
delivered again: at least once, never lost.

Unsubscribing stops reading at once and lets the handler calls in flight finish until the
deadline it is given (see ``Unsubscribe``); the entries it cuts off stay pending, claimed later.
Then Redis is waited for (the XACK of what was settled, leaving the group) up to the read
timeout, and no longer than FINISH_SECONDS past a deadline: a Redis that stopped answering
does not hold a sidecar's stop past its shutdown grace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import orjson
from redis import exceptions as redis_errors

from layotto_fast.components.pubsub import DEFAULT_GROUP
from layotto_fast.components.redis_client import REDIS_ERRORS, RedisConfig, failure
from layotto_fast.components.redis_pipeline import NodePipeline, PipelinedRedis, Script
from layotto_fast.errors import Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.pubsub import Handler, Message, SubscribeOptions, Unsubscribe, Verdict
from layotto_fast.runtime.pubsub_dispatch import Dispatcher
from layotto_fast.runtime.timeouts import end_if_cancelled

log = logging.getLogger(__name__)

READ_BLOCK_MS = 1000  # longest a read waits for entries; half the read timeout when that is shorter
BACKOFF_SECONDS = (0.05, 2.0)  # first and longest pause of a reader whose Redis is away
ACK_DELAY = 0.002  # seconds an acknowledgement may wait to share one XACK with others
# A failed XACK (Redis restarting, a connection lost) is sent again after ACK_RETRY seconds,
# up to ACK_ATTEMPTS times in a row; past that its entries stay pending, delivered again.
ACK_RETRY, ACK_ATTEMPTS = 0.5, 20
# Seconds past an unsubscribe's deadline that its last XACK and leaving the group may take: a
# Redis that answers takes milliseconds; one that does not is given up on.
FINISH_SECONDS = 0.2
# What a read may raise when Redis is away: redis-py's errors, or the pipeline's Unavailable.
AWAY: tuple[type[BaseException], ...] = (*REDIS_ERRORS, Unavailable)
AWAY_OR_LATE: tuple[type[BaseException], ...] = (*AWAY, TimeoutError)
# A live subscription's consumer reads at least every READ_BLOCK_MS, and on Redis >= 7.2 every
# read resets its idle time: idle for an hour (or ten processingTimeouts, when longer: a reader
# waiting for slots behind slow handlers does not read), its subscription is gone. Before 7.2
# only a read that returns entries counts, so a live consumer of a quiet stream may be deleted:
# harmless, as it has nothing pending then, and its next read that gets entries makes it again.
STALE_CONSUMER_SECONDS = 3600.0
STALE_CONSUMER_TIMEOUTS = 10
# Sweeps per stale threshold: a stale consumer lasts at most 1/12 longer than the threshold,
# and a group is listed every five minutes at the default hour, not every claim pass.
SWEEPS_PER_THRESHOLD = 12

# KEYS[1]: the stream. ARGV[1]: the group, ARGV[2]: the idle time in ms from which a consumer
# is stale, ARGV[3...]: the consumers of live subscriptions here, kept whatever their idle time.
# Deletes the stale consumers with nothing pending and answers how many. In a script because the
# check and the delete must be one step: XGROUP DELCONSUMER drops the pending entries of the
# consumer it deletes, which would then never be delivered again, and a read between the two
# could have given it some.
DELETE_STALE_CONSUMERS = Script(
    """
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local stale_ms = tonumber(ARGV[2])
local deleted = 0
for _, consumer in ipairs(redis.call("XINFO", "CONSUMERS", KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info["pending"] == 0 and info["idle"] >= stale_ms and not keep[info["name"]] then
    redis.call("XGROUP", "DELCONSUMER", KEYS[1], ARGV[1], info["name"])
    deleted = deleted + 1
  end
end
return deleted
"""
)

# KEYS[1]: the stream. ARGV[1]: the group, ARGV[2]: a consumer. Deletes the consumer when nothing
# is pending on it, in one step for the reason above: its read, still blocked in Redis after
# the subscription stopped (its connection's close not yet seen), may be given entries at any
# moment. Answers 1 when it deleted the consumer.
LEAVE_GROUP = Script(
    """
if #redis.call("XPENDING", KEYS[1], ARGV[1], "-", "+", 1, ARGV[2]) > 0 then return 0 end
redis.call("XGROUP", "DELCONSUMER", KEYS[1], ARGV[1], ARGV[2])
return 1
"""
)

# KEYS[1]: the stream. ARGV[1]: the group, ARGV[2]: a consumer, ARGV[3...]: entry ids it holds.
# Makes the idle time of each id still pending on that consumer zero again (XCLAIM to itself;
# JUSTID leaves its delivery count alone), and answers how many; an id claimed away meanwhile
# is left to its new owner.
KEEP_FRESH = Script(
    """
local kept = 0
for i = 3, #ARGV do
  if #redis.call("XPENDING", KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
    redis.call("XCLAIM", KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], "JUSTID")
    kept = kept + 1
  end
end
return kept
"""
)
# Times per processingTimeout the entries a subscription holds are made fresh again.
FRESHENINGS_PER_TIMEOUT = 3


@dataclass(frozen=True)
class StreamsConfig:
    redis: RedisConfig
    consumer_id: str = DEFAULT_GROUP
    max_len_approx: int = 0  # 0: not trimmed by length
    stream_ttl: float = 0.0  # seconds an entry is kept at least; 0: not trimmed by age
    processing_timeout: float = 60.0  # 0: pending entries are never claimed again
    redeliver_interval: float = 15.0  # 0: the same
    concurrency: int = 10
    queue_depth: int = 100  # entries asked for per read
    # Seconds without a sign of a consumer after which it is stale (see STALE_CONSUMER_SECONDS);
    # None: the default. Not a metadata name (Dapr has none): tests set it.
    stale_consumer_seconds: float | None = None

    @property
    def stale_after(self) -> float:
        """Seconds from which a consumer that shows no sign of life is taken for gone."""
        if self.stale_consumer_seconds is not None:
            return self.stale_consumer_seconds
        return max(STALE_CONSUMER_SECONDS, STALE_CONSUMER_TIMEOUTS * self.processing_timeout)

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> StreamsConfig:
        for name in ("processingTimeout", "redeliverInterval"):
            raw = manifest.metadata.get(name, "").strip()
            if raw.isdigit() and 0 < int(raw) < 1000:  # most likely meant as seconds
                log.warning("%s: spec.metadata.%s %s is read as milliseconds, as Dapr reads it; for seconds "
                            "write %ss", manifest.source, name, raw, raw)  # fmt: skip
        return cls(
            redis=RedisConfig.from_manifest(manifest),
            consumer_id=metadata.text(manifest, "consumerID", DEFAULT_GROUP),
            max_len_approx=metadata.integer(manifest, "maxLenApprox", 0, minimum=0),
            stream_ttl=metadata.duration(manifest, "streamTTL", 0.0),
            processing_timeout=metadata.duration(manifest, "processingTimeout", 60.0),
            redeliver_interval=metadata.duration(manifest, "redeliverInterval", 15.0),
            concurrency=metadata.integer(manifest, "concurrency", 10, minimum=1),
            queue_depth=metadata.integer(manifest, "queueDepth", 100, minimum=1),
        )


class RedisStreamsPubSub(PipelinedRedis):
    def __init__(self, config: StreamsConfig) -> None:
        super().__init__(config.redis)
        self._streams = config
        self._stops: set[Unsubscribe] = set()
        self._readers: set[_Reader] = set()  # the live subscriptions: their consumers are never swept

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(StreamsConfig.from_manifest(manifest))

    async def publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        assert self._pipeline is not None, "init() first"
        streams = self._streams
        trim: tuple[Any, ...] = ()
        if streams.max_len_approx:
            trim = ("MAXLEN", "~", streams.max_len_approx)
        elif streams.stream_ttl:  # as Dapr trims with streamTTL: entries older than it (Redis 6.2)
            trim = ("MINID", "~", f"{int((time.time() - streams.stream_ttl) * 1000)}-1")
        fields: tuple[Any, ...] = ("data", data)
        if metadata:
            fields += ("metadata", orjson.dumps(dict(metadata)))
        try:
            await self._pipeline.call(("XADD", topic, *trim, "*", *fields))
        except REDIS_ERRORS as exc:
            raise failure(self._config, exc) from None

    async def subscribe(self, topic: str, options: SubscribeOptions, handler: Handler) -> Unsubscribe:
        assert self._client is not None and self._pipeline is not None, "init() first"
        reader = _Reader(self, topic, options.group or self._streams.consumer_id, options, handler)
        await reader.create_group()
        self._readers.add(reader)
        reader.start()

        async def stop(deadline: float | None = None) -> None:
            self._stops.discard(stop)
            try:
                await reader.stop(deadline)
            finally:
                self._readers.discard(reader)

        self._stops.add(stop)
        return stop

    async def close(self) -> None:
        # side by side: each may wait up to the read timeout for Redis (acknowledgements, leaving its group)
        await asyncio.gather(*(stop() for stop in list(self._stops)))
        await super().close()


class _Reader:
    """One consumer of one group: reads new entries, claims stale ones, acknowledges."""

    def __init__(
        self, owner: RedisStreamsPubSub, topic: str, group: str, options: SubscribeOptions, handler: Handler
    ) -> None:
        self._owner = owner
        self._client: Any = owner._client
        self._pipeline = owner._pipeline
        self._config = owner._streams
        self._topic, self._group = topic, group
        # One name per subscription and process: a restarted sidecar's entries are claimed, not resumed.
        self._consumer = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        concurrency = options.concurrency or self._config.concurrency
        self._dispatcher = Dispatcher(handler, self._settle, concurrency, topic)
        self._in_hand: set[bytes] = set()  # entry ids read or claimed here and not settled yet
        self._acks: list[bytes] = []  # settled, waiting for the next XACK
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_failures = 0  # XACKs failed in a row
        self._acking: set[asyncio.Future[Any]] = set()  # XACKs sent, not answered yet
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Blocking reads on a connection of their own, parsed by hiredis: through redis-py a
        # read costs about 190 µs of CPU, which at one message per read is most of a delivery.
        # A cluster keeps redis-py's client, which finds the stream's node.
        self._reads = None if owner._streams.redis.cluster else NodePipeline(owner._streams.redis)
        self._block_ms = read_block_ms(owner._streams.redis.read_timeout)

    async def create_group(self) -> None:
        try:
            await self._client.xgroup_create(self._topic, self._group, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise failure(self._config.redis, exc) from None
        except REDIS_ERRORS as exc:
            raise failure(self._config.redis, exc) from None

    @property
    def consumer(self) -> str:
        return self._consumer

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._read()))
        self._tasks.append(loop.create_task(self._claim()))
        if self._config.redeliver_interval > 0 and self._config.processing_timeout > 0:
            self._tasks.append(loop.create_task(self._keep_fresh()))

    async def stop(self, deadline: float | None = None) -> None:
        """Stop reading and claiming, let the handler calls in flight finish until ``deadline``
        (``Unsubscribe``'s), then acknowledge what was settled and leave the group: Redis is
        waited for up to the read timeout, since the pipeline may close right after, and with a
        deadline until FINISH_SECONDS past it at the latest."""
        # redis-py may turn the cancellation of a blocked read into a connection error, which
        # the loops would take for Redis being away: they look at this flag as well.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks)
        if self._reads is not None:
            await self._reads.close()
        await self._dispatcher.drain(deadline)
        loop = asyncio.get_running_loop()
        limit = max(self._config.redis.read_timeout, 1.0)  # bounded: Redis may be away
        if deadline is not None:  # a sidecar's stop: no later than just past its grace
            limit = min(limit, max(0.0, deadline - loop.time()) + FINISH_SECONDS)
        finish_by = loop.time() + limit
        self._send_acks()
        if self._acking:  # the pipeline closes after this: what was settled is acknowledged first
            await asyncio.wait(self._acking, timeout=limit)
            if self._acking:
                log.info("stopping %s: Redis did not answer the last XACK within %.2gs: its entries stay pending, "
                         "claimed later", self._topic, limit)  # fmt: skip
        await self._leave_group(finish_by)

    async def _leave_group(self, finish_by: float) -> None:
        """Remove this subscription's consumer from its group when nothing is pending on it: each
        subscription is a consumer of its own, and the group would keep every one for good. One
        with pending entries stays, for another consumer to claim them from. Given up at
        ``finish_by`` (the loop's clock)."""
        if asyncio.get_running_loop().time() >= finish_by:  # redis-py may not return at once from a cancelled call
            log.info("consumer %s stays in group %s of %s: no time left to remove it", self._consumer, self._group,
                     self._topic)  # fmt: skip
            return
        assert self._pipeline is not None
        try:
            async with asyncio.timeout_at(finish_by):
                await self._pipeline.script(LEAVE_GROUP, [self._topic], [self._group, self._consumer])
        except AWAY_OR_LATE as exc:
            why = str(exc) or "no answer in time"
            log.info("removing consumer %s from group %s of %s failed: %s", self._consumer, self._group,
                     self._topic, why)  # fmt: skip

    async def _read(self) -> None:
        pause = BACKOFF_SECONDS[0]
        while not self._stopping:
            try:
                replies = await self._read_batch()
            except redis_errors.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted, or Redis restarted without its data
                    await self._recreate_group()
                    continue
                log.warning("reading %s failed: %s", self._topic, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_SECONDS[1])
                continue
            except AWAY as exc:
                log.info("reading %s: redis unavailable (%s); trying again in %.2fs", self._topic, exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_SECONDS[1])
                continue
            except Exception:  # a reader that dies would leave its topic unread: never
                log.exception("reading %s failed; trying again in %.2fs", self._topic, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_SECONDS[1])
                continue
            pause = BACKOFF_SECONDS[0]
            if self._stopping:
                return  # read just as the subscription stopped: left pending, claimed later
            for _stream, entries in replies or ():
                await self._hand_over(entries, 1)

    async def _read_batch(self) -> list[tuple[Any, list[tuple[bytes, dict[bytes, bytes]]]]]:
        """New entries for this consumer, waiting up to READ_BLOCK_MS for some."""
        if self._reads is None:
            replies: list[Any] = await self._client.xreadgroup(
                self._group, self._consumer, {self._topic: ">"}, count=self._config.queue_depth, block=self._block_ms
            )
            return replies or []
        reply = await self._reads.call(
            ("XREADGROUP", "GROUP", self._group, self._consumer, "COUNT", self._config.queue_depth,
             "BLOCK", self._block_ms, "STREAMS", self._topic, ">")
        )  # fmt: skip
        return [
            (stream, [(entry_id, _field_map(fields)) for entry_id, fields in entries])
            for stream, entries in reply or ()
        ]

    async def _recreate_group(self) -> None:
        try:
            await self.create_group()
        except Exception as exc:
            log.info("recreating group %s of %s failed: %s", self._group, self._topic, exc)
            await asyncio.sleep(BACKOFF_SECONDS[1])

    async def _claim(self) -> None:
        """Claim the stale entries of the group every redeliverInterval (when claiming is on),
        and delete its stale consumers every 1/SWEEPS_PER_THRESHOLD of their threshold: after
        a claim pass, which may just have emptied some."""
        claiming = self._config.redeliver_interval > 0 and self._config.processing_timeout > 0
        sweep_every = self._config.stale_after / SWEEPS_PER_THRESHOLD
        pause = self._config.redeliver_interval if claiming else sweep_every
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()  # the first pass sweeps: a restarted sidecar clears what it left
        while not self._stopping:
            await asyncio.sleep(pause)
            if claiming:
                await self._claim_stale_entries()
            if loop.time() >= next_sweep and not self._stopping:
                next_sweep = loop.time() + sweep_every
                await self._sweep()

    async def _keep_fresh(self) -> None:
        """Keep the entries this subscription holds (waiting for a slot, being handled, being
        acknowledged) from growing idle in Redis: past ``processingTimeout`` the group's other
        consumers would claim them and deliver them a second time while they are still in
        hand here. Claiming is for the entries of a consumer that is gone."""
        assert self._pipeline is not None
        pause = self._config.processing_timeout / FRESHENINGS_PER_TIMEOUT
        while not self._stopping:
            await asyncio.sleep(pause)
            held = sorted(self._in_hand)
            if not held:
                continue
            try:
                await self._pipeline.script(KEEP_FRESH, [self._topic], [self._group, self._consumer, *held])
            except AWAY as exc:  # the claims a later pass makes, or another consumer's, decide then
                log.info("keeping the entries held for %s fresh failed: %s", self._topic, exc)
            end_if_cancelled()

    async def _claim_stale_entries(self) -> None:
        idle_ms = int(self._config.processing_timeout * 1000)
        start: Any = "0-0"
        try:
            while True:
                reply = await self._client.xautoclaim(
                    self._topic, self._group, self._consumer, idle_ms, start, count=self._config.queue_depth
                )
                start, entries = reply[0], reply[1]
                # Entries this reader holds are claimed too (to itself: their idle time
                # starts again), but not handed out a second time.
                await self._hand_over([e for e in entries if e[1] is not None and e[0] not in self._in_hand], 2)
                if start in (b"0-0", "0-0"):
                    break
        except AWAY as exc:
            log.info("claiming stale entries of %s failed: %s", self._topic, exc)

    async def _sweep(self) -> None:
        """Delete the consumers of the group left by subscriptions that are gone (see
        DELETE_STALE_CONSUMERS); never one with entries pending, nor one of this sidecar's."""
        assert self._pipeline is not None
        live = sorted(r.consumer for r in self._owner._readers if (r._topic, r._group) == (self._topic, self._group))
        stale_ms = int(self._config.stale_after * 1000)
        try:
            deleted = await self._pipeline.script(
                DELETE_STALE_CONSUMERS, [self._topic], [self._group, str(stale_ms), *live]
            )
        except AWAY as exc:  # NOGROUP as well: the reader makes the group again
            log.info("deleting stale consumers of group %s of %s failed: %s", self._group, self._topic, exc)
            return
        if deleted:
            log.info("deleted %s consumers of group %s of %s idle for %.0fs or more, with nothing pending",
                     deleted, self._group, self._topic, self._config.stale_after)  # fmt: skip

    async def _hand_over(self, entries: list[tuple[bytes, dict[bytes, bytes]]], delivery_count: int) -> None:
        """Submit ``entries``, waiting for room when there are more than free slots.

        They are in hand from now, not from their own submit: the ones waiting for room are
        pending in Redis and growing idle like the rest, and the claimer must not take them
        for stale ones and hand them out beside this. The ones a stop leaves here are let go:
        pending in Redis, claimed again later.
        """
        self._in_hand.update(entry_id for entry_id, _ in entries)
        handed = 0
        try:
            for entry_id, fields in entries:
                if self._dispatcher.free <= 0:  # more in hand than there is room for
                    await self._dispatcher.room(min(len(entries) - handed, self._dispatcher.batch))
                await self._submit(entry_id, fields, delivery_count)
                handed += 1
        finally:
            self._in_hand.difference_update(entry_id for entry_id, _ in entries[handed:])

    async def _submit(self, entry_id: bytes, fields: dict[bytes, bytes], delivery_count: int) -> None:
        data = fields.get(b"data")
        if data is None:  # not written by a pub/sub publisher: nothing to hand over
            log.warning("entry %s of stream %s has no 'data' field: acknowledged, not delivered",
                        entry_id.decode(), self._topic)  # fmt: skip
            self._ack(entry_id)
            return
        raw_meta = fields.get(b"metadata")
        meta: dict[str, str] = {}
        if raw_meta:
            try:
                meta = {str(k): str(v) for k, v in orjson.loads(raw_meta).items()}
            except (orjson.JSONDecodeError, AttributeError):
                meta = {}
        meta["redisStreamEntryId"] = entry_id.decode()
        await self._dispatcher.submit(Message(self._topic, data, meta, delivery_count))

    def _settle(self, message: Message, verdict: Verdict) -> None:
        entry_id = message.metadata["redisStreamEntryId"].encode()
        if verdict in (Verdict.SUCCESS, Verdict.DROP):
            self._ack(entry_id)  # in hand until Redis has the XACK: till then the claimer could take it
        else:
            self._in_hand.discard(entry_id)

    def _ack(self, entry_id: bytes) -> None:
        """Acknowledge ``entry_id`` with the next XACK: within ACK_DELAY, or at once when a
        read's worth are waiting."""
        self._acks.append(entry_id)
        if len(self._acks) >= self._config.queue_depth:
            self._send_acks()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_acks)

    def _send_acks(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        ids, self._acks = self._acks, []
        if not ids:
            return
        assert self._pipeline is not None
        reply = self._pipeline.call(("XACK", self._topic, self._group, *ids))
        self._acking.add(reply)
        reply.add_done_callback(lambda done: self._acked(done, ids))

    def _acked(self, reply: asyncio.Future[Any], ids: list[bytes]) -> None:
        self._acking.discard(reply)
        error = None if reply.cancelled() else reply.exception()
        if error is None:
            self._ack_failures = 0
            self._in_hand.difference_update(ids)
            return
        self._ack_failures += 1
        if self._stopping or self._ack_failures > ACK_ATTEMPTS:
            # they stay pending: claimed and handled again later
            self._in_hand.difference_update(ids)
            log.info("acknowledging %d entries of %s failed: %s; they stay pending", len(ids), self._topic, error)
            return
        # Kept in hand meanwhile, so that no consumer claims what the app has handled.
        log.info("acknowledging %d entries of %s failed (%s): again in %gs", len(ids), self._topic, error, ACK_RETRY)
        self._acks[:0] = ids
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        self._ack_timer = asyncio.get_running_loop().call_later(ACK_RETRY, self._send_acks)


def read_block_ms(read_timeout: float) -> int:
    """How long a read waits for new entries: READ_BLOCK_MS, or half the client's read timeout
    when that is shorter, so that the timeout never cuts a read that is only waiting."""
    if read_timeout <= 0:  # no read timeout
        return READ_BLOCK_MS
    return max(1, min(READ_BLOCK_MS, int(read_timeout * 500)))


def _field_map(fields: list[bytes]) -> dict[bytes, bytes]:
    """An entry's fields, read as name, value, name, value...; most have one, its data."""
    if len(fields) == 2:
        return {fields[0]: fields[1]}
    return dict(zip(fields[::2], fields[1::2], strict=True))
