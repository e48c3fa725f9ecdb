"""Publishing to JetStream and waiting for its PubAck, over one reply subscription.

nats-py's ``JetStreamContext.publish`` goes through ``Client.request``, which reads two bytes
of the OS's randomness (``secrets.token_hex``) and runs ``asyncio.wait_for`` for every
message: measured here, about a quarter of the loop's time under a publish-only load. Here
every reply goes to one wildcard inbox of the connection, and a counter tells them apart.
nats-py subscribes it again after a reconnect; a publish whose PubAck was lost meanwhile
times out, as before. Every publish waits the same time, so their deadlines come in the
order they were sent: one loop timer at the oldest serves them all (a timer per publish,
made and cancelled, cost more than the rest of this module's work for it).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Mapping

import orjson
from nats import errors as nats_errors
from nats.aio.client import NO_RESPONDERS_STATUS, Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js import errors as js_errors


class PubAcks:
    """The publishes of one connection that wait for their PubAck."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._deadlines: deque[tuple[float, asyncio.Future[Msg]]] = deque()  # oldest first
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        inbox = self._nc.new_inbox()
        await self._nc.subscribe(f"{inbox}.*", cb=self._answer)
        self._prefix = f"{inbox}."

    async def _answer(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, subject: str, data: bytes, headers: Mapping[str, str] | None) -> None:
        """Once JetStream has stored the message. NoStreamResponseError when no stream takes
        ``subject``, APIError when JetStream refused it, nats' TimeoutError after the timeout,
        MaxPayloadError when the data and its headers are more than the server takes."""
        assert self._prefix, "start() first"
        fields = dict(headers) if headers else None
        size = len(data) + (_header_bytes(fields) if fields else 0)
        if size > self._nc.max_payload:
            # nats-py checks the data alone; nats-server counts the headers too, and closes the
            # connection over a message it refuses, a close nats-py never comes back from.
            raise nats_errors.MaxPayloadError
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = self._loop.create_future()
        self._waiting[token] = future
        # A deadline in the queue, not asyncio.timeout(): the gRPC front runs a call's first
        # steps outside any Task.
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():  # answered: only the unanswered are kept
            deadlines.popleft()
        deadlines.append((self._loop.time() + self._timeout, future))
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout, self._expire)
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=fields)
            reply = await future
        finally:
            self._waiting.pop(token, None)
            if not future.done():  # the send itself failed: no timeout is due to anyone
                future.cancel()
        if reply.headers and reply.headers.get(api.Header.STATUS) == NO_RESPONDERS_STATUS:
            raise js_errors.NoStreamResponseError
        if b'"error"' in reply.data:  # a plain PubAck ({"stream": ..., "seq": ...}) is not parsed
            answer = orjson.loads(reply.data)
            if "error" in answer:
                raise js_errors.APIError.from_error(answer["error"])

    def _expire(self) -> None:
        """Fail the publishes past their deadline; wait for the next oldest."""
        self._timer = None
        deadlines, now = self._deadlines, self._loop.time()
        while deadlines:
            deadline, future = deadlines[0]
            if not future.done():
                if deadline > now:
                    self._timer = self._loop.call_at(deadline, self._expire)
                    return
                future.set_exception(nats_errors.TimeoutError())
            deadlines.popleft()


def _header_bytes(headers: Mapping[str, str]) -> int:
    """At most what nats-py writes for ``headers``: a version line, "key: value" lines, a blank line."""
    return len(b"NATS/1.0\r\n\r\n") + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
