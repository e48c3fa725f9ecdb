"""A SubscribeTopicEvents stream held by a test: read on a thread, answered by event id."""

from __future__ import annotations

import queue
import threading
from typing import Any

import grpc

from layotto_fast._proto import appcallback_pb2
from layotto_fast._proto import runtime_pb2 as pb
from tests.sidecar import Sidecar


def subscription(
    pubsub: str, topic: str, dead_letter_topic: str | None = None, metadata: dict[str, str] | None = None
) -> pb.SubscribeTopicEventsRequest:
    """The first request of a stream: the subscription it asks for."""
    initial = pb.SubscribeTopicEventsRequestInitial(
        pubsub_name=pubsub, topic=topic, metadata=metadata or {}, dead_letter_topic=dead_letter_topic
    )
    return pb.SubscribeTopicEventsRequest(initial_request=initial)


class TopicEventStream:
    """Everything the sidecar sends arrives in ``received``, in order: ``"initial_response"``,
    each event message, then ``"ended"`` or the stream's ``grpc.RpcError``."""

    def __init__(self, sidecar: Sidecar, first: pb.SubscribeTopicEventsRequest, timeout: float = 30.0) -> None:
        self._requests: queue.Queue[pb.SubscribeTopicEventsRequest | None] = queue.Queue()
        self.received: queue.Queue[Any] = queue.Queue()
        self._requests.put(first)
        self._responses = sidecar.stub().SubscribeTopicEvents(iter(self._requests.get, None), timeout=timeout)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def subscribed(cls, sidecar: Sidecar, first: pb.SubscribeTopicEventsRequest) -> TopicEventStream:
        """A stream whose subscription the sidecar has confirmed."""
        stream = cls(sidecar, first)
        assert stream.next() == "initial_response"
        return stream

    def _read(self) -> None:
        try:
            for response in self._responses:
                kind = response.WhichOneof("subscribe_topic_events_response_type")
                self.received.put(kind if kind == "initial_response" else response.event_message)
            self.received.put("ended")
        except grpc.RpcError as error:
            self.received.put(error)

    def next(self, timeout: float = 10.0) -> Any:
        """What came next; the stream failing fails the test."""
        item = self.received.get(timeout=timeout)
        assert not isinstance(item, grpc.RpcError), f"the stream ended: {item.code()} {item.details()}"
        return item

    def answer(self, event_id: str, status: int) -> None:
        processed = pb.SubscribeTopicEventsRequestProcessed(
            id=event_id,
            status=appcallback_pb2.TopicEventResponse(status=status),  # type: ignore[arg-type]
        )
        self._requests.put(pb.SubscribeTopicEventsRequest(event_processed=processed))

    def close(self) -> None:
        self._requests.put(None)
        self._responses.cancel()
        self._reader.join(5.0)
