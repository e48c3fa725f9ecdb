"""The app's ``AppCallback`` gRPC server, dialled by the sidecar: events out, verdicts back.

Only translation lives here (runtime events to ``TopicEventRequest``, statuses to
verdicts); what to do with a verdict is the pub/sub service's.

Two connections to the app: grpcio's channel asks for the subscriptions and watches the
connection (it never goes idle on its own and reconnects quickly, so that a lost app
shows as lost and a returning one is found within about two seconds); deliveries go
through the native client (``layotto_fast_native.GrpcClient``), because grpcio's asyncio
client costs about 220 µs of CPU per call, most of a delivery.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import grpc
from google.protobuf import empty_pb2
from layotto_fast_native import GrpcClient

from layotto_fast._proto import appcallback_pb2 as pb
from layotto_fast._proto import appcallback_pb2_grpc
from layotto_fast.errors import Unavailable
from layotto_fast.runtime.cloudevents import Event
from layotto_fast.runtime.pubsub import Verdict
from layotto_fast.runtime.pubsub_service import TopicSubscription

LIST_TIMEOUT_SECONDS = 5.0
ON_TOPIC_EVENT = "/spec.proto.runtime.v1.AppCallback/OnTopicEvent"
# A delivery's own limit in the client; the pub/sub service's (deliveryTimeout) is shorter
# and gives up waiting first.
DELIVERY_LIMIT_MS = 600_000
CHANNEL_OPTIONS = (
    ("grpc.client_idle_timeout_ms", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", -1),
)
_VERDICTS = {int(v): v for v in Verdict}
_FAILED = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)
_IDLE = grpc.ChannelConnectivity.IDLE


class GrpcAppChannel:
    def __init__(self, host: str, port: int) -> None:
        self.address = f"{host}:{port}"
        self._channel: grpc.aio.Channel | None = None
        self._stub: appcallback_pb2_grpc.AppCallbackStub | None = None
        self._client: GrpcClient | None = None
        self._waiting: dict[int, asyncio.Future[tuple[int, str, bytes]]] = {}
        self._tokens = itertools.count(1)

    def _connect(self) -> appcallback_pb2_grpc.AppCallbackStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            self._stub = appcallback_pb2_grpc.AppCallbackStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    def _native(self) -> GrpcClient:
        if self._client is None:
            self._client = GrpcClient(self.address)
            asyncio.get_running_loop().add_reader(self._client.completions_fd(), self._finished)
        return self._client

    def _finished(self) -> None:
        assert self._client is not None
        for token, status, detail, message in self._client.take_completions():
            future = self._waiting.pop(token, None)
            if future is not None and not future.done():
                future.set_result((status, detail, message))

    async def list_subscriptions(self) -> Sequence[TopicSubscription]:
        stub = self._connect()
        try:
            reply = await stub.ListTopicSubscriptions(empty_pb2.Empty(), timeout=LIST_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return []  # an app that subscribes to nothing
            raise Unavailable(f"app at {self.address}: {exc.code().name}: {exc.details()}") from None
        return [
            TopicSubscription(
                pubsub_name=s.pubsub_name,
                topic=s.topic,
                metadata=dict(s.metadata),
                dead_letter_topic=s.dead_letter_topic,
            )
            for s in reply.subscriptions
        ]

    async def deliver(self, event: Event) -> Verdict:
        client = self._native()
        token = next(self._tokens)
        future: asyncio.Future[tuple[int, str, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            client.call(token, ON_TOPIC_EVENT, event_message(event).SerializeToString(), DELIVERY_LIMIT_MS)
            status, detail, message = await future
        finally:
            self._waiting.pop(token, None)
        if status:
            name = grpc.StatusCode.UNKNOWN.name
            for code in grpc.StatusCode:
                if code.value[0] == status:
                    name = code.name
            raise Unavailable(f"app at {self.address}: {name}: {detail}")
        return _VERDICTS.get(pb.TopicEventResponse.FromString(message).status, Verdict.RETRY)

    async def lost(self) -> None:
        self._connect()
        channel = self._channel
        assert channel is not None
        state = channel.get_state(try_to_connect=True)
        while True:
            await channel.wait_for_state_change(state)
            previous, state = state, channel.get_state(try_to_connect=True)
            # Idle never comes by itself here (idle timeout off): from READY it means the
            # connection closed.
            if state in _FAILED or (previous == grpc.ChannelConnectivity.READY and state == _IDLE):
                return

    async def close(self) -> None:
        if self._client is not None:
            asyncio.get_running_loop().remove_reader(self._client.completions_fd())
            self._client.close()
            self._client = None
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = self._stub = None


def event_message(event: Event) -> pb.TopicEventRequest:
    return pb.TopicEventRequest(
        id=event.id,
        source=event.source,
        type=event.type,
        spec_version=event.spec_version,
        data_content_type=event.data_content_type,
        data=event.data,
        topic=event.topic,
        pubsub_name=event.pubsub_name,
        metadata=dict(event.extensions),
    )
