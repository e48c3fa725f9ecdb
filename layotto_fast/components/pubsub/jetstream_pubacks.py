"""Publishing to JetStream and waiting for its PubAck, over one reply subscription.

nats-py's ``JetStreamContext.publish`` goes through ``Client.request``, which reads two bytes
of the OS's randomness (``secrets.token_hex``) and runs ``asyncio.wait_for`` for every
message: measured here, about a quarter of the loop's time under a publish-only load. Here
every reply goes to one wildcard inbox of the connection, and a counter tells them apart.
nats-py subscribes it again after a reconnect; a publish whose PubAck was lost meanwhile
times out, as before.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping

import orjson
from nats import errors as nats_errors
from nats.aio.client import NO_RESPONDERS_STATUS, Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js import errors as js_errors


class PubAcks:
    """The publishes of one connection that wait for their PubAck."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        inbox = self._nc.new_inbox()
        await self._nc.subscribe(f"{inbox}.*", cb=self._answer)
        self._prefix = f"{inbox}."

    async def _answer(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, subject: str, data: bytes, headers: Mapping[str, str] | None, timeout: float) -> None:
        """Once JetStream has stored the message. NoStreamResponseError when no stream takes
        ``subject``, APIError when JetStream refused it, nats' TimeoutError after ``timeout``."""
        assert self._prefix, "start() first"
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = self._loop.create_future()
        self._waiting[token] = future
        # A timer, not asyncio.timeout(): the gRPC front runs a call's first steps outside any Task.
        timer = self._loop.call_later(timeout, _expire, future)
        fields = dict(headers) if headers else None
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=fields)
            reply = await future
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        if reply.headers and reply.headers.get(api.Header.STATUS) == NO_RESPONDERS_STATUS:
            raise js_errors.NoStreamResponseError
        answer = orjson.loads(reply.data)
        if "error" in answer:
            raise js_errors.APIError.from_error(answer["error"])


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats_errors.TimeoutError())
