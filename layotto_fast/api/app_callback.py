"""The app's ``AppCallback`` gRPC server, dialled by the sidecar: events out, verdicts back.

Only translation lives here (runtime events to ``TopicEventRequest``, statuses to
verdicts); what to do with a verdict is the pub/sub service's. The channel never goes
idle on its own and reconnects quickly, so that a lost app shows as lost (the
subscriptions stop) and a returning one is found within about two seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import empty_pb2

from layotto_fast._proto import appcallback_pb2 as pb
from layotto_fast._proto import appcallback_pb2_grpc
from layotto_fast.errors import Unavailable
from layotto_fast.runtime.cloudevents import Event
from layotto_fast.runtime.pubsub import Verdict
from layotto_fast.runtime.pubsub_service import TopicSubscription

LIST_TIMEOUT_SECONDS = 5.0
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

    def _connect(self) -> appcallback_pb2_grpc.AppCallbackStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            self._stub = appcallback_pb2_grpc.AppCallbackStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

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
        stub = self._connect()
        try:
            reply = await stub.OnTopicEvent(event_message(event))
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"app at {self.address}: {exc.code().name}: {exc.details()}") from None
        return _VERDICTS.get(reply.status, Verdict.RETRY)

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
