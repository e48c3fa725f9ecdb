"""A CloudEvent's JSON data reaches the subscriber as the publisher wrote it.

Parsed and printed again by orjson, an integer past 64 bits or a decimal with more digits than a
double holds came out changed (123456789012345678901234567890 as 1.2345678901234568e+29), on the
way into the envelope and again on the way out; Dapr keeps them (it reads with UseNumber).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import orjson
import pytest

from layotto_fast.errors import InvalidArgument
from layotto_fast.runtime import cloudevents
from layotto_fast.runtime.json_span import member_span
from layotto_fast.runtime.pubsub import Verdict
from layotto_fast.runtime.pubsub_service import BulkEntry, TopicSubscription, _expiration
from tests.components.support import until
from tests.pubsub.service import memory_pubsub

WHERE = {"source": "app", "topic": "orders", "pubsub_name": "ps"}
EXACT = b'{"big": 123456789012345678901234567890, "long": 1.000000000000000000001, "e": 1E2, "neg": -0}'


def test_json_data_published_arrives_digit_for_digit() -> None:
    message_id, stored = cloudevents.wrap(b"  " + EXACT + b"\n", "application/json", **WHERE)
    envelope = orjson.loads(stored)  # still one JSON document, with the usual attributes
    assert (envelope["id"], envelope["topic"], envelope["datacontenttype"]) == (
        message_id,
        "orders",
        "application/json",
    )
    assert EXACT in stored
    event = cloudevents.unwrap(stored, "orders", "ps")
    assert (event.data, event.data_content_type) == (EXACT, "application/json")


def test_a_passed_through_cloudevent_keeps_its_data_as_written() -> None:
    own = b'{"specversion": "1.0", "id": "e-1", "source": "s", "type": "t", "data": %s, "x": "y"}' % EXACT
    message_id, stored = cloudevents.wrap(own, "application/cloudevents+json", **WHERE)
    assert message_id == "e-1"
    assert cloudevents.unwrap(stored, "orders", "ps").data == EXACT


def test_json_shaped_like_a_cloudevent_but_not_declared_one_is_wrapped() -> None:
    """As Layotto and Dapr wrap it: only the content type makes data a CloudEvent. Before, an
    ``application/json`` object with an id and a specversion was stored as the envelope
    itself: the app got the publisher's id, empty data, and the other members as metadata."""
    order = b'{"id": "o-1", "specversion": "1.0", "amount": 5}'
    message_id, stored = cloudevents.wrap(order, "application/json", **WHERE)
    assert message_id != "o-1" and orjson.loads(stored)["id"] == message_id
    event = cloudevents.unwrap(stored, "orders", "ps")
    assert (event.id, event.data, event.data_content_type) == (message_id, order, "application/json")
    assert "amount" not in event.extensions


def test_a_forwarded_cloudevent_names_the_topic_it_is_published_to_now() -> None:
    """An app that forwards an event it received: the envelope said the topic it first went to
    (``setdefault``); Dapr writes the new topic and pub/sub there."""
    first = orjson.dumps({"specversion": "1.0", "id": "e-2", "topic": "inbox", "pubsubname": "old", "data": 1})
    _, stored = cloudevents.wrap(first, "application/cloudevents+json", **WHERE)
    envelope = orjson.loads(stored)
    assert (envelope["topic"], envelope["pubsubname"], envelope["data"]) == ("orders", "ps", 1)


def test_json_data_that_is_a_string_or_a_scalar_is_copied_too() -> None:
    for data in (b'"text with \\"quotes\\" and } braces"', b"18446744073709551616", b"[1, [2, {}]]"):
        _, stored = cloudevents.wrap(data, "application/json", **WHERE)
        assert cloudevents.unwrap(stored, "orders", "ps").data == data


@pytest.mark.parametrize(
    ("document", "span"),
    [
        (b'{"data": 1}', b"1"),
        (
            b' { "a" : "x\\"}" , "data" :\t{"s": "\\\\", "t": ["}", {"u": "]"}]} } ',
            b'{"s": "\\\\", "t": ["}", {"u": "]"}]}',
        ),
        (b'{"data": "first", "data": [2]}', b"[2]"),  # the last one, as parsers keep it
        (b'{"id": "data", "x": {"data": 1}}', None),  # not at the top level
        (b'{"d\\u0061ta": 1}', None),  # spelled with escapes: the caller reprints instead
        (b'{"data": 1, "d\\u0061ta": 2}', None),  # the escaped one is the last "data": not worked out here
        (b"{}", None),
        (b"[1]", None),
        (b'{"data": true}', b"true"),
    ],
)
def test_member_span_finds_top_level_members_only(document: bytes, span: bytes | None) -> None:
    found = member_span(document, b"data")
    assert (document[found[0] : found[1]] if found else None) == span


def test_an_envelope_naming_data_with_escapes_is_still_read() -> None:
    stored = b'{"specversion": "1.0", "id": "e-3", "d\\u0061ta": {"k": 2}}'
    assert orjson.loads(cloudevents.unwrap(stored, "orders", "ps").data) == {"k": 2}
    twice = b'{"specversion": "1.0", "id": "e-4", "data": 1, "d\\u0061ta": 2}'  # parsers keep the last
    assert cloudevents.unwrap(twice, "orders", "ps").data == b"2"


def test_data_declared_a_cloudevent_keeps_its_own_attributes_and_gets_the_missing_ones() -> None:
    """As Dapr's FromCloudEvent takes it. Before, an event without specversion (Dapr fills it
    in, so publishers leave it out) was wrapped in a new envelope: its id, type and source
    replaced, the whole event handed to the app as its data."""
    declared = cloudevents.CLOUDEVENT_CONTENT_TYPE
    event = b'{"id": "abc", "source": "shop", "type": "order.created", "data": {"n": 1}}'
    message_id, stored = cloudevents.wrap(event, declared, **WHERE)
    envelope = orjson.loads(stored)
    assert message_id == "abc"
    assert (envelope["specversion"], envelope["source"], envelope["type"]) == ("1.0", "shop", "order.created")
    delivered = cloudevents.unwrap(stored, "orders", "ps")
    assert (delivered.id, delivered.data) == ("abc", b'{"n": 1}')
    numbered_id, stored = cloudevents.wrap(b'{"id": 42, "specversion": "1.0", "data": "x"}', declared, **WHERE)
    assert numbered_id == "42" and cloudevents.unwrap(stored, "orders", "ps").id == "42"
    minted, stored = cloudevents.wrap(b'{"k": 1}', declared, **WHERE)
    envelope = orjson.loads(stored)
    assert minted and envelope["id"] == minted and envelope["k"] == 1
    assert (envelope["source"], envelope["type"]) == (WHERE["source"], cloudevents.EVENT_TYPE)


def test_data_declared_a_cloudevent_that_is_no_json_object_is_refused_naming_the_field() -> None:
    """Layotto answers INVALID_ARGUMENT; it was published as a new envelope whose content type
    claimed a CloudEvent around bytes that are none. A JSON object is a CloudEvent (see
    below), and a bulk publish names the entry."""

    async def scenario() -> None:
        components, service = await memory_pubsub()
        try:
            for data in (b"not json", b"[1, 2]"):
                with pytest.raises(InvalidArgument, match=r"^data: .*not a JSON object"):
                    await service.publish("ps", "t", data, cloudevents.CLOUDEVENT_CONTENT_TYPE, {}, "")
            assert await service.publish("ps", "t", b'{"k": 1}', cloudevents.CLOUDEVENT_CONTENT_TYPE, {}, "")
            entries = [
                BulkEntry("a", b'{"k": 1}', cloudevents.CLOUDEVENT_CONTENT_TYPE, {}),
                BulkEntry("b", b"oops", cloudevents.CLOUDEVENT_CONTENT_TYPE, {}),
            ]
            with pytest.raises(InvalidArgument, match=r"^entries\[1\]\.event: "):
                await service.bulk_publish("ps", "t", entries, {})
        finally:
            await components.close_all()

    asyncio.run(scenario())


def test_cloudevent_metadata_sets_the_envelope_s_attributes_as_dapr_s_does() -> None:
    metadata = {
        "CloudEvent.Id": "mine-1",
        "cloudevent.source": "billing",
        "cloudevent.type": "invoice.paid",
        "cloudevent.subject": "inv-7",
        "cloudevent.tracestate": "k=v",
        "cloudevent.traceparent": "00-p-01",
        "cloudevent.traceid": "00-older-01",  # traceparent wins, in whatever order
        "cloudevent.data": "ignored",
        "partitionKey": "p",
    }
    message_id, stored = cloudevents.wrap(b"x", "text/plain", **WHERE, metadata=metadata)
    envelope = orjson.loads(stored)
    assert message_id == envelope["id"] == "mine-1"
    assert (envelope["source"], envelope["type"], envelope["subject"]) == ("billing", "invoice.paid", "inv-7")
    assert (envelope["traceparent"], envelope["tracestate"], envelope["data"]) == ("00-p-01", "k=v", "x")
    own = b'{"specversion": "1.0", "id": "e-9", "source": "s"}'
    passed_id, passed = cloudevents.wrap(own, "application/cloudevents+json", **WHERE, metadata=metadata)
    assert passed_id == "e-9" and orjson.loads(passed)["source"] == "s", "a CloudEvent passed through keeps its own"


def test_a_message_past_its_ttl_is_acknowledged_not_delivered() -> None:
    """ttlInSeconds on a publish was ignored: Dapr writes the envelope's expiration and drops
    the message when it is read after that."""

    async def scenario() -> tuple[list[str], str, int]:
        components, service = await memory_pubsub()
        delivered: list[str] = []

        expirations: list[str] = []

        async def deliver(event: cloudevents.Event, timeout: float) -> Verdict:
            delivered.append(event.id)
            expirations.append(event.extensions.get("expiration", ""))
            return Verdict.SUCCESS

        try:
            stop = await service.subscribe(TopicSubscription("ps", "t"), deliver)
            _, stale = cloudevents.wrap(b"old", "text/plain", **WHERE, expiration="2001-01-01T00:00:00Z")
            await components.ready("pubsub")["ps"].publish("t", stale, {})
            sent_at = time.time()
            fresh = await service.publish("ps", "t", b"new", "text/plain", {"ttlInSeconds": "60"}, "")
            assert await until(lambda: delivered == [fresh], 5)
            expires = datetime.fromisoformat(expirations[0]).timestamp()  # the publish's ttl, written
            assert sent_at + 58 <= expires <= time.time() + 61, (expirations, sent_at)
            await asyncio.sleep(0.7)  # past the in-memory redelivery interval: nothing comes again
            with pytest.raises(InvalidArgument, match=r"^metadata\.ttlInSeconds is 'soon'"):
                await service.publish("ps", "t", b"x", "text/plain", {"ttlInSeconds": "soon"}, "")
            await stop()
            return delivered, fresh, service.counts[("ps", "t")].dropped
        finally:
            await components.close_all()

    delivered, fresh, dropped = asyncio.run(scenario())
    assert delivered == [fresh] and dropped == 1


@pytest.mark.parametrize(
    ("metadata", "seconds"),
    [
        ({"ttlInSeconds": "60"}, 60),
        ({"TTLInSeconds": "60"}, 60),  # any case, as Dapr reads metadata
        ({"ttl": "90s"}, 90),  # Dapr's other name, and a Go duration
        ({"ttlInSeconds": "1m30s"}, 90),
        ({"ttl": "1.5s"}, 2),  # written to the second: rounded up
        ({"ttl": "30", "ttlInSeconds": "60"}, 30),  # ttl first, as Dapr looks for it
    ],
)
def test_a_publish_ttl_is_read_as_dapr_reads_it(metadata: dict[str, str], seconds: int) -> None:
    """Before, only ``ttlInSeconds`` in that case and whole seconds were read: ``ttl`` was
    ignored (the message never expired), and a duration was refused."""

    before = time.time()
    expires = datetime.fromisoformat(_expiration(metadata, "metadata")).timestamp()
    assert int(before) + seconds <= expires <= time.time() + seconds + 1


def test_a_bad_publish_ttl_names_its_key() -> None:
    assert _expiration({"ttl": "-1"}, "metadata") == ""
    for metadata in ({"ttl": "0s"}, {"TTL": "soon"}, {"ttlInSeconds": "-5"}):
        with pytest.raises(InvalidArgument, match=f"^metadata\\.{next(iter(metadata))} is "):
            _expiration(metadata, "metadata")


def test_the_expiration_written_for_a_ttl_is_read_back_as_dapr_writes_it() -> None:
    stamp = cloudevents.expiration_after(60, 1_700_000_000.0)
    assert stamp == "2023-11-14T22:14:20Z"
    event = cloudevents.unwrap(cloudevents.wrap(b"x", "text/plain", **WHERE, expiration=stamp)[1], "orders", "ps")
    assert not cloudevents.has_expired(event, 1_700_000_059.0)
    assert cloudevents.has_expired(event, 1_700_000_061.0)
    assert not cloudevents.has_expired(event._replace(extensions={"expiration": "soon"}), 2e9), "unreadable: kept"


def test_a_message_past_its_ttl_goes_to_the_dead_letter_topic_when_there_is_one() -> None:
    """As Dapr sends it there (acknowledged, not delivered); it was dropped."""

    async def scenario() -> tuple[list[bytes], list[bytes], bytes, tuple[int, int, int]]:
        components, service = await memory_pubsub()
        delivered: list[bytes] = []
        dead: list[bytes] = []

        async def deliver(event: cloudevents.Event, timeout: float) -> Verdict:
            delivered.append(event.data)
            return Verdict.SUCCESS

        async def read_dead(event: cloudevents.Event, timeout: float) -> Verdict:
            dead.append(event.data)  # unread (rawPayload): the envelope as it was stored
            return Verdict.SUCCESS

        try:
            stops = [
                await service.subscribe(TopicSubscription("ps", "t", dead_letter_topic="dead"), deliver),
                await service.subscribe(TopicSubscription("ps", "dead", {"rawPayload": "true"}), read_dead),
            ]
            _, stale = cloudevents.wrap(b"old", "text/plain", **WHERE, expiration="2001-01-01T00:00:00Z")
            await components.ready("pubsub")["ps"].publish("t", stale, {})
            await service.publish("ps", "t", b"new", "text/plain", {}, "")
            assert await until(lambda: delivered == [b"new"] and len(dead) == 1, 5)
            await asyncio.sleep(0.7)  # past the in-memory redelivery interval: nothing comes again
            for stop in stops:
                await stop()
            counts = service.counts[("ps", "t")]
            return delivered, dead, stale, (counts.dead_lettered, counts.dropped, counts.returned)
        finally:
            await components.close_all()

    delivered, dead, stale, counts = asyncio.run(scenario())
    assert delivered == [b"new"] and dead == [stale]
    assert counts == (1, 0, 0)
