"""The compiled codecs of the hottest rpcs against protobuf's own (upb) on the same bytes."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.api.wire import (
    decode_get_state,
    decode_publish_event,
    decode_save_state,
    decode_say_hello,
    encode_get_state,
    encode_publish_event,
    encode_say_hello,
)
from layotto_fast.runtime.state import StateEntry, StateItem

TEXTS = ["", "k", "key-é-ключ-键", "x" * 130, "y" * 20_000]


def upb_save(data: bytes) -> Any:
    request = pb.SaveStateRequest.FromString(data)
    return (
        request.store_name,
        [
            (
                item.key,
                item.value,
                item.etag.value if item.HasField("etag") else None,
                item.options.concurrency,
                item.options.consistency,
                dict(item.metadata) or None,
            )
            for item in request.states
        ],
    )


def ours_save(data: bytes) -> Any:
    request = decode_save_state(data)
    assert all(type(item) is StateItem for item in request.states)
    return (
        request.store_name,
        [(i.key, i.value, i.etag, i.concurrency, i.consistency, i.metadata) for i in request.states],
    )


def upb_get(data: bytes) -> Any:
    request = pb.GetStateRequest.FromString(data)
    return request.store_name, request.key, request.consistency, dict(request.metadata) or None


def ours_get(data: bytes) -> Any:
    request = decode_get_state(data)
    return request.store_name, request.key, request.consistency, request.metadata or None


def upb_hello(data: bytes) -> Any:
    request = pb.SayHelloRequest.FromString(data)
    return request.service_name, request.name, request.data if request.HasField("data") else None


def ours_hello(data: bytes) -> Any:
    request = decode_say_hello(data)
    # The Any is kept as bytes (several occurrences back to back): parse to compare.
    return request.service_name, request.name, None if request.data is None else any_pb2.Any.FromString(request.data)


def upb_publish(data: bytes) -> Any:
    r = pb.PublishEventRequest.FromString(data)
    return r.pubsub_name, r.topic, r.data, r.data_content_type, dict(r.metadata)


def ours_publish(data: bytes) -> Any:
    r = decode_publish_event(data)
    return r.pubsub_name, r.topic, r.data, r.data_content_type, r.metadata


def outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except DecodeError:
        return DecodeError


def random_item(rng: random.Random) -> pb.StateItem:
    item = pb.StateItem(key=rng.choice(TEXTS), value=rng.randbytes(rng.choice([0, 1, 200])))
    if rng.random() < 0.5:
        item.etag.value = rng.choice(TEXTS[:3])
    if rng.random() < 0.5:
        item.options.concurrency = rng.choice([0, 1, 2, 7])
        item.options.consistency = rng.choice([0, 2])
    for _ in range(rng.choice([0, 0, 1, 3])):
        item.metadata[rng.choice(TEXTS[:4])] = rng.choice(TEXTS[:4])
    return item


def random_save(rng: random.Random) -> bytes:
    request = pb.SaveStateRequest(store_name=rng.choice(TEXTS[:3]))
    request.states.extend(random_item(rng) for _ in range(rng.choice([0, 1, 2, 5])))
    return request.SerializeToString()


def random_get(rng: random.Random) -> bytes:
    request = pb.GetStateRequest(store_name=rng.choice(TEXTS), key=rng.choice(TEXTS), consistency=rng.choice([0, 1, 9]))
    for _ in range(rng.choice([0, 2])):
        request.metadata[rng.choice(TEXTS[:3])] = rng.choice(TEXTS[:3])
    return request.SerializeToString()


def random_hello(rng: random.Random) -> bytes:
    request = pb.SayHelloRequest(service_name=rng.choice(TEXTS[:3]), name=rng.choice(TEXTS))
    if rng.random() < 0.6:
        request.data.type_url = rng.choice(["", "type.googleapis.com/x.Y", "é"])
        request.data.value = rng.randbytes(rng.choice([0, 3, 300]))
    return request.SerializeToString()


def random_publish(rng: random.Random) -> bytes:
    request = pb.PublishEventRequest(
        pubsub_name=rng.choice(TEXTS[:3]),
        topic=rng.choice(TEXTS),
        data=rng.randbytes(rng.choice([0, 1, 300])),
        data_content_type=rng.choice(["", "application/json"]),
    )
    for _ in range(rng.choice([0, 2])):
        request.metadata[rng.choice(TEXTS[:3])] = rng.choice(TEXTS[:3])
    return request.SerializeToString()


CODECS = [
    (random_publish, upb_publish, ours_publish),
    (random_save, upb_save, ours_save),
    (random_get, upb_get, ours_get),
    (random_hello, upb_hello, ours_hello),
]


# Unknown fields of every wire type (field 9 exists in neither message): varint,
# fixed64, length-delimited, a group holding a varint, fixed32.
UNKNOWN = bytes([0x48, 0x96, 0x01]) + bytes([0x49]) + bytes(8) + bytes([0x4A, 2, 1, 2])
UNKNOWN += bytes([0x4B, 0x08, 0x05, 0x4C]) + bytes([0x4D]) + bytes(4)


@pytest.mark.parametrize(("make", "upb", "ours"), CODECS)
def test_random_messages_decode_as_protobuf_does(make: Any, upb: Any, ours: Any) -> None:
    rng = random.Random(8)
    for _ in range(300):
        data = make(rng)
        assert ours(data) == upb(data)
        # Unknown fields are skipped; a message sent twice merges (last scalar wins,
        # repeated fields append, sub-messages merge).
        for variant in (UNKNOWN + data + UNKNOWN, data + make(rng), data + data):
            assert ours(variant) == upb(variant)


def test_repeated_sub_messages_merge_field_by_field() -> None:
    first = pb.StateItem(key="k", etag=pb.Etag(value="1"), options=pb.StateOptions(concurrency=1))
    second = pb.StateItem(value=b"v", etag=pb.Etag(), options=pb.StateOptions(consistency=2))
    data = pb.SaveStateRequest(states=[first]).SerializeToString()
    merged = data[:2] + first.SerializeToString() + second.SerializeToString()
    data = bytes([0x12, len(merged) - 2]) + merged[2:]
    assert ours_save(data) == upb_save(data) == ("", [("k", b"v", "1", 1, 2, None)])


@pytest.mark.parametrize(("make", "upb", "ours"), CODECS)
def test_damaged_bytes_are_refused_where_protobuf_refuses_them(make: Any, upb: Any, ours: Any) -> None:
    rng = random.Random(9)
    for _ in range(100):
        data = make(rng)
        if not data or len(data) > 300:
            continue
        for end in range(len(data)):  # every truncation
            assert outcome(ours, data[:end]) == outcome(upb, data[:end]), data[:end]
        for _ in range(50):  # random byte damage
            damaged = bytearray(data)
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            assert outcome(ours, bytes(damaged)) == outcome(upb, bytes(damaged)), bytes(damaged)


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x0A, 2, 0xC3, 0x28]),  # store_name that is not UTF-8
        bytes([0x00, 0x01]),  # field number 0
        bytes([0x0E]),  # wire type 6
        bytes([0x4B, 0x54]),  # group closed by another field's end tag
        bytes([0x4B]),  # group never closed
        bytes([0x0A, 5, 0x61]),  # length past the end
        bytes([0x48]) + bytes([0xFF] * 11),  # varint longer than 10 bytes
    ],
)
def test_malformed_requests_raise_decode_error(data: bytes) -> None:
    pairs = [
        (decode_get_state, pb.GetStateRequest),
        (decode_save_state, pb.SaveStateRequest),
        (decode_say_hello, pb.SayHelloRequest),
    ]
    for decode, upb in pairs:
        with pytest.raises(DecodeError):
            upb.FromString(data)
        with pytest.raises(DecodeError):
            decode(data)


def test_save_state_items_are_state_items_that_hold_their_fields() -> None:
    item = pb.StateItem(
        key="k", value=b"v", etag=pb.Etag(value="7"), options=pb.StateOptions(concurrency=2, consistency=1)
    )
    request = decode_save_state(pb.SaveStateRequest(store_name="s", states=[item]).SerializeToString())
    [decoded] = request.states
    assert decoded == StateItem("k", b"v", "7", 2, 1, None) and decoded.key == "k" and decoded.concurrency == 2
    with_metadata = pb.StateItem(key="k", metadata={"ttlInSeconds": "5"})
    [decoded_ttl] = decode_save_state(pb.SaveStateRequest(states=[with_metadata]).SerializeToString()).states
    assert decoded_ttl.metadata == {"ttlInSeconds": "5"} and decoded_ttl.etag is None
    del request
    assert decoded.value == b"v"  # the record owns its fields


def test_a_repeated_store_name_is_the_same_str_and_a_new_one_is_decoded() -> None:
    def store(name: str) -> str:
        return decode_get_state(pb.GetStateRequest(store_name=name, key="k").SerializeToString()).store_name

    first = store("redis-" + "x" * 20)
    assert store("redis-" + "x" * 20) is first  # handed out again: its hash is cached
    for name in ("redis-" + "x" * 20, "é-store", "", "redis-" + "x" * 19, "redis-" + "x" * 20):
        assert store(name) == name
    hello = pb.SayHelloRequest(service_name="redis-" + "x" * 20).SerializeToString()
    assert decode_say_hello(hello).service_name == "redis-" + "x" * 20


def test_decoding_save_state_leaks_nothing() -> None:
    items = [pb.StateItem(key=f"k{i}", value=b"v" * i, metadata={"m": "1"} if i else {}) for i in range(3)]
    data = pb.SaveStateRequest(store_name="s", states=items).SerializeToString()
    for _ in range(1000):  # warm caches and free lists before measuring
        decode_save_state(data)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):
            decode_save_state(data)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10_000, f"{grown} bytes still held after 20,000 decodes"


@pytest.mark.parametrize("value", [b"", b"v", bytes(range(256)) * 80])
@pytest.mark.parametrize("etag", ["", "1", "é" * 70])
def test_get_state_answer_is_protobufs_encoding(value: bytes, etag: str) -> None:
    assert encode_get_state(StateEntry(value, etag)) == pb.GetStateResponse(data=value, etag=etag).SerializeToString()


def test_missing_entry_is_the_empty_answer() -> None:
    assert encode_get_state(None) == b""


@pytest.mark.parametrize(
    "entry",
    [StateEntry("not bytes", "1"), StateEntry(None, "1"), StateEntry(b"v", None)],  # type: ignore[arg-type]
)
def test_an_entry_of_the_wrong_type_is_refused(entry: StateEntry) -> None:
    with pytest.raises(TypeError):
        encode_get_state(entry)


@pytest.mark.parametrize("hello", ["", "greetings, é"])
@pytest.mark.parametrize("data", [None, any_pb2.Any(), any_pb2.Any(type_url="t/x", value=bytes(200))])
def test_say_hello_answer_is_protobufs_encoding(hello: str, data: any_pb2.Any | None) -> None:
    expected = pb.SayHelloResponse(hello=hello)
    if data is not None:
        expected.data.CopyFrom(data)
    encoded = encode_say_hello((hello, None if data is None else data.SerializeToString()))
    assert encoded == expected.SerializeToString()


def test_say_hello_data_that_is_not_an_any_is_refused() -> None:
    bad = pb.SayHelloRequest(name="n").SerializeToString() + bytes([0x1A, 2, 0x0A, 5])  # type_url past its end
    with pytest.raises(DecodeError):
        pb.SayHelloRequest.FromString(bad)
    with pytest.raises(DecodeError):
        decode_say_hello(bad)


@pytest.mark.parametrize("message_id", ["", "0f2e-1", "é" * 200])
def test_publish_answer_is_protobufs_encoding(message_id: str) -> None:
    assert encode_publish_event(message_id) == pb.PublishEventResponse(message_id=message_id).SerializeToString()
