"""``pubsub.jetstream``: topics as NATS JetStream subjects, read through durable pull consumers.

What is durable, and where: a publish returns once JetStream has stored the message (its
PubAck), so it outlives this sidecar and a nats-server restart (file storage). A topic's
messages live in ``streamName`` when it is set (the stream must exist and cover the topic),
else in a stream of the topic's own, made on first use with file storage and no limits: it
keeps every message until an operator gives it limits (max age, size). Each subscription
group is a durable consumer on the server (``group``, or ``durableName`` when empty): it
remembers what was acknowledged, so a subscriber that comes back resumes where its group
stood, two subscriptions of one group share the messages, and two groups each get them all.
In a stream that may hold other topics (``streamName``, or an operator's stream found by
subject) the consumer is named ``<group>_<topic>`` (one per topic), with a hash of both
appended where that name is taken by a consumer of another subject; a consumer named after
the group alone that filters on the topic, or on no single subject (an operator's), is kept. A consumer
that exists is joined as it is: ``ackWait`` and the rest apply to new ones only. Characters
NATS refuses in names ('.', '*', '>', whitespace, slashes) become '_' plus a hash. A consumer
or stream that is gone (deleted by an operator, or a server restarted without its store) is
made again when the server refuses a pull request for it.

Acknowledgement is explicit, and the verdicts are:

- ``SUCCESS``: ack; the consumer is done with the message.
- ``DROP``: term; never redelivered to this consumer.
- ``RETRY`` (or the handler failing): nak with a delay of ``ackWait``; redelivered then, with
  its delivery count one higher (up to ``maxDeliver``).

While a message waits for, or is in, its handler, the reader tells the server every
``ackWait / 2`` that it is still at work on it, so a slow handler is not given a duplicate;
``ackWait`` is how long after this sidecar stops working on a message (a crash, a lost
connection) the server hands it out again. Unsubscribing stops the pull requests at once, lets
the handlers at work finish until the deadline it is given (see ``Unsubscribe``), still telling
the server, then naks what was fetched and not settled, so the group's other members get it at once.

nats-py reconnects forever after the first connection; the readers send no pull requests meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Self

import orjson
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js import errors as js_errors

from layotto_fast.components.pubsub import DEFAULT_GROUP
from layotto_fast.components.pubsub.jetstream_pubacks import PubAcks
from layotto_fast.components.pubsub.jetstream_pull import BACKEND_ERRORS, PullReader
from layotto_fast.errors import FailedPrecondition, InvalidArgument, RuntimeApiError, StartupError, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.cloudevents import minted_here
from layotto_fast.runtime.json_span import member_span
from layotto_fast.runtime.pubsub import Handler, SubscribeOptions, Unsubscribe

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds for init's first connection
REQUEST_TIMEOUT = 5.0  # seconds for a PubAck or a JetStream API answer
PING_TIMEOUT = 1.5
# nats-py's keepalive: a PING each PING_INTERVAL, the connection stale (and replaced) once
# MAX_OUTSTANDING_PINGS are unanswered. nats-py's default, 2 minutes, left a connection whose
# peer vanished without a reset (a host gone, a NAT that forgot the flow) in place for about
# 6 minutes, its subscriptions delivering nothing and its answers to the server lost.
PING_INTERVAL = 10.0
MAX_OUTSTANDING_PINGS = 2
FLUSH_TIMEOUT = 5.0  # seconds close gives nats-py to send what it still buffers (answers to the server)
# The JetStream API's subjects; nats-py's default too (no domain, no custom prefix).
API_PREFIX = "$JS.API"
MSG_ID_HEADER = "Nats-Msg-Id"

ANY_SUBJECT = "*any*"  # a consumer's filter when it has no single one (no NATS subject reads so)
API_ERRORS: tuple[type[BaseException], ...] = (*BACKEND_ERRORS, ValueError)  # ValueError: nats-py refused a name
_DELIVER = {"all": api.DeliverPolicy.ALL, "new": api.DeliverPolicy.NEW, "last": api.DeliverPolicy.LAST}
_NOT_IN_NAMES = re.compile(r"[\s.*>/\\\x00-\x1f\x7f]")  # what NATS refuses in stream and consumer names


def _cloudevent_id(data: bytes) -> str:
    """The id of the CloudEvent ``data`` is, read without parsing the rest; "" when it is none
    (a raw payload's own "id" member is the publisher's business, not a message id)."""
    if data[:1] != b"{" or member_span(data, b"specversion") is None:
        return ""
    span = member_span(data, b"id")
    if span is None:
        return ""
    try:
        value = orjson.loads(data[span[0] : span[1]])
    except orjson.JSONDecodeError:
        return ""
    return value if type(value) is str else ""


def safe_name(text: str) -> str:
    """``text`` as a stream or consumer name: refused characters become ``_``, and a hash of
    ``text`` is appended then, so that ``a.b`` and ``a_b`` do not share one."""
    safe = _NOT_IN_NAMES.sub("_", text)
    return safe if safe == text else f"{safe}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


PARALLEL = 16  # messages handed over at once unless the manifest says otherwise
# Dapr's JetStream component reads a mode from `concurrencyMode`, else from `concurrency`; a
# number in `concurrency` is this sidecar's own.
_MODES = {"single": 1, "parallel": PARALLEL}


def _concurrency(manifest: ComponentManifest, bad: Callable[[str, str], StartupError]) -> int:
    mode = metadata.text(manifest, "concurrencyMode", "").strip().lower()
    if mode:
        if mode not in _MODES:
            raise bad("concurrencyMode", f"must be single or parallel, got {mode!r}")
        return _MODES[mode]
    given = metadata.text(manifest, "concurrency", "").strip().lower()
    if given in _MODES:
        return _MODES[given]
    if given and not given.isdigit():
        raise bad("concurrency", f"must be single, parallel or a number of messages at once, got {given!r}")
    return metadata.integer(manifest, "concurrency", PARALLEL, minimum=1)


# Dapr's settings this component does not take, and why: each would be ignored, and with
# it the credentials, the JetStream domain or the consumer the operator meant.
_UNSUPPORTED = {
    "token": "authentication to nats",
    "jwt": "authentication to nats",
    "seedKey": "authentication to nats",
    "tls_client_cert": "TLS to nats",
    "tls_client_key": "TLS to nats",
    "domain": "a JetStream domain",
    "apiPrefix": "a JetStream API prefix",
    "queueGroupName": "push consumers; a group here is consumerID or durableName",
    "startSequence": "a start sequence",
    "startTime": "a start time",
    "backOff": "a redelivery backoff",
    "replicas": "consumer replicas",
    "memoryStorage": "memory-stored consumers",
    "rateLimit": "a delivery rate limit",
}


@dataclass(frozen=True)
class JetStreamConfig:
    servers: tuple[str, ...]
    connection_name: str = "layotto-fast"
    stream_name: str = ""  # "": one stream per topic, made on first use
    durable_name: str = DEFAULT_GROUP
    ack_wait: float = 30.0
    max_deliver: int = -1
    deliver_policy: str = "all"
    concurrency: int = PARALLEL
    max_ack_pending: int | None = None
    component: str = ""  # "name (type)", for messages

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> JetStreamConfig:
        def bad(name: str, problem: str) -> StartupError:
            return StartupError(manifest.source, manifest.metadata_field(name), problem)

        for name, what in _UNSUPPORTED.items():
            if metadata.turned_on(manifest, name):
                raise bad(name, f"not supported by this component ({what})")
        ack_policy = metadata.text(manifest, "ackPolicy", "explicit").strip().lower()
        if ack_policy not in ("", "explicit"):
            raise bad("ackPolicy", f"only explicit acknowledgement is supported, got {ack_policy!r}")
        servers = tuple(url.strip() for url in metadata.required(manifest, "natsURL").split(",") if url.strip())
        stream = metadata.text(manifest, "streamName", "")
        if _NOT_IN_NAMES.search(stream):
            raise bad("streamName", f"a stream name has no whitespace, '.', '*', '>', '/' or '\\', got {stream!r}")
        # Dapr reads plain digits here as seconds (its metadata decoder's rule for durations)
        ack_wait = metadata.duration(manifest, "ackWait", 30.0, plain_unit=1.0)
        if ack_wait <= 0:
            raise bad("ackWait", "must be longer than 0")
        max_deliver = metadata.integer(manifest, "maxDeliver", -1, minimum=-1)
        if max_deliver == 0:
            raise bad("maxDeliver", "must be -1 (unlimited) or at least 1, got 0")
        policy = metadata.text(manifest, "deliverPolicy", "all").lower()
        if policy not in _DELIVER:
            raise bad("deliverPolicy", f"must be all, new or last, got {policy!r}")
        max_ack_pending = metadata.integer(manifest, "maxAckPending", 0, minimum=-1)
        concurrency = _concurrency(manifest, bad)
        return cls(
            servers=servers,
            connection_name=metadata.text(manifest, "name", "layotto-fast"),
            stream_name=stream,
            # durableName is JetStream's own word for the group; consumerID (which the runtime
            # fills with the app id when the manifest has none) is every component's
            durable_name=metadata.text(manifest, "durableName", "")
            or metadata.text(manifest, "consumerID", "")
            or DEFAULT_GROUP,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            deliver_policy=policy,
            concurrency=concurrency,
            max_ack_pending=max_ack_pending or None,
            component=f"{manifest.name} ({manifest.type})",
        )

    @property
    def shown_servers(self) -> str:
        """The server URLs as messages give them: without a ``user:password@``."""
        return metadata.without_credentials(",".join(self.servers))

    def unavailable(self, what: str, exc: BaseException) -> Unavailable:
        why = str(exc) or type(exc).__name__
        return Unavailable(f"{self.component}: nats at {self.shown_servers}: {what}: {why}")


class JetStreamPubSub:
    def __init__(self, config: JetStreamConfig) -> None:
        self._config = config
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pubacks: PubAcks | None = None
        self._topics_stored: dict[str, str] = {}  # topic -> its own stream, known to exist
        self._readers: set[PullReader] = set()

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(JetStreamConfig.from_manifest(manifest))

    async def init(self) -> None:
        await self._disconnect()  # a retried init starts afresh
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=list(self._config.servers),
                    name=self._config.connection_name,
                    connect_timeout=2,
                    reconnect_time_wait=1,
                    max_reconnect_attempts=-1,  # forever; only the first connection has a deadline
                    ping_interval=PING_INTERVAL,  # type: ignore[arg-type]  # nats-py hints an int; it sleeps for it
                    max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                CONNECT_TIMEOUT,
            )
            pubacks = PubAcks(nc, REQUEST_TIMEOUT)
            await pubacks.start()
        except BACKEND_ERRORS as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise self._config.unavailable("cannot connect", exc) from None
        self._nc, self._js, self._pubacks = nc, nc.jetstream(timeout=REQUEST_TIMEOUT), pubacks
        if self._config.stream_name:
            try:
                await self._js.stream_info(self._config.stream_name)
            except API_ERRORS as exc:
                await self._disconnect()
                raise self._failure(f"stream {self._config.stream_name!r}", exc) from None

    async def ping(self) -> None:
        js = self._connected()
        try:
            await asyncio.wait_for(js.account_info(), PING_TIMEOUT)
        except BACKEND_ERRORS as exc:
            raise self._config.unavailable("JetStream does not answer", exc) from None

    async def close(self) -> None:
        await asyncio.gather(*(reader.stop() for reader in list(self._readers)))
        await self._disconnect()

    async def publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        self._connected()
        await self._stream_of(topic)
        assert self._pubacks is not None
        # JetStream drops a second message with this id (within its duplicate window), as
        # Dapr asks of it: a client's retried CloudEvent is stored once. With the topic in it:
        # the same event published to another topic of one stream (a dead letter) is not a
        # duplicate. Not for ids this sidecar made, new at each publish: the header costs
        # nats-py and nats-server a third of a publish's CPU, for nothing there. An id a
        # message carries in its own header (a raw one's, dead-lettered with its headers) is
        # scoped so too.
        event_id = ("" if minted_here(data) else _cloudevent_id(data)) or metadata.get(MSG_ID_HEADER, "")
        if event_id:
            metadata = {**metadata, MSG_ID_HEADER: f"{topic}:{event_id}"}
        try:
            await self._pubacks.publish(topic, data, metadata)
        except (nats_errors.BadHeaderError, nats_errors.BadSubjectError) as exc:
            raise InvalidArgument(f"{self._config.component}: cannot publish to {topic!r}: {exc}") from None
        except nats_errors.MaxPayloadError:
            limit = self._nc.max_payload if self._nc is not None else "its"
            raise InvalidArgument(
                f"data: {self._config.component}: the message to {topic!r} with its headers is over "
                f"nats' max_payload ({limit} bytes)"
            ) from None
        except BACKEND_ERRORS as exc:
            if isinstance(exc, js_errors.NoStreamResponseError):
                self._topics_stored.pop(topic, None)  # the stream went away: make it again next time
            elif isinstance(exc, js_errors.APIError) and exc.code is not None and exc.code < 500:
                # JetStream answered and refused this message (over the stream's largest
                # message, say): sending it again as it is will not help. Its full-stream
                # refusals are 503s, which may pass: those stay UNAVAILABLE.
                raise FailedPrecondition(
                    f"{self._config.component}: JetStream refused the message to {topic!r}: {exc}"
                ) from None
            raise self._config.unavailable(f"publish to {topic!r} not acknowledged", exc) from None

    async def subscribe(self, topic: str, options: SubscribeOptions, handler: Handler) -> Unsubscribe:
        self._connected()
        stream = await self._stream_of(topic)
        group = options.group or self._config.durable_name
        # A stream that may hold other topics (configured, or an operator's found by subject)
        # gets one consumer per topic: a second topic joining the group's one would read the
        # first's messages. A group's consumer of this topic made before is kept.
        shared = bool(self._config.stream_name) or (
            stream != safe_name(topic) and await self._filter_of(stream, safe_name(group)) not in (topic, ANY_SUBJECT)
        )
        durable = safe_name(f"{group}_{topic}" if shared else group)
        found, ack_wait = await self._join(stream, durable, topic)
        if shared and found and found != topic:
            # The name of another group's consumer of another topic ("a" + "b_c" and "a_b" +
            # "c" read alike): this one gets a name of its own, hashed from both, unambiguously.
            # (One filtering on no single subject is an operator's: joined as it is.)
            both = hashlib.sha256(group.encode() + b"\0" + topic.encode()).hexdigest()[:8]
            durable = f"{durable}_{both}"
            _, ack_wait = await self._join(stream, durable, topic)

        async def recover() -> None:
            self._topics_stored.pop(topic, None)
            await self._join(await self._stream_of(topic), durable, topic)

        concurrency = options.concurrency or self._config.concurrency
        reader = PullReader(
            lambda: self._nc,
            f"{self._config.component} topic {topic!r}",
            topic,
            f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            ack_wait,
            handler,
            concurrency,
            recover,
        )
        assert self._nc is not None
        try:
            await reader.start(self._nc)
        except BACKEND_ERRORS as exc:
            raise self._config.unavailable(f"cannot read {topic!r}", exc) from None
        self._readers.add(reader)

        async def unsubscribe(deadline: float | None = None) -> None:
            self._readers.discard(reader)
            await reader.stop(deadline)

        return unsubscribe

    # --- helpers --------------------------------------------------------------------------------

    async def _join(self, stream: str, durable: str, topic: str) -> tuple[str | None, float]:
        """Make consumer ``durable`` of ``topic`` in ``stream`` unless it exists; the subject it
        filters on (None: every subject of the stream) and its AckWait in seconds. One that
        exists is joined as it is: its configuration is not changed, and its own AckWait, not
        the manifest's, paces the keep-alive of the messages in hand."""
        js = self._connected()
        try:
            try:
                config = (await js.consumer_info(stream, durable)).config
                return config.filter_subject, config.ack_wait or self._config.ack_wait
            except js_errors.NotFoundError:
                await js.add_consumer(stream, config=self._consumer_config(durable, topic))
                return topic, self._config.ack_wait
        except API_ERRORS as exc:
            raise self._failure(f"consumer {durable!r} of stream {stream!r}", exc) from None

    async def _filter_of(self, stream: str, durable: str) -> str | None:
        """The subject consumer ``durable`` of ``stream`` filters on: ANY_SUBJECT when it
        filters on no single one (an operator's, joined as it is), None when there is none."""
        js = self._connected()
        try:
            found: str | None = (await js.consumer_info(stream, durable)).config.filter_subject or ANY_SUBJECT
        except js_errors.NotFoundError:
            return None
        except API_ERRORS as exc:
            raise self._failure(f"consumer {durable!r} of stream {stream!r}", exc) from None
        return found

    def _consumer_config(self, durable: str, topic: str) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._config.ack_wait,
            max_deliver=self._config.max_deliver,
            deliver_policy=_DELIVER[self._config.deliver_policy],
            max_ack_pending=self._config.max_ack_pending,
            filter_subject=topic,
        )

    def _connected(self) -> JetStreamContext:
        if self._nc is None or self._js is None or not self._nc.is_connected:
            state = "not initialised" if self._nc is None else "not connected (reconnecting)"
            raise Unavailable(f"{self._config.component}: nats at {self._config.shown_servers}: {state}")
        return self._js

    async def _stream_of(self, topic: str) -> str:
        """The stream storing ``topic``: the one whose subjects cover it, as Dapr looks it up
        (an operator's, limits and all, or the topic's own made earlier); else the topic's own
        is made. Two sidecars making it at once both succeed."""
        if self._config.stream_name:
            return self._config.stream_name
        name = self._topics_stored.get(topic)
        if name is None:
            js = self._connected()
            try:
                try:
                    name = await js.find_stream_name_by_subject(topic)
                except js_errors.NotFoundError:
                    name = safe_name(topic)
                    await js.add_stream(api.StreamConfig(name=name, subjects=[topic], storage=api.StorageType.FILE))
            except API_ERRORS as exc:
                raise self._failure(f"stream {name or safe_name(topic)!r} for {topic!r}", exc) from None
            self._topics_stored[topic] = name
        return name

    def _failure(self, what: str, exc: BaseException) -> RuntimeApiError:
        """FailedPrecondition when JetStream refused (no such stream, overlapping subjects), else Unavailable."""
        if isinstance(exc, js_errors.NotFoundError | js_errors.BadRequestError | ValueError):
            return FailedPrecondition(f"{self._config.component}: {what}: {exc}")
        return self._config.unavailable(what, exc)

    async def _disconnect(self) -> None:
        nc, self._nc, self._js, self._pubacks = self._nc, None, None, None
        self._topics_stored.clear()
        if nc is None or nc.is_closed:
            return
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), FLUSH_TIMEOUT)  # sends the acks still buffered
        except BACKEND_ERRORS:
            pass
        finally:
            await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        lost = isinstance(exc, OSError | asyncio.TimeoutError | nats_errors.StaleConnectionError)  # said below
        log.log(logging.DEBUG if lost else logging.WARNING, "%s: nats: %s", self._config.component, exc)

    async def _on_disconnected(self) -> None:
        if self._nc is not None:  # not our own close
            log.warning("%s: disconnected from nats; reconnecting", self._config.component)

    async def _on_reconnected(self) -> None:
        log.info("%s: reconnected to nats", self._config.component)
