"""The pub/sub building block: what a component does, and the records it trades in.

A component stores and hands back opaque message bytes (the service wraps them in a
CloudEvents envelope before publishing). Delivery is at least once: a component calls
the subscription's handler for every message and acts on the verdict it returns:

- ``SUCCESS``: acknowledge in the backend; the message is done.
- ``DROP``: the subscriber gave the message up; discard it (JetStream terminates it, Redis
  acknowledges it: it has nothing else to discard with, in-memory forgets it).
- ``RETRY``, or the handler raising: do not acknowledge; the backend gives it again later
  (Redis Streams by claiming it once pending too long, JetStream after its ack wait,
  in-memory after a short pause).

Retries with backoff and dead-letter topics are the service's (``pubsub_service``): a
component sees a RETRY only once the service's own attempts are spent.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from layotto_fast.errors import Unavailable
from layotto_fast.runtime.component import Component


class Verdict(enum.IntEnum):
    """A subscriber's answer to one message; the numbers are the wire's (TopicEventResponse)."""

    SUCCESS = 0
    RETRY = 1
    DROP = 2


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a backend gave it: ``data`` is what was published, byte for byte."""

    topic: str
    data: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)
    delivery_count: int = 1  # how many times the backend has handed it out, this time included


Handler = Callable[[Message], Awaitable[Verdict]]


class SubscriberGone(Unavailable):
    """Raised for a delivery whose subscriber went away (a stream that ended) before it
    answered: no verdict on the message, which goes back to its backend for the group's
    other members, neither tried again here nor sent to a dead-letter topic."""


@dataclass(frozen=True, slots=True)
class SubscribeOptions:
    """How a component reads one topic for one subscription."""

    group: str = ""  # the consumer group (Redis Streams) or durable consumer (JetStream); "" = the component's
    concurrency: int = 0  # messages handed to the handler at once; 0 = the component's default
    metadata: Mapping[str, str] = field(default_factory=dict)


# Seconds an unsubscribe given no deadline lets the handler calls in flight finish. A stop of
# the sidecar gives one: what is left of its shutdown grace (PubSubService.close).
DRAIN_SECONDS = 1.0


class Unsubscribe(Protocol):
    async def __call__(self, deadline: float | None = None) -> None:
        """Stop reading: no handler call starts after this returns; unacknowledged messages stay.

        The handler calls in flight may finish until ``deadline``, a time on the running loop's
        clock (``loop.time()``); None means DRAIN_SECONDS from now, and a deadline already past
        lets none finish. The calls still running then are cancelled, their messages left
        unacknowledged for the backend to hand out again. The verdicts given by then are sent
        to the backend before this returns, even if that takes a moment past ``deadline``:
        the component's connection may close right after. Calling it again does no harm.
        """
        ...


class PubSub(Component, Protocol):
    async def publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        """Return once the backend has accepted the message (durable as far as it promises)."""
        ...

    async def subscribe(self, topic: str, options: SubscribeOptions, handler: Handler) -> Unsubscribe:
        """Start handing ``topic``'s messages to ``handler``; raise when the backend refuses."""
        ...


# Metadata keys a publisher or subscriber may set that the components read.
PARTITION_KEY = "partitionKey"  # messages with one key are handed over in order, one at a time
