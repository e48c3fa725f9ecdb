"""The app's ``AppCallback`` gRPC server, dialled by the sidecar: events out, verdicts back.

Only translation lives here (runtime events to ``TopicEventRequest``, statuses to
verdicts); what to do with a verdict is the pub/sub service's.

Calls go through the native client (``layotto_fast_native.GrpcClient``: h2 on a Rust
thread of its own), not grpcio's asyncio client: that one costs about 220 µs of CPU per
call, most of a delivery, and its polling thread would run in every sidecar beside the
native front. The calls of one loop pass are handed to it together (one wake-up of its
thread), and a delivery's time limit is the call's own deadline there, not a timer on
the loop. The client reports the end of each connection; a subscription cycle ends when
the connection its listing came over is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Sequence

import grpc
from layotto_fast_native import GrpcClient

from layotto_fast._proto import appcallback_pb2 as pb
from layotto_fast.errors import Unavailable
from layotto_fast.runtime.cloudevents import Event
from layotto_fast.runtime.pubsub import Verdict
from layotto_fast.runtime.pubsub_service import TopicSubscription

log = logging.getLogger(__name__)

SERVICE = "/spec.proto.runtime.v1.AppCallback"
ON_TOPIC_EVENT = f"{SERVICE}/OnTopicEvent"
LIST_TIMEOUT_MS = 5_000
CONNECTION_LOST = 0  # the client's token for "a connection ended"
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
_VERDICTS = {int(v): v for v in Verdict}
_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class AppCallError(Unavailable):
    def __init__(self, address: str, status: int, detail: str) -> None:
        super().__init__(f"app at {address}: {_STATUS_NAMES.get(status, str(status))}: {detail}")
        self.status = status


class GrpcAppChannel:
    def __init__(self, host: str, port: int, keepalive_seconds: float = 0.0) -> None:
        self.address = f"{host}:{port}"
        self._keepalive_ms = round(keepalive_seconds * 1000)
        self._client: GrpcClient | None = None
        self._waiting: dict[int, asyncio.Future[tuple[int, str, bytes]]] = {}
        self._tokens = itertools.count(1)
        self._outbox: list[tuple[int, str, bytes, int]] = []  # this pass's calls, not yet handed over
        self._losses = 0  # connections ended so far
        self._listed_at = 0  # the count when the subscriptions were last asked for
        self._loss_waiters: list[asyncio.Future[None]] = []

    def _native(self) -> GrpcClient:
        if self._client is None:
            self._client = GrpcClient(self.address, self._keepalive_ms)
            asyncio.get_running_loop().add_reader(self._client.completions_fd(), self._finished)
        return self._client

    def _finished(self) -> None:
        assert self._client is not None
        for token, status, detail, message in self._client.take_completions():
            if token == CONNECTION_LOST:
                log.info("app at %s: %s", self.address, detail)
                self._losses += 1
                for waiter in self._loss_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._loss_waiters.clear()
                continue
            future = self._waiting.pop(token, None)
            if future is not None and not future.done():
                future.set_result((status, detail, message))

    async def _call(self, path: str, message: bytes, timeout_ms: int) -> bytes:
        token = next(self._tokens)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, str, bytes]] = loop.create_future()
        self._waiting[token] = future
        if not self._outbox:
            loop.call_soon(self._hand_over)
        self._outbox.append((token, path, message, timeout_ms))
        try:
            status, detail, answer = await future
        finally:
            self._waiting.pop(token, None)
        if status:
            raise AppCallError(self.address, status, detail)
        return answer

    def _hand_over(self) -> None:
        calls, self._outbox = self._outbox, []
        try:
            self._native().call_many(calls)
        except Exception as exc:  # closed meanwhile, or no client could be made: the calls fail now
            for token, _, _, _ in calls:
                future = self._waiting.pop(token, None)
                if future is not None and not future.done():
                    future.set_exception(Unavailable(f"app at {self.address}: {exc}"))

    async def list_subscriptions(self) -> Sequence[TopicSubscription]:
        self._listed_at = self._losses
        try:
            answer = await self._call(f"{SERVICE}/ListTopicSubscriptions", b"", LIST_TIMEOUT_MS)
        except AppCallError as exc:
            if exc.status == grpc.StatusCode.UNIMPLEMENTED.value[0]:
                return []  # an app that subscribes to nothing
            raise
        return [
            TopicSubscription(
                pubsub_name=s.pubsub_name,
                topic=s.topic,
                metadata=dict(s.metadata),
                dead_letter_topic=s.dead_letter_topic,
            )
            for s in pb.ListTopicSubscriptionsResponse.FromString(answer).subscriptions
        ]

    async def deliver(self, event: Event, timeout: float) -> Verdict:
        """The app's verdict on ``event``; TimeoutError when it gave none within ``timeout`` s."""
        message = event_message(event).SerializeToString()
        try:
            answer = await self._call(ON_TOPIC_EVENT, message, max(1, math.ceil(timeout * 1000)))
        except AppCallError as exc:
            if exc.status == DEADLINE_EXCEEDED:
                raise TimeoutError(exc.message) from None
            raise
        if not answer:  # status SUCCESS (0) and nothing else: the usual answer, not parsed
            return Verdict.SUCCESS
        return _VERDICTS.get(pb.TopicEventResponse.FromString(answer).status, Verdict.RETRY)

    async def lost(self) -> None:
        while self._losses <= self._listed_at:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._loss_waiters.append(waiter)
            await waiter

    async def close(self) -> None:
        if self._client is not None:
            asyncio.get_running_loop().remove_reader(self._client.completions_fd())
            self._client.close()
            self._client = None


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
