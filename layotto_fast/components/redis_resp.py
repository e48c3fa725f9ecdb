"""RESP on one connection: commands packed (by hand for the hot ones, by hiredis
otherwise), replies parsed by hiredis and handed to their callers in order, and the
reply errors turned into redis-py's kinds. The pipelines in ``redis_pipeline`` batch
over it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import hiredis
from redis import exceptions as redis_errors

from layotto_fast.components.redis_client import BACKEND_ERRORS, RedisConfig

Command = tuple[Any, ...]


def bulk(value: bytes) -> bytes:
    """One RESP bulk string.

    The hot commands of a single node are written in RESP by hand: hiredis' packer
    costs about 1 µs per command (3.2 µs for a SaveState's writes against 0.9 µs
    assembled here), more than the rest of the component's work for a call.
    """
    size = len(value)
    return (_BULK_HEADS[size] if size < 256 else b"$%d\r\n" % size) + value + b"\r\n"


_BULK_HEADS = [b"$%d\r\n" % size for size in range(256)]  # most keys are short


MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"


class Transaction:
    """Commands in RESP sent as MULTI ... EXEC; only EXEC's reply is wanted, or the error
    Redis gave a command as it queued it (then EXEC's is only EXECABORT).

    Redis runs the queued commands with no other client's command between them, for
    about half the CPU of a Lua script doing the same writes (measured here, 20 in a batch).
    """

    __slots__ = ("packed", "skipped")

    def __init__(self, packed: bytes, count: int) -> None:
        """``packed``: MULTI, ``count`` commands and EXEC, each in RESP."""
        self.packed = packed
        self.skipped = _SKIPPED[count] if count < len(_SKIPPED) else (None,) * (count + 1)


# The replies before EXEC's (OK, then QUEUED per command), by the number of commands.
_SKIPPED = [(None,) * (count + 1) for count in range(16)]


def raise_replied(replies: list[Any]) -> list[Any]:
    """``replies`` of a transaction, or the first error among them raised as redis-py's kind."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply_error(reply) if isinstance(reply, ReplyError) else reply
    return replies


def pack(command: Command | Transaction | bytes) -> bytes:
    if type(command) is bytes:
        return command
    if isinstance(command, Transaction):
        return command.packed
    packed: bytes = hiredis.pack_command(cast(Any, command))
    return packed


def fail(future: asyncio.Future[Any], error: Exception, config: RedisConfig) -> None:
    if isinstance(error, BACKEND_ERRORS) and not isinstance(error, redis_errors.ResponseError):
        future.set_exception(config.unavailable(error))
    else:
        future.set_exception(error)


class ReplyError(redis_errors.ResponseError):
    """What hiredis builds for an error reply; turned into redis-py's kinds below."""


def reply_error(error: ReplyError) -> redis_errors.RedisError:
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return redis_errors.NoScriptError(message)
    if message.startswith(("LOADING", "MASTERDOWN", "READONLY")):
        return redis_errors.BusyLoadingError(message)
    return redis_errors.ResponseError(message)


class RespConnection(asyncio.Protocol):
    """One connection: writes packed batches, hands each parsed reply to the oldest waiter."""

    def __init__(self, config: RedisConfig) -> None:
        self._config = config
        self._reader = hiredis.Reader(replyError=ReplyError)
        self.waiting: deque[asyncio.Future[Any] | None] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.reads = 0  # data_received calls: the read timeout's sign of progress
        self.watched = False  # a read-timeout watch is armed
        # The first error Redis gave a command of a transaction as it queued it (READONLY,
        # OOM...): EXEC then only answers EXECABORT, so its caller gets this one instead.
        self.queue_error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader, waiting, config = self._reader, self.waiting, self._config
        self.reads += 1
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.abort(redis_errors.ConnectionError("redis sent a reply no command was waiting for"))
                return
            future = waiting.popleft()
            if future is None:  # MULTI's OK or a command's QUEUED, inside a transaction
                if isinstance(reply, Exception) and self.queue_error is None:
                    self.queue_error = reply
                continue
            if isinstance(reply, Exception):  # hiredis' error replies; EXEC's array holds its own
                if self.queue_error is not None:  # EXEC's EXECABORT: the error that caused it
                    reply, self.queue_error = self.queue_error, None
                if not future.done():  # the caller may have gone away
                    fail(future, reply_error(reply) if isinstance(reply, ReplyError) else reply, config)
            elif not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        # an abort() of ours already says why; otherwise the socket's error, or the server closed it
        self.lost = self.lost or exc or redis_errors.ConnectionError("connection closed by the server")
        error = self._config.unavailable(self.lost)
        while self.waiting:
            future = self.waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(error)

    def abort(self, reason: BaseException) -> None:
        self.lost = reason
        if self.transport is not None:
            self.transport.abort()
