"""CloudEvents 1.0 in JSON: the envelope every published message travels in.

Wrapping once at publish gives every message an id that survives the backend, the
subscriber and any redelivery, so duplicates can be recognised. Data that already is a
CloudEvent keeps its own id. The data goes in as JSON when it is JSON, as a string
when it is text, and base64-encoded (``data_base64``) otherwise, as the JSON format of
the specification asks.

JSON data is copied into the envelope, and out of it to the subscriber, as the bytes it was
written in, never parsed and printed again: reprinting changes numbers a double cannot hold
(see ``json_span``), and the publisher's numbers reach the subscriber digit for digit.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from layotto_fast.runtime.json_span import member_span

SPEC_VERSION = "1.0"
EVENT_TYPE = "com.dapr.event.sent"  # what Dapr's SDKs expect of an event a sidecar wrapped
CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
EXPIRATION = "expiration"  # the attribute Dapr writes for a message's ttlInSeconds
DEFAULT_CONTENT_TYPE = "text/plain"


# Ids are a random prefix drawn once per process and a counter, shaped like a UUID: unique
# across sidecars as a uuid4 is, at a tenth of its cost (uuid4 reads the OS's randomness per id).
_PREFIX = os.urandom(10).hex()
_PREFIX = f"{_PREFIX[:8]}-{_PREFIX[8:12]}-{_PREFIX[12:16]}-{_PREFIX[16:20]}-"
_COUNTER = itertools.count(1)


def new_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):012x}"


# How an envelope this process wrapped with an id of its own begins (see wrap: orjson keeps the
# order the envelope was built in).
_MINTED_HERE = b'{"specversion":"1.0","id":"' + _PREFIX.encode()


def minted_here(envelope: bytes) -> bool:
    """Whether ``envelope`` is one this process wrapped with an id it made: such an id is new
    at each publish, so no second message will ever carry it. An id a client chose (its own
    CloudEvent, a ``cloudevent.id``) may come again, in a retried publish."""
    return envelope.startswith(_MINTED_HERE)


_NO_EXTENSIONS: Mapping[str, str] = MappingProxyType({})


class NotACloudEvent(ValueError):
    """Stored bytes that are not a CloudEvent in JSON (published raw by another client)."""


class Event(NamedTuple):
    """One CloudEvent, as the subscriber is given it.

    A NamedTuple: one is built per delivered message, for a third of a frozen dataclass's cost.
    """

    id: str
    source: str
    type: str
    spec_version: str
    data_content_type: str
    data: bytes
    topic: str
    pubsub_name: str
    extensions: Mapping[str, str] = _NO_EXTENSIONS  # traceparent and the like


# What a content type says of the bytes it describes (see _kind).
_BINARY, _TEXT, _JSON, _CLOUDEVENT = 0, 1, 2, 3
_KINDS: dict[str, int] = {}  # by content type as sent: a handful in practice, read per message
_KINDS_KEPT = 256  # beyond this many distinct ones, read each time rather than remembered


def _kind(content_type: str) -> int:
    kind = _KINDS.get(content_type)
    if kind is not None:
        return kind
    media = content_type.split(";", 1)[0].strip().lower()
    if media == CLOUDEVENT_CONTENT_TYPE:
        kind = _CLOUDEVENT
    elif media == "application/json" or media.endswith("+json"):
        kind = _JSON
    elif media.startswith("text/") or media in ("application/xml", "application/yaml"):
        kind = _TEXT
    else:
        kind = _BINARY
    if len(_KINDS) < _KINDS_KEPT:
        _KINDS[content_type] = kind
    return kind


def _is_json(content_type: str) -> bool:
    return _kind(content_type) >= _JSON  # a CloudEvent's type (+json) is JSON too


def wrap(
    data: bytes,
    content_type: str,
    *,
    source: str,
    topic: str,
    pubsub_name: str,
    traceparent: str = "",
    tracestate: str = "",
    metadata: Mapping[str, str] | None = None,
    expiration: str = "",
) -> tuple[str, bytes]:
    """The message id and the envelope to store for ``data`` published to ``topic``.

    ``metadata``'s ``cloudevent.<attribute>`` entries (any case) set the new envelope's id,
    source, type, subject, traceparent (or traceid) and tracestate, as Dapr's do; a CloudEvent
    passed through keeps its own. ``expiration`` (RFC 3339) is set on either.

    Data declared a CloudEvent (``application/cloudevents+json``) is one whatever it lacks,
    as Dapr takes it: a missing specversion, source or type gets the default, a missing id a
    new one (a number is written as a string). NotACloudEvent when it is not even a JSON
    object (Layotto refuses it too). Data of any other type is wrapped, whatever it holds
    (an ``application/json`` object with an id and a specversion too), as Layotto and Dapr
    wrap it."""
    content_type = content_type or DEFAULT_CONTENT_TYPE
    kind = _kind(content_type)
    if kind == _CLOUDEVENT:
        parsed = _parsed(data)
        if type(parsed) is not dict:
            raise NotACloudEvent(f"it is declared {CLOUDEVENT_CONTENT_TYPE} but is not a JSON object")
        existing = _completed(parsed, source)
        # where it is published now, whatever an earlier hop wrote there (as Dapr does)
        existing["topic"] = topic
        existing["pubsubname"] = pubsub_name
        existing.setdefault("time", _CLOCK.now())
        if traceparent and "traceparent" not in existing:
            existing["traceparent"] = traceparent
            if tracestate:
                existing.setdefault("tracestate", tracestate)
        if expiration:
            existing[EXPIRATION] = expiration
        return str(existing["id"]), _with_data_of(existing, data)
    envelope: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": "",
        "source": source,
        "type": EVENT_TYPE,
        "time": _CLOCK.now(),
        "datacontenttype": content_type,
        "topic": topic,
        "pubsubname": pubsub_name,
    }
    if traceparent:  # the call's trace context (W3C: a tracestate only beside its traceparent)
        envelope["traceparent"] = traceparent
        if tracestate:
            envelope["tracestate"] = tracestate
    if metadata:
        _override(envelope, metadata)
    message_id = envelope["id"] = envelope["id"] or new_id()
    if expiration:
        envelope[EXPIRATION] = expiration
    if kind == _JSON and _parsed(data) is not _NOT_JSON:
        return message_id, _with_data(orjson.dumps(envelope), data.strip())
    _put_data(envelope, data, kind)
    return message_id, orjson.dumps(envelope)


class _Clock:
    """The current second in RFC 3339, as Dapr writes an envelope's ``time``: formatted once
    a second, not at every publish."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second, self.text = -1, ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second, self.text = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.text


_CLOCK = _Clock()

# Attributes a publisher may set through metadata ``cloudevent.<name>`` -> the envelope's name.
_OVERRIDABLE = {
    "id": "id",
    "source": "source",
    "type": "type",
    "subject": "subject",
    "traceid": "traceparent",  # the older name Dapr still reads for it
    "traceparent": "traceparent",
    "tracestate": "tracestate",
}
_OVERRIDE_PREFIX = "cloudevent."


def _override(envelope: dict[str, Any], metadata: Mapping[str, str]) -> None:
    traceparent = ""
    for key, value in metadata.items():
        if not value or len(key) <= len(_OVERRIDE_PREFIX) or key[:11].lower() != _OVERRIDE_PREFIX:
            continue
        name = key[len(_OVERRIDE_PREFIX) :].lower()
        if name == "traceparent":
            traceparent = value  # wins over traceid, in whatever order they come
        elif name in _OVERRIDABLE:
            envelope[_OVERRIDABLE[name]] = value
    if traceparent:
        envelope["traceparent"] = traceparent


def has_expired(event: Event, now: float) -> bool:
    """Whether ``event`` carries an ``expiration`` (RFC 3339) that ``now`` (Unix time) is past;
    one that does not parse never expires, as in Dapr."""
    stamp = event.extensions.get(EXPIRATION)
    if not stamp:
        return False
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() < now


def expiration_after(seconds: int, now: float) -> str:
    """The ``expiration`` attribute for a message that lives ``seconds`` from ``now``."""
    return datetime.fromtimestamp(now + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_NOT_JSON = object()  # data that is no JSON


def _parsed(data: bytes) -> Any:
    """``data`` parsed as JSON, or _NOT_JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _cloudevent_in(value: Any) -> dict[str, Any] | None:
    """``value`` when it is an envelope: a JSON object whose id and specversion are non-empty strings."""
    if type(value) is not dict:
        return None
    event_id, spec_version = value.get("id"), value.get("specversion")
    if event_id and spec_version and type(event_id) is str and type(spec_version) is str:
        return value
    return None


def _completed(event: dict[str, Any], source: str) -> dict[str, Any]:
    """A declared CloudEvent given what it lacks of the attributes every one has."""
    event_id = event.get("id")
    if type(event_id) is int:
        event["id"] = str(event_id)
    elif not event_id or type(event_id) is not str:
        event["id"] = new_id()
    if not event.get("specversion") or type(event["specversion"]) is not str:
        event["specversion"] = SPEC_VERSION
    event.setdefault("source", source)
    event.setdefault("type", EVENT_TYPE)
    return event


def _as_cloudevent(data: bytes) -> dict[str, Any] | None:
    """The envelope in ``data``, if it is one."""
    return _cloudevent_in(_parsed(data))


def _with_data(envelope: bytes, data: bytes) -> bytes:
    """The envelope printed by orjson (never empty, no space before its closing brace) with
    ``data``, JSON text, as its data member."""
    return b'%s,"data":%s}' % (envelope[:-1], data)


def _with_data_of(envelope: dict[str, Any], original: bytes) -> bytes:
    """``envelope`` printed, its data copied from ``original``, the bytes it was parsed from."""
    if "data" not in envelope:
        return orjson.dumps(envelope)
    span = member_span(original, b"data")
    if span is None:  # the name spelled with escapes: reprinted (numbers past a double's reach may change)
        return orjson.dumps(envelope)
    del envelope["data"]
    return _with_data(orjson.dumps(envelope), original[span[0] : span[1]])


def _put_data(envelope: dict[str, Any], data: bytes, kind: int) -> None:
    """Data that is not JSON text: a string when it is text, base64 otherwise (JSON that does
    not parse, declared JSON, included: kept byte for byte)."""
    if kind == _TEXT:
        try:
            envelope["data"] = data.decode("utf-8")
            return
        except UnicodeDecodeError:
            pass
    envelope["data_base64"] = base64.b64encode(data).decode("ascii")


_KNOWN = frozenset(
    ("specversion", "id", "source", "type", "datacontenttype", "topic", "pubsubname", "data", "data_base64")
)


def unwrap(stored: bytes, topic: str, pubsub_name: str) -> Event:
    """The event in ``stored``, read from ``topic`` of ``pubsub_name``; NotACloudEvent when it is not one."""
    envelope = _as_cloudevent(stored)
    if envelope is None:
        raise NotACloudEvent("not a CloudEvent in JSON")
    content_type = envelope.get("datacontenttype") or ""
    if type(content_type) is not str:
        content_type = str(content_type)
    data: Any = envelope.get("data")
    if "data_base64" in envelope:
        try:
            data = base64.b64decode(envelope["data_base64"], validate=True)
        except (ValueError, TypeError) as exc:
            raise NotACloudEvent(f"data_base64 is not base64: {exc}") from None
    elif data is None:
        data = b""
    elif type(data) is str and not _is_json(content_type):
        data = data.encode("utf-8")
    else:
        span = member_span(stored, b"data")
        # as written; reprinted only when the envelope spells the name with escapes
        data = stored[span[0] : span[1]] if span is not None else orjson.dumps(data)
        content_type = content_type or "application/json"
    # CloudEvents extensions may be integers and booleans too: delivered as their JSON text
    # (the subscriber's metadata map holds strings), not dropped
    extensions = {
        k: v if type(v) is str else orjson.dumps(v).decode()
        for k, v in envelope.items()
        if k not in _KNOWN and v is not None
    } or _NO_EXTENSIONS
    source, event_type = envelope.get("source") or "", envelope.get("type") or ""
    return Event(
        envelope["id"],
        source if type(source) is str else str(source),
        event_type if type(event_type) is str else str(event_type),
        envelope["specversion"],
        content_type,
        data,
        topic,  # where it was read from: a dead letter's envelope still names its first topic
        pubsub_name,
        extensions,
    )


def raw_id(data: bytes) -> str:
    """The id of a message without an envelope: it has none of its own, so its bytes name it."""
    return hashlib.sha256(data).hexdigest()[:32]


def raw_event(stored: bytes, topic: str, pubsub_name: str, message_id: str) -> Event:
    """A message that is not a CloudEvent, handed over as it is (a raw publisher's)."""
    return Event(
        id=message_id,
        source="",
        type=EVENT_TYPE,
        spec_version=SPEC_VERSION,
        data_content_type="application/octet-stream",
        data=stored,
        topic=topic,
        pubsub_name=pubsub_name,
    )
