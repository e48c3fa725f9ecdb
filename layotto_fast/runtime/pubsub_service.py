"""The pub/sub service: publishing in CloudEvents envelopes, and the rules of delivery.

Publishing answers only once the component says the backend took the message. Delivery
to a subscriber (the app's callback, or a SubscribeTopicEvents stream) goes through
``subscribe``, which owns what happens to a message the subscriber does not take:

- RETRY, an error or a timeout: delivered again after a backoff, up to the subscription's
  attempts; then to its dead-letter topic when it has one, else handed back to the
  component unacknowledged (the backend delivers it again later). Never silently gone.
- DROP: to the dead-letter topic when there is one, else discarded.
- The subscriber gone before it answered (a stream that ended): back to the component
  unacknowledged at once, with no retry and no dead letter; the backend hands it out again
  in its own time (Redis once claimed after processingTimeout, JetStream after its ackWait,
  in-memory after redeliverInterval), and a JetStream maxDeliver counts that delivery too.

Per-subscription options come from the subscription's metadata (names below); a bad value
is INVALID_ARGUMENT naming the key. Its durations are at most an hour, and a delivery
timeout more than 0.

Stopping: a subscription's stop (the ``Unsubscribe`` ``subscribe`` returns) stops reading at
once and lets the deliveries in flight finish until a deadline, then hands the rest back
unacknowledged. The sidecar's stop calls ``close`` with the end of its shutdown grace: every
subscription stops together, by that deadline, and none starts after it.

``rawPayload`` (Dapr's name), on a publish: the data is stored as it is, with no envelope.
On a subscription, or on a message published that way: the message is handed over as raw
bytes, never read as a CloudEvent. A raw message has no id of its own; its id is a hash of
its bytes, which publishing returns too, so the publisher and the app see the same id.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from layotto_fast.errors import InvalidArgument, PermissionDenied, RuntimeApiError, Unavailable, require
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.cloudevents import (
    Event,
    NotACloudEvent,
    expiration_after,
    has_expired,
    raw_event,
    raw_id,
    unwrap,
    wrap,
)
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.metadata import DURATION_EXAMPLES, as_integer, parse_duration
from layotto_fast.runtime.pubsub import (
    DRAIN_SECONDS,
    Message,
    PubSub,
    SubscribeOptions,
    SubscriberGone,
    Unsubscribe,
    Verdict,
)
from layotto_fast.runtime.pubsub_scopes import TopicScopes
from layotto_fast.runtime.state_rules import MAX_TTL_SECONDS, TTL_KEY

log = logging.getLogger(__name__)

# deliver(event, timeout): the subscriber's verdict, or TimeoutError after ``timeout`` seconds.
Deliver = Callable[[Event, float], Awaitable[Verdict]]

# TopicSubscription metadata keys the service reads. The component is handed the whole map
# (SubscribeOptions.metadata), as Dapr hands a component the subscription's metadata.
RETRY_ATTEMPTS = "retryAttempts"
RETRY_INITIAL_INTERVAL = "retryInitialInterval"
RETRY_MAX_INTERVAL = "retryMaxInterval"
DELIVERY_TIMEOUT = "deliveryTimeout"
CONCURRENCY = "concurrency"
CONSUMER_GROUP = "consumerID"
DEAD_LETTER_TOPIC = "deadLetterTopic"
RAW_PAYLOAD = "rawPayload"  # publish and subscription metadata

MAX_IDLE_TOPIC_COUNTS = 100  # topics no subscription reads any more whose counts stay shown
MAX_DURATION = 3600.0  # seconds: the longest deliveryTimeout, retryInitialInterval or retryMaxInterval
MAX_DURATION_TEXT = "1h"

# strconv.ParseBool's spellings, which Dapr's rawPayload is read with.
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"", "0", "f", "F", "false", "FALSE", "False"})


def with_consumer_groups(manifests: Sequence[ComponentManifest], app_id: str) -> list[ComponentManifest]:
    """The manifests, a pub/sub component without a ``consumerID`` (or with an empty one)
    given the app id as its group, as Dapr's runtime does: the sidecars of one app share its
    messages, and apps of different ids each get every one. An empty group kept would be
    one group shared by every app whose manifest leaves the value blank."""
    return [
        replace(m, metadata={**_without(m.metadata, CONSUMER_GROUP), CONSUMER_GROUP: app_id})
        if m.block == "pubsub"
        and not m.metadata.get(CONSUMER_GROUP, "").strip()
        and CONSUMER_GROUP not in m.secret_refs
        else m
        for m in manifests
    ]


def _without(metadata: Mapping[str, str], name: str) -> dict[str, str]:
    """``metadata`` less the item ``name``, in whatever case it is spelt."""
    return {key: value for key, value in metadata.items() if key.lower() != name.lower()}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # deliveries by the sidecar before the message goes back to the backend
    initial_interval: float = 0.2  # seconds before the second attempt; doubles each time
    max_interval: float = 5.0
    timeout: float = 30.0  # one delivery; longer counts as RETRY

    def interval(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        # The exponent is capped: 2.0 ** 1024 overflows a float (many retryAttempts get there),
        # and by 2 ** 64 any initial interval a user writes is past max_interval.
        return min(self.max_interval, self.initial_interval * 2.0 ** min(attempt - 1, 64))


@dataclass(frozen=True, slots=True)
class TopicSubscription:
    """One topic a subscriber asked for."""

    pubsub_name: str
    topic: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    dead_letter_topic: str = ""


@dataclass(frozen=True, slots=True)
class BulkEntry:
    entry_id: str
    data: bytes
    content_type: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BulkFailure:
    entry_id: str
    error: str


@dataclass
class DeliveryCounts:
    """What became of the messages of one subscription since it started."""

    delivered: int = 0
    retried: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    returned: int = 0  # handed back to the backend unacknowledged


class PubSubService:
    def __init__(self, components: Components, app_id: str) -> None:
        self._components = components
        self._app_id = app_id
        # Deliveries by (pubsub, topic), shown on /metrics: kept while a subscription reads the
        # topic, and for the last MAX_IDLE_TOPIC_COUNTS topics none reads any more (topics
        # are the client's to choose: a SubscribeTopicEvents stream per random topic must not
        # grow memory and series for good).
        self.counts: dict[tuple[str, str], DeliveryCounts] = {}
        self._readers: collections.Counter[tuple[str, str]] = collections.Counter()
        self._idle: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._subscriptions: set[_Subscription] = set()  # started and not stopped yet
        self._stopping: set[asyncio.Future[None]] = set()  # stops under way, not over yet
        self._closed_by: float | None = None  # once closing: when every delivery must be over
        # Dapr's topic scoping, for the components whose manifests set some
        self._scopes = {
            name: scopes
            for name, manifest in components.manifests("pubsub").items()
            if (scopes := TopicScopes.of(manifest.metadata, app_id)) is not None
        }

    def _pubsub(self, name: str, field_name: str = "pubsub_name") -> PubSub:
        # With no pub/sub configured, Layotto and Dapr answer as for an unknown name
        # (INVALID_ARGUMENT), where the other blocks say "not configured".
        component: PubSub = self._components.lookup("pubsub", name, field_name, none_is_unknown=True)
        return component

    async def publish(
        self,
        pubsub_name: str,
        topic: str,
        data: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        traceparent: str = "",
        tracestate: str = "",
    ) -> str:
        """The id of the message, once the backend has accepted it. ``traceparent`` and
        ``tracestate``: the publishing call's trace context, for the envelope."""
        pubsub = self._pubsub(pubsub_name)
        require(topic, "topic")
        if self._scopes:
            self._may_publish(pubsub_name, topic)
        if metadata and raw_payload(metadata, "metadata"):
            await pubsub.publish(topic, data, metadata)
            return raw_id(data)
        try:
            message_id, envelope = wrap(
                data, content_type, source=self._app_id, topic=topic, pubsub_name=pubsub_name, traceparent=traceparent,
                tracestate=tracestate, metadata=metadata, expiration=_expiration(metadata, "metadata"),
            )  # fmt: skip
        except NotACloudEvent as exc:
            raise InvalidArgument(f"data: {exc}") from None
        await pubsub.publish(topic, envelope, metadata)
        return message_id

    async def bulk_publish(
        self,
        pubsub_name: str,
        topic: str,
        entries: Sequence[BulkEntry],
        metadata: Mapping[str, str],
        traceparent: str = "",
        tracestate: str = "",
    ) -> list[BulkFailure]:
        """Publish every entry (side by side); the ones that failed, with why. Every envelope
        gets the call's trace context, as a single publish's does."""
        pubsub = self._pubsub(pubsub_name)
        require(topic, "topic")
        if self._scopes:
            self._may_publish(pubsub_name, topic)
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            if not entry.entry_id:
                raise InvalidArgument(f"entries[{i}].entry_id is empty: every entry needs an id")
            if entry.entry_id in seen:
                raise InvalidArgument(f"entries[{i}].entry_id {entry.entry_id!r} is used twice")
            seen.add(entry.entry_id)

        envelopes = []
        for i, entry in enumerate(entries):
            merged = {**metadata, **entry.metadata}
            if raw_payload(merged, f"entries[{i}].metadata" if RAW_PAYLOAD in entry.metadata else "metadata"):
                envelopes.append(entry.data)
                continue
            where = f"entries[{i}].metadata" if _ttl_item(entry.metadata) else "metadata"
            expiration = _expiration(merged, where)
            try:
                envelopes.append(
                    wrap(entry.data, entry.content_type, source=self._app_id, topic=topic, pubsub_name=pubsub_name,
                         traceparent=traceparent, tracestate=tracestate, metadata=merged, expiration=expiration)[1]
                )  # fmt: skip
            except NotACloudEvent as exc:
                raise InvalidArgument(f"entries[{i}].event: {exc}") from None

        async def one(entry: BulkEntry, envelope: bytes) -> BulkFailure | None:
            try:
                await pubsub.publish(topic, envelope, {**metadata, **entry.metadata})
            except RuntimeApiError as exc:
                return BulkFailure(entry.entry_id, exc.message)
            except Exception as exc:
                return BulkFailure(entry.entry_id, f"{type(exc).__name__}: {exc}")
            return None

        outcomes = await asyncio.gather(*(one(e, envelope) for e, envelope in zip(entries, envelopes, strict=True)))
        return [failure for failure in outcomes if failure is not None]

    async def subscribe(self, subscription: TopicSubscription, deliver: Deliver) -> Unsubscribe:
        """Start delivering ``subscription``'s messages to ``deliver``; the way to stop.

        Stopping more than once, or after ``close``, does no harm: every call returns once the
        one stop there is has. Refused (UNAVAILABLE) once ``close`` has begun.
        """
        self._refuse_if_closed()
        pubsub = self._pubsub(subscription.pubsub_name)
        require(subscription.topic, "topic")
        scopes = self._scopes.get(subscription.pubsub_name)
        if scopes is not None and not scopes.may_subscribe(subscription.topic):
            raise PermissionDenied(
                f"subscription to topic {subscription.topic!r} on pubsub {subscription.pubsub_name!r} is not allowed "
                f"for app id {self._app_id!r} (the component's allowedTopics, protectedTopics or subscriptionScopes)"
            )
        policy, options, dead_letter = _options(subscription)
        raw = raw_payload(subscription.metadata, "metadata")
        key = (subscription.pubsub_name, subscription.topic)
        delivery = _Delivery(subscription, policy, dead_letter, raw, deliver, pubsub, self._counts_of(key))
        try:
            unsubscribe = await pubsub.subscribe(subscription.topic, options, delivery.handle)
        except BaseException:
            self._release(key)
            raise
        stop = _Subscription(self, unsubscribe, key)
        if self._closed_by is not None:  # close began while the component was subscribing
            await stop()
            self._refuse_if_closed()
        self._subscriptions.add(stop)
        return stop

    async def close(self, deadline: float | None = None) -> None:
        """Stop every subscription, all at once: their deliveries in flight may finish until
        ``deadline`` (the loop's clock; None: DRAIN_SECONDS from now), the rest stays
        unacknowledged in the backends. A later stop of one of them, without a deadline or
        with a later one, stops by this deadline too; no subscription starts after this."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
        self._closed_by = deadline if self._closed_by is None else min(self._closed_by, deadline)
        stops = list(self._subscriptions)
        for failure in await asyncio.gather(*(stop(deadline) for stop in stops), return_exceptions=True):
            if isinstance(failure, BaseException):
                log.error("stopping a subscription failed", exc_info=failure)
        if self._stopping:  # begun before (the app lost, a stream ended): the components close after
            await asyncio.wait(list(self._stopping))

    def _may_publish(self, pubsub_name: str, topic: str) -> None:
        scopes = self._scopes.get(pubsub_name)
        if scopes is not None and not scopes.may_publish(topic):
            raise PermissionDenied(
                f"topic {topic!r} of pubsub {pubsub_name!r} is not allowed for app id {self._app_id!r} "
                "(the component's allowedTopics, protectedTopics or publishingScopes)"
            )

    def _refuse_if_closed(self) -> None:
        if self._closed_by is not None:
            raise Unavailable("pub/sub is stopping (the sidecar is shutting down): no new subscriptions")

    def _stop_by(self, deadline: float | None) -> float | None:
        """The deadline a subscription's stop gets: the one asked for, no later than close's."""
        if self._closed_by is None:
            return deadline
        return self._closed_by if deadline is None else min(deadline, self._closed_by)

    def _stopped(self, subscription: _Subscription) -> None:
        self._subscriptions.discard(subscription)
        self._release(subscription.key)

    def _counts_of(self, key: tuple[str, str]) -> DeliveryCounts:
        self._idle.pop(key, None)
        self._readers[key] += 1
        return self.counts.setdefault(key, DeliveryCounts())

    def _release(self, key: tuple[str, str]) -> None:
        self._readers[key] -= 1
        if self._readers[key] > 0:
            return
        del self._readers[key]
        self._idle[key] = None
        while len(self._idle) > MAX_IDLE_TOPIC_COUNTS:
            forgotten, _ = self._idle.popitem(last=False)
            self.counts.pop(forgotten, None)


class _Subscription:
    """What ``PubSubService.subscribe`` returns: the component's Unsubscribe, called once, with
    the deadline the service's rules give it."""

    def __init__(self, service: PubSubService, unsubscribe: Unsubscribe, key: tuple[str, str]) -> None:
        self._service = service
        self._unsubscribe = unsubscribe
        self.key = key  # (pubsub, topic)
        self._stopping: asyncio.Future[None] | None = None

    async def __call__(self, deadline: float | None = None) -> None:
        if self._stopping is None:
            self._service._stopped(self)
            self._stopping = asyncio.ensure_future(self._unsubscribe(self._service._stop_by(deadline)))
            self._stopping.add_done_callback(_seen)
            self._service._stopping.add(self._stopping)
            self._stopping.add_done_callback(self._service._stopping.discard)
        # Shielded: a caller cancelled while it waits (a task being torn down) leaves the stop
        # running, and the callers after it wait for that stop, not for a cancelled one.
        await asyncio.shield(self._stopping)


class _Delivery:
    """The rules of one subscription, applied to each message its component hands over."""

    def __init__(
        self,
        subscription: TopicSubscription,
        policy: RetryPolicy,
        dead_letter: str,
        raw: bool,
        deliver: Deliver,
        pubsub: PubSub,
        counts: DeliveryCounts,
    ) -> None:
        self._subscription = subscription
        self._policy = policy
        self._dead_letter = dead_letter
        self._raw = raw  # every message handed over as raw bytes
        self._deliver = deliver
        self._pubsub = pubsub
        self._counts = counts
        self._loop = asyncio.get_running_loop()  # asked once: each ask is a getpid() on Python 3.11
        self._expired_said = False

    def handle(self, message: Message) -> asyncio.Future[Verdict]:
        """The verdict to settle ``message`` with, once the rules below are through with it.

        The first attempt is followed by a callback, not a coroutine: most messages are
        taken at once, and for them nothing more runs (retries run as a task of their own).
        """
        event = self._event(message)
        outcome: asyncio.Future[Verdict] = self._loop.create_future()
        if event.extensions and has_expired(event, time.time()):
            # past its ttl: not delivered, as Dapr drops it (to the dead-letter topic when there
            # is one); said once a subscription at WARNING (a backlog read late may be all
            # expired), then counted
            level = logging.DEBUG if self._expired_said else logging.WARNING
            self._expired_said = True
            where = f"to dead-letter topic {self._dead_letter}" if self._dead_letter else "dropped (counted in dropped)"
            log.log(level, "message %s of %s/%s expired before delivery: %s", event.id,
                    self._subscription.pubsub_name, self._subscription.topic, where)  # fmt: skip
            if self._dead_letter:
                rest = self._loop.create_task(self._expired_to_dead_letter(message, event))
                rest.add_done_callback(functools.partial(_pass_on, outcome))
                outcome.add_done_callback(functools.partial(_cancel_with, rest))
                return outcome
            self._counts.dropped += 1
            outcome.set_result(Verdict.SUCCESS)
            return outcome
        first = self._start_attempt(event)
        first.add_done_callback(functools.partial(self._first_done, message, event, outcome))
        if isinstance(first, asyncio.Task):  # a coroutine subscriber's (a stream's): stops with the message
            outcome.add_done_callback(functools.partial(_cancel_with, first))
        return outcome

    def _event(self, message: Message) -> Event:
        sub = self._subscription
        if not (self._raw or message.metadata.get(RAW_PAYLOAD) in _TRUE):
            with contextlib.suppress(NotACloudEvent):
                return unwrap(message.data, message.topic, sub.pubsub_name)
        # raw by request, or not a CloudEvent (another client's bytes)
        return raw_event(message.data, message.topic, sub.pubsub_name, raw_id(message.data))

    def _start_attempt(self, event: Event) -> asyncio.Future[Verdict]:
        # The limit goes with the call: the app channel makes it the call's deadline in the
        # native client, where it costs no timer on the loop per message.
        try:
            attempt = self._deliver(event, self._policy.timeout)
        except Exception as exc:
            failed: asyncio.Future[Verdict] = self._loop.create_future()
            failed.set_exception(exc)
            return failed
        return attempt if isinstance(attempt, asyncio.Future) else asyncio.ensure_future(attempt)

    def _first_done(
        self, message: Message, event: Event, outcome: asyncio.Future[Verdict], first: asyncio.Future[Verdict]
    ) -> None:
        verdict = self._verdict(event, first)  # read even when no longer wanted: no "never retrieved" warning
        if outcome.done():  # cancelled: the component stopped waiting for it
            return
        if verdict is None:
            outcome.set_result(self._back_to_backend())
            return
        if verdict == Verdict.SUCCESS:
            self._counts.delivered += 1
            outcome.set_result(verdict)
            return
        rest = self._loop.create_task(self._after_first(message, event, verdict))
        rest.add_done_callback(functools.partial(_pass_on, outcome))
        outcome.add_done_callback(functools.partial(_cancel_with, rest))

    async def _after_first(self, message: Message, event: Event, verdict: Verdict) -> Verdict:
        policy = self._policy
        attempt = 1
        while verdict == Verdict.RETRY and attempt < policy.attempts:
            await asyncio.sleep(policy.interval(attempt))
            self._counts.retried += 1  # once made: a stop during the backoff makes none
            attempt += 1
            answered = await self._attempt(event)
            if answered is None:
                return self._back_to_backend()
            verdict = answered
        sub = self._subscription
        if verdict == Verdict.SUCCESS:
            self._counts.delivered += 1
            return verdict
        if self._dead_letter:
            if await self._to_dead_letter(message, event, verdict.name):
                return Verdict.SUCCESS
            # not in the dead-letter topic: a DROP too stays in the backend, to be handed out again
        elif verdict == Verdict.DROP:
            self._counts.dropped += 1
            log.warning("message %s of %s/%s dropped by its subscriber", event.id, sub.pubsub_name, sub.topic)
            return Verdict.DROP
        return self._back_to_backend()

    def _back_to_backend(self) -> Verdict:
        """RETRY, to hand the message back to its component unacknowledged; counted."""
        self._counts.returned += 1
        return Verdict.RETRY

    async def _attempt(self, event: Event) -> Verdict | None:
        attempt = self._start_attempt(event)
        try:
            await asyncio.wait([attempt])
        except asyncio.CancelledError:
            attempt.cancel()
            raise
        return self._verdict(event, attempt)

    @staticmethod
    def _verdict(event: Event, attempt: asyncio.Future[Verdict]) -> Verdict | None:
        """The verdict of a finished attempt: an error or a timeout counts as RETRY. None when
        its subscriber went away: that says nothing of the message, which goes back to the
        backend for the group's other members, not to a retry or a dead-letter topic."""
        if attempt.cancelled():
            log.info("delivering %s was cancelled: counted as RETRY", event.id)
            return Verdict.RETRY
        error = attempt.exception()
        if error is None:
            return attempt.result()
        if isinstance(error, SubscriberGone):
            log.info("delivering %s: %s; it goes back to the backend", event.id, error.message)
            return None
        if isinstance(error, TimeoutError):
            log.info("delivering %s timed out: counted as RETRY", event.id)
        elif isinstance(error, RuntimeApiError):
            log.info("delivering %s failed (%s): counted as RETRY", event.id, error.message)
        else:
            log.error("delivering %s failed: counted as RETRY", event.id, exc_info=error)
        return Verdict.RETRY

    async def _expired_to_dead_letter(self, message: Message, event: Event) -> Verdict:
        if await self._to_dead_letter(message, event, "expired"):
            return Verdict.SUCCESS
        return self._back_to_backend()  # kept, to go there when it is handed out again

    async def _to_dead_letter(self, message: Message, event: Event, why: str) -> bool:
        try:
            await self._pubsub.publish(self._dead_letter, message.data, message.metadata)
        except Exception as exc:
            log.error("message %s could not go to dead-letter topic %s (%s): kept", event.id, self._dead_letter, exc)
            return False
        self._counts.dead_lettered += 1
        log.warning("message %s (%s) went to dead-letter topic %s", event.id, why, self._dead_letter)
        return True


# Dapr's two names for a message's time to live, in the order it looks for them (any case).
_TTL_NAMES = ("ttl", TTL_KEY.lower())


def _ttl_item(metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """The publish's time to live as (its name as spelt, its value); None without one."""
    found: dict[str, tuple[str, str]] = {}
    for key, value in metadata.items():
        lowered = key.lower()
        if lowered in _TTL_NAMES and value:
            found.setdefault(lowered, (key, value))
    return next((found[name] for name in _TTL_NAMES if name in found), None)


def _expiration(metadata: Mapping[str, str], field: str) -> str:
    """The envelope's ``expiration`` for the publish's ``ttl`` or ``ttlInSeconds``, read as
    Dapr reads them (a Go duration, or whole seconds; -1 for none); "" without one."""
    item = _ttl_item(metadata) if metadata else None
    if item is None:
        return ""
    name, raw = item
    if raw == "-1":
        return ""
    seconds = parse_duration(raw, plain_unit=1.0)
    if seconds is None:
        raise InvalidArgument(f"{field}.{name} is {raw[:64]!r}: must be whole seconds or {DURATION_EXAMPLES}")
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise InvalidArgument(
            f"{field}.{name} is {raw[:64]!r}: must be more than 0 and at most {MAX_TTL_SECONDS} seconds, or -1 for none"
        )
    # whole seconds, rounded up: the expiration is written to the second
    return expiration_after(math.ceil(seconds), time.time())


def _options(subscription: TopicSubscription) -> tuple[RetryPolicy, SubscribeOptions, str]:
    meta = dict(subscription.metadata)
    defaults = RetryPolicy()
    policy = RetryPolicy(
        attempts=_integer(meta, RETRY_ATTEMPTS, defaults.attempts, 1),
        initial_interval=_seconds(meta, RETRY_INITIAL_INTERVAL, defaults.initial_interval),
        max_interval=_seconds(meta, RETRY_MAX_INTERVAL, defaults.max_interval),
        timeout=_seconds(meta, DELIVERY_TIMEOUT, defaults.timeout, zero_allowed=False),
    )
    options = SubscribeOptions(
        group=meta.get(CONSUMER_GROUP, ""), concurrency=_integer(meta, CONCURRENCY, 0, 1), metadata=meta
    )
    dead_letter = subscription.dead_letter_topic or meta.get(DEAD_LETTER_TOPIC, "")
    if dead_letter == subscription.topic:
        raise InvalidArgument(f"dead_letter_topic {dead_letter!r} is the subscribed topic itself")
    return policy, options, dead_letter


def raw_payload(metadata: Mapping[str, str], where: str) -> bool:
    """Whether ``metadata`` asks for rawPayload; ``where`` names the map in an error."""
    value = metadata.get(RAW_PAYLOAD, "")
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidArgument(f"{where}.{RAW_PAYLOAD} must be true or false, got {value!r}")


def _integer(meta: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    raw = meta.get(key, "")
    if not raw:
        return default
    try:
        value = as_integer(raw)
    except ValueError:
        raise InvalidArgument(f"metadata.{key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise InvalidArgument(f"metadata.{key} must be at least {minimum}, got {value}")
    return value


def _seconds(meta: Mapping[str, str], key: str, default: float, zero_allowed: bool = True) -> float:
    """A duration in subscription metadata, read as a manifest's is (plain digits: milliseconds).

    At most MAX_DURATION: a delivery timeout becomes the app call's deadline, which gRPC
    carries in at most 8 digits and the native client in a u64 of milliseconds, and a retry
    interval holds the message's slot while it lasts. A delivery timeout of 0 would be a
    deadline already past (it becomes 1 ms); a retry interval of 0 retries at once.
    """
    raw = meta.get(key, "").strip()
    if not raw:
        return default
    seconds = parse_duration(raw)
    if seconds is None:
        raise InvalidArgument(f"metadata.{key} must be {DURATION_EXAMPLES}, got {raw!r}")
    if seconds < 0:
        raise InvalidArgument(f"metadata.{key} must not be negative, got {raw!r}")
    if not seconds <= MAX_DURATION:  # `not <=`: infinity and NaN fail it too
        raise InvalidArgument(f"metadata.{key} must be at most {MAX_DURATION_TEXT}, got {raw!r}")
    if seconds <= 0 and not zero_allowed:
        raise InvalidArgument(f"metadata.{key} must be more than 0 (and at most {MAX_DURATION_TEXT}), got {raw!r}")
    return seconds


def _pass_on(outcome: asyncio.Future[Verdict], rest: asyncio.Task[Verdict]) -> None:
    if outcome.done():
        return
    if rest.cancelled():
        outcome.cancel()
        return
    error = rest.exception()
    if error is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(rest.result())


def _seen(stopping: asyncio.Future[None]) -> None:
    """Reads the outcome of a stop whose every caller may have been cancelled, so that its
    failure is not reported as never retrieved (a caller still waiting gets it raised)."""
    if not stopping.cancelled():
        stopping.exception()


def _cancel_with(work: asyncio.Future[Verdict], outcome: asyncio.Future[Verdict]) -> None:
    if outcome.cancelled():
        work.cancel()
