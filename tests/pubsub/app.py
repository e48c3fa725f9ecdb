"""An application's AppCallback server for pub/sub tests: it records every event and answers
each with the verdict a test chooses (SUCCESS unless told otherwise).

It runs grpcio's threaded server in the test process on a free loopback port; ``stop`` and
``start`` bring it back on the same port, for tests whose app goes away mid-run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf import empty_pb2

from layotto_fast._proto import appcallback_pb2 as pb
from layotto_fast._proto import appcallback_pb2_grpc
from tests.sidecar import free_port

SUCCESS, RETRY, DROP = 0, 1, 2
Verdict = Callable[[pb.TopicEventRequest], int]


@dataclass(frozen=True)
class Topic:
    pubsub_name: str
    topic: str
    metadata: dict[str, str] | None = None
    dead_letter_topic: str = ""


class CallbackApp(appcallback_pb2_grpc.AppCallbackServicer):
    def __init__(
        self,
        topics: list[Topic],
        verdict: Verdict | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        options: list[tuple[str, int]] | None = None,
    ) -> None:
        self.topics = topics
        self.host = host
        self.options = options or []  # the grpc server's
        self.verdict: Verdict = verdict or (lambda event: SUCCESS)
        self.port = port or free_port()
        self.events: list[pb.TopicEventRequest] = []
        self.listed = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: grpc.Server | None = None

    def ListTopicSubscriptions(self, request: empty_pb2.Empty, context: object) -> pb.ListTopicSubscriptionsResponse:
        with self._lock:
            self.listed += 1
        return pb.ListTopicSubscriptionsResponse(
            subscriptions=[
                pb.TopicSubscription(
                    pubsub_name=t.pubsub_name,
                    topic=t.topic,
                    metadata=t.metadata or {},
                    dead_letter_topic=t.dead_letter_topic,
                )
                for t in self.topics
            ]
        )

    def OnTopicEvent(self, request: pb.TopicEventRequest, context: object) -> pb.TopicEventResponse:
        status = self.verdict(request)
        with self._changed:
            self.events.append(request)
            self._changed.notify_all()
        return pb.TopicEventResponse(status=status)  # type: ignore[arg-type]

    def start(self) -> CallbackApp:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=self.options)
        appcallback_pb2_grpc.add_AppCallbackServicer_to_server(self, server)
        server.add_insecure_port(f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    def __enter__(self) -> CallbackApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self, topic: str | None = None) -> list[pb.TopicEventRequest]:
        with self._lock:
            return [e for e in self.events if topic is None or e.topic == topic]

    def ids(self, topic: str | None = None) -> Counter[str]:
        return Counter(e.id for e in self.received(topic))

    def wait_for(
        self, done: Callable[[list[pb.TopicEventRequest]], bool], timeout: float = 10.0
    ) -> list[pb.TopicEventRequest]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s with {len(self.events)} events received")
                self._changed.wait(left)
            return list(self.events)
