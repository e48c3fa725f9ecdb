"""Layotto's ``spec.proto.runtime.v1.Runtime``: wire messages <-> runtime service calls.

A handler takes a request message and returns a response message (or an async
iterator of them for streams) and lets the services' domain errors through; the
transport owns status codes. SayHello, GetState, SaveState and PublishEvent take and
give the plain values of ``api/wire.pyx`` (see ``codecs``). Every rule lives in the
runtime's services: a handler here only translates.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import ClassVar

from google.protobuf import any_pb2, empty_pb2

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.api.app_callback import VERDICTS, event_message
from layotto_fast.api.call import Pairs, current_call
from layotto_fast.api.codecs import Decode, Encode
from layotto_fast.api.wire import (
    GetStateFields,
    PublishEventFields,
    SaveStateFields,
    SayHelloFields,
    decode_get_state,
    decode_publish_event,
    decode_save_state,
    decode_say_hello,
    encode_empty,
    encode_get_state,
    encode_publish_event,
    encode_say_hello,
)
from layotto_fast.errors import Internal, InvalidArgument, RuntimeApiError
from layotto_fast.runtime.configuration import ConfigItem
from layotto_fast.runtime.configuration_service import ConfigurationService, Subscription
from layotto_fast.runtime.hello_service import HelloService
from layotto_fast.runtime.invoke import InvokeRequest
from layotto_fast.runtime.invoke_service import InvokeService
from layotto_fast.runtime.lock_service import LockService
from layotto_fast.runtime.pubsub import Verdict
from layotto_fast.runtime.pubsub_service import BulkEntry, PubSubService, TopicSubscription
from layotto_fast.runtime.pubsub_stream import StreamSubscriber
from layotto_fast.runtime.records import state_item
from layotto_fast.runtime.secrets_service import SecretsService
from layotto_fast.runtime.sequencer_service import SequencerService
from layotto_fast.runtime.services import Services
from layotto_fast.runtime.state import StateEntry, StateItem, TransactionOperation
from layotto_fast.runtime.state_service import StateService

log = logging.getLogger(__name__)

EMPTY = empty_pb2.Empty()


class LayottoRuntime:
    """The rpcs of ``spec.proto.runtime.v1.Runtime``; rpcs not defined here are UNIMPLEMENTED."""

    service_name = "spec.proto.runtime.v1.Runtime"
    # The rpcs most calls go through skip protobuf's message classes (wire explains why).
    codecs: ClassVar[dict[str, tuple[Decode | None, Encode | None]]] = {
        "GetState": (decode_get_state, encode_get_state),
        "SaveState": (decode_save_state, encode_empty),
        "SayHello": (decode_say_hello, encode_say_hello),
        "PublishEvent": (decode_publish_event, encode_publish_event),
    }

    def __init__(self, services: Services) -> None:
        self._hello: HelloService = services.hello
        self._state: StateService = services.state
        self._locks: LockService = services.lock
        self._sequencer: SequencerService = services.sequencer
        self._secrets: SecretsService = services.secrets
        self._configuration: ConfigurationService = services.configuration
        self._invoke: InvokeService = services.invoke
        self._pubsub: PubSubService = services.pubsub

    # -- hello -------------------------------------------------------------
    async def SayHello(self, request: SayHelloFields) -> tuple[str, bytes | None]:
        """The greeting, and the request's ``data`` echoed back (see codecs)."""
        return self._hello.greet(request.service_name, request.name), request.data

    # -- state -------------------------------------------------------------
    # GetState and SaveState hand back the store's own awaitable, as the service does: no
    # coroutine of their own to create and resume on the two most called rpcs.
    def GetState(self, request: GetStateFields) -> Awaitable[StateEntry | None]:
        return self._state.get(request.store_name, request.key, request.consistency, request.metadata)

    async def GetBulkState(self, request: pb.GetBulkStateRequest) -> pb.GetBulkStateResponse:
        found = await self._state.bulk_get(request.store_name, list(request.keys), dict(request.metadata) or None)
        return pb.GetBulkStateResponse(
            items=[
                pb.BulkStateItem(key=f.key, error=f.error)
                if f.entry is None
                else pb.BulkStateItem(key=f.key, data=f.entry.value, etag=f.entry.etag)
                for f in found
            ]
        )

    def SaveState(self, request: SaveStateFields) -> Awaitable[None]:
        return self._state.save(request.store_name, request.states)

    async def DeleteState(self, request: pb.DeleteStateRequest) -> empty_pb2.Empty:
        item = state_item(
            request.key,
            b"",
            request.etag.value if request.HasField("etag") else None,
            request.options.concurrency,
            request.options.consistency,
            dict(request.metadata) or None,
        )
        await self._state.delete_one(request.store_name, item)
        return EMPTY

    async def DeleteBulkState(self, request: pb.DeleteBulkStateRequest) -> empty_pb2.Empty:
        await self._state.delete(request.store_name, [_state_item(item) for item in request.states])
        return EMPTY

    async def ExecuteStateTransaction(self, request: pb.ExecuteStateTransactionRequest) -> empty_pb2.Empty:
        operations = [
            TransactionOperation(op.operationType, _state_item(op.request) if op.HasField("request") else None)
            for op in request.operations
        ]
        await self._state.transact(request.storeName, operations, dict(request.metadata) or None)
        return EMPTY

    # -- locks ---------------------------------------------------------------
    async def TryLock(self, request: pb.TryLockRequest) -> pb.TryLockResponse:
        locked = await self._locks.try_lock(request.store_name, request.resource_id, request.lock_owner, request.expire)
        return pb.TryLockResponse(success=locked)

    async def Unlock(self, request: pb.UnlockRequest) -> pb.UnlockResponse:
        status = await self._locks.unlock(request.store_name, request.resource_id, request.lock_owner)
        return pb.UnlockResponse(status=int(status))  # type: ignore[arg-type]

    async def LockKeepAlive(self, request: pb.LockKeepAliveRequest) -> pb.LockKeepAliveResponse:
        status = await self._locks.keep_alive(
            request.store_name, request.resource_id, request.lock_owner, request.expire
        )
        return pb.LockKeepAliveResponse(status=int(status))  # type: ignore[arg-type]

    # -- sequencer -----------------------------------------------------------
    async def GetNextId(self, request: pb.GetNextIdRequest) -> pb.GetNextIdResponse:
        # Every store's ids are strictly increasing (STRONG, which satisfies WEAK too): the
        # option only has to be one the enum knows.
        if request.options.increment not in _INCREMENTS:
            raise InvalidArgument(f"options.increment: {request.options.increment} is not WEAK (0) or STRONG (1)")
        return pb.GetNextIdResponse(next_id=await self._sequencer.next_id(request.store_name, request.key))

    # -- service invocation --------------------------------------------------
    async def InvokeService(self, request: pb.InvokeServiceRequest) -> pb.InvokeResponse:
        message = request.message
        extension = message.http_extension
        verb = _verb_name(extension.verb)
        call = current_call()
        headers = _request_headers(call.raw_metadata)
        result = await self._invoke.invoke(
            InvokeRequest(
                id=request.id,
                method=message.method,
                data=message.data.value,
                content_type=message.content_type,
                verb=verb,
                querystring=extension.querystring,
                headers=headers,
            )
        )
        # The upstream's answer headers go back as the call's response headers, as Layotto's
        # grpc.SetHeader sends them.
        call.headers.extend(_response_metadata(result.headers))
        return pb.InvokeResponse(data=any_pb2.Any(value=result.data), content_type=result.content_type)

    # -- pub/sub ---------------------------------------------------------------
    def PublishEvent(self, request: PublishEventFields) -> Awaitable[str]:
        """The message id (the codec writes it as ``PublishEventResponse.message_id``)."""
        return self._pubsub.publish(
            request.pubsub_name,
            request.topic,
            request.data,
            request.data_content_type,
            request.metadata,
            *_trace_context(),
        )

    async def BulkPublishEvent(self, request: pb.BulkPublishRequest) -> pb.BulkPublishResponse:
        entries = [
            BulkEntry(entry_id=e.entry_id, data=e.event, content_type=e.content_type, metadata=dict(e.metadata))
            for e in request.entries
        ]
        failures = await self._pubsub.bulk_publish(
            request.pubsub_name, request.topic, entries, dict(request.metadata), *_trace_context()
        )
        return pb.BulkPublishResponse(
            failedEntries=[pb.BulkPublishResponseFailedEntry(entry_id=f.entry_id, error=f.error) for f in failures]
        )

    async def SubscribeTopicEvents(
        self, requests: AsyncIterator[pb.SubscribeTopicEventsRequest]
    ) -> AsyncIterator[pb.SubscribeTopicEventsResponse]:
        """The first request names the subscription; each later one answers an event by its id."""
        incoming = aiter(requests)
        first = await anext(incoming, None)
        if first is None:
            return
        if first.WhichOneof("subscribe_topic_events_request_type") != "initial_request":
            raise InvalidArgument("initial_request: the first request must name the subscription")
        initial = first.initial_request
        subscriber = StreamSubscriber()
        stop = await self._pubsub.subscribe(
            TopicSubscription(
                pubsub_name=initial.pubsub_name,
                topic=initial.topic,
                metadata=dict(initial.metadata),
                dead_letter_topic=initial.dead_letter_topic,
            ),
            subscriber.deliver,
        )
        reader = asyncio.get_running_loop().create_task(_read_verdicts(incoming, subscriber))
        try:
            yield pb.SubscribeTopicEventsResponse(initial_response=pb.SubscribeTopicEventsResponseInitial())
            while (event := await subscriber.next()) is not None:
                yield pb.SubscribeTopicEventsResponse(event_message=event_message(event))
        finally:
            reader.cancel()
            subscriber.close()
            await stop()

    # -- secrets -------------------------------------------------------------
    async def GetSecret(self, request: pb.GetSecretRequest) -> pb.GetSecretResponse:
        return pb.GetSecretResponse(data=await self._secrets.get(request.store_name, request.key))

    async def GetBulkSecret(self, request: pb.GetBulkSecretRequest) -> pb.GetBulkSecretResponse:
        secrets = await self._secrets.bulk_get(request.store_name)
        return pb.GetBulkSecretResponse(data={k: pb.SecretResponse(secrets=v) for k, v in secrets.items()})

    # -- configuration -------------------------------------------------------
    async def GetConfiguration(self, request: pb.GetConfigurationRequest) -> pb.GetConfigurationResponse:
        items = await self._configuration.get(
            request.store_name, request.app_id, list(request.keys), request.group, request.label
        )
        return pb.GetConfigurationResponse(items=[_item_message(item) for item in items])

    async def SaveConfiguration(self, request: pb.SaveConfigurationRequest) -> empty_pb2.Empty:
        items = [
            ConfigItem(
                app_id=request.app_id,
                key=item.key,
                content=item.content,
                group=item.group,
                label=item.label,
                tags=dict(item.tags),
                metadata=dict(item.metadata),
            )
            for item in request.items
        ]
        await self._configuration.save(request.store_name, items, dict(request.metadata))
        return EMPTY

    async def DeleteConfiguration(self, request: pb.DeleteConfigurationRequest) -> empty_pb2.Empty:
        await self._configuration.delete(
            request.store_name, request.app_id, list(request.keys), request.group, request.label
        )
        return EMPTY

    async def SubscribeConfiguration(
        self, requests: AsyncIterator[pb.SubscribeConfigurationRequest]
    ) -> AsyncIterator[pb.SubscribeConfigurationResponse]:
        """Each request adds a watch; every later matching change is pushed.

        The stream ends when the client half-closes after its last request and has
        nothing left to watch, or goes away; every watch is removed either way.
        """
        subscription = self._configuration.subscription()
        reader = asyncio.get_running_loop().create_task(_read_subscriptions(requests, subscription))
        try:
            while (change := await subscription.next()) is not None:
                yield pb.SubscribeConfigurationResponse(
                    store_name=change.store_name,
                    app_id=change.app_id,
                    items=[_item_message(item) for item in change.items],
                )
        finally:
            reader.cancel()
            subscription.close()


async def _read_subscriptions(
    requests: AsyncIterator[pb.SubscribeConfigurationRequest], subscription: Subscription
) -> None:
    try:
        async for request in requests:
            subscription.add(request.store_name, request.app_id, list(request.keys), request.group, request.label)
    except RuntimeApiError as exc:  # surfaces on the response stream
        subscription.fail(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        subscription.fail(Internal(f"reading the subscription requests failed: {type(exc).__name__}"))
    else:
        subscription.requests_ended()


async def _read_verdicts(requests: AsyncIterator[pb.SubscribeTopicEventsRequest], subscriber: StreamSubscriber) -> None:
    try:
        async for request in requests:
            event_id, verdict = _answer(request)
            subscriber.answer(event_id, verdict)
    except RuntimeApiError as exc:  # a malformed or unexpected request: surfaces on the response stream
        subscriber.fail(exc)
        return
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the transport lost the client: its unanswered deliveries go back
        log.info("a SubscribeTopicEvents request stream ended: %s", type(exc).__name__)
    subscriber.close()


def _answer(request: pb.SubscribeTopicEventsRequest) -> tuple[str, Verdict]:
    """The event id and verdict a request after the first one carries."""
    kind = request.WhichOneof("subscribe_topic_events_request_type")
    if kind == "initial_request":
        raise InvalidArgument("initial_request: only the first request names the subscription")
    if kind != "event_processed":
        raise InvalidArgument("event_processed is missing: every request after the first answers an event")
    processed = request.event_processed
    # An id no delivery awaits (empty, unknown, answered already) is the subscriber's to
    # ignore, as Layotto ignores it: one stray answer does not end the stream.
    status = processed.status.status
    verdict = VERDICTS.get(status)
    if verdict is None:  # an open enum: a status it lacks is retried, as Layotto retries it
        log.info(
            "an answer for event %r with status %d, which is not SUCCESS, RETRY or DROP: retried", processed.id, status
        )
        verdict = Verdict.RETRY
    return processed.id, verdict


# Answer headers that are not the call's to return: HTTP/1 and HTTP/2 connection headers,
# the ones the transport writes itself, and gRPC's own (grpc-*).
_NOT_RETURNED = frozenset(
    {"content-length", "content-type", "te", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
     "upgrade", "host"}
)  # fmt: skip
_METADATA_NAME = re.compile(r"[0-9a-z_.-]+")  # what gRPC allows in a metadata key
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: what both transports send in a text value


def _request_headers(metadata: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """A call's text metadata as request headers, each value its bytes one character per
    byte; a key sent more than once has its values joined with commas, as Layotto's
    RPCHeader joins them (and HTTP combines repeated fields). Binary (``-bin``) metadata
    stays behind: few upstream headers could carry its bytes."""
    headers: dict[str, str] = {}
    for name, value in metadata or ():
        if name.endswith("-bin"):
            continue
        text = value.decode("latin-1")
        headers[name] = f"{headers[name]},{text}" if name in headers else text
    return headers


def _response_metadata(headers: Mapping[str, str]) -> Pairs:
    """An upstream's answer headers as response metadata, lower-cased, leaving out the ones
    no gRPC answer can carry: sent as they are, they would fail the call on either
    transport. A ``-bin`` key is left out too: its value is bytes, the header's is text."""
    pairs: Pairs = []
    for name, value in headers.items():
        key = name.lower()
        if (
            key in _NOT_RETURNED
            or key.startswith("grpc-")
            or key.endswith("-bin")
            or not _METADATA_NAME.fullmatch(key)
            or not _METADATA_VALUE.fullmatch(value)
        ):
            continue
        pairs.append((key, value))
    return pairs


def _state_item(item: pb.StateItem) -> StateItem:
    return state_item(
        item.key,
        item.value,
        item.etag.value if item.HasField("etag") else None,
        item.options.concurrency,
        item.options.consistency,
        dict(item.metadata) or None,
    )


def _item_message(item: ConfigItem) -> pb.ConfigurationItem:
    return pb.ConfigurationItem(
        key=item.key,
        content=item.content,
        group=item.group,
        label=item.label,
        tags=item.tags,
        metadata=item.metadata,
    )


_INCREMENTS = frozenset((pb.SequencerOptions.WEAK, pb.SequencerOptions.STRONG))


def _trace_context() -> tuple[str, str]:
    """The call's W3C trace context (traceparent, tracestate), for a published envelope."""
    call = current_call()
    return call.text("traceparent"), call.text("tracestate")


def _verb_name(number: int) -> str:
    """The verb's name, "" for NONE; a number the enum lacks is the caller's mistake."""
    if not number:
        return ""
    try:
        return pb.HTTPExtension.Verb.Name(number)
    except ValueError:
        raise InvalidArgument(f"message.http_extension.verb: {number} is not a known HTTP verb") from None
