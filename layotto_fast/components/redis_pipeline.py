"""Auto-pipelining for Redis: the commands of calls made in one loop pass go out as
one pipeline, each call keeping its own result and its own error.

Under load many calls are waiting on the loop at once; sending each as its own
round trip costs Redis a read and a write per command and the sidecar a wake-up per
reply. Batching them the way ioredis' auto-pipelining does cuts both. A call that
arrives alone still goes out at once, in the next loop pass.

On a single node the batch goes over one connection of our own: commands packed
and replies parsed by hiredis (C), one write per pass, replies matched to callers
in order. Measured here, redis-py's own client spends about 190 µs of CPU per
command at one in flight (its pool, retry, timeout and event hooks run per call),
which alone is six times the sidecar's whole budget for a call; redis-py still does
everything else (health pings, pub/sub, scripts, the cluster, whose batches go
through its cluster pipeline, which routes each command to its slot's master).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as redis_errors

from layotto_fast.components.redis_client import BACKEND_ERRORS, Client, RedisConfig, ping
from layotto_fast.components.redis_resp import Command, RespConnection, Transaction, fail, pack

# Commands queued in one loop pass, each with its caller's future.
Batch = list[tuple[Command | Transaction | bytes, asyncio.Future[Any]]]


class Script:
    """A Lua script run by its SHA, loaded again when Redis has forgotten it (a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class AutoPipeline:
    """Queue commands; a subclass sends each loop pass's queue as one batch."""

    # Whether ``transaction`` is offered (a single node; a cluster spreads the keys over nodes).
    transactions = False

    def __init__(self, config: RedisConfig) -> None:
        self._config = config
        self._queue: Batch = []
        # Made on the loop it serves. Kept, because asyncio.get_running_loop() makes a
        # getpid() system call on every call (its fork check).
        self._loop = asyncio.get_running_loop()

    def call(self, command: Command | Transaction | bytes) -> asyncio.Future[Any]:
        """Queue ``command``; the future gets its reply, or raises its error."""
        loop = self._loop
        future = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((command, future))
        return future

    def transaction(self, packed: bytes, count: int) -> asyncio.Future[Any]:
        """MULTI, ``count`` commands and EXEC, in RESP (``packed``), run as one transaction: the
        future gets EXEC's replies, in which an error is an exception object (``raise_replied``
        raises the first)."""
        return self.call(Transaction(packed, count))

    async def gather(self, commands: Sequence[Command], errors_in_place: bool = False) -> list[Any]:
        """Every reply, in order: one round trip where the backend allows. The first error
        raises, or with ``errors_in_place`` stands in its command's place."""
        calls = (self.call(command) for command in commands)
        return list(await asyncio.gather(*calls, return_exceptions=errors_in_place))

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        try:
            return await self.call(("EVALSHA", script.sha, len(keys), *keys, *args))
        except redis_errors.NoScriptError:
            await self.call(("SCRIPT", "LOAD", script.source))
            return await self.call(("EVALSHA", script.sha, len(keys), *keys, *args))

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self._send(batch)

    def _send(self, batch: Batch) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def pipeline_for(client: Client, config: RedisConfig) -> AutoPipeline:
    return ClusterPipeline(client, config) if config.cluster else NodePipeline(config)


def _settle(future: asyncio.Future[Any], reply: Any, config: RedisConfig) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    if isinstance(reply, Exception):
        fail(future, reply, config)
    else:
        future.set_result(reply)


class NodePipeline(AutoPipeline):
    transactions = True

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(config)
        self._connection: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def _send(self, batch: Batch) -> None:
        connection = self._connection
        if connection is None or connection.lost is not None:
            if self._closed:  # a call queued before close() is flushed after it: it must open nothing
                error = self._config.unavailable(redis_errors.ConnectionError("the component is closed"))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            task = self._loop.create_task(self._send_after_connect(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._write(connection, batch)

    def _write(self, connection: RespConnection, batch: Batch) -> None:
        try:
            data = b"".join([pack(command) for command, _ in batch])
        except (TypeError, hiredis.HiredisError) as exc:  # a value that is not bytes, str or a number
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        waiting = connection.waiting
        for command, future in batch:
            if type(command) is Transaction:
                waiting.extend(command.skipped)
            waiting.append(future)
        assert connection.transport is not None
        connection.transport.write(data)
        if self._config.read_timeout and not connection.watched:
            # One watch per connection while replies are awaited, not a timer per batch: a
            # timer each cost about 3 µs of CPU per call under load (made, then fired later).
            connection.watched = True
            self._loop.call_later(self._config.read_timeout, self._watch, connection, connection.reads)

    def _watch(self, connection: RespConnection, reads_before: int) -> None:
        """A read timeout later: nothing read since, with commands written before still
        unanswered, means Redis has not answered for at least the timeout."""
        if connection.lost is not None or not connection.waiting:
            connection.watched = False
            return
        if connection.reads == reads_before:
            connection.watched = False
            connection.abort(redis_errors.TimeoutError(f"no reply within {self._config.read_timeout:g} s"))
            return
        self._loop.call_later(self._config.read_timeout, self._watch, connection, connection.reads)

    async def _send_after_connect(self, batch: Batch) -> None:
        try:
            connection = await self._connect()
        except BaseException as exc:
            error = self._config.unavailable(exc) if isinstance(exc, Exception) else exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        if connection.lost is not None:  # lost after it opened, before this turn: nobody would answer
            error = self._config.unavailable(connection.lost)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self._write(connection, batch)

    async def _connect(self) -> RespConnection:
        connection = self._connection
        if connection is not None and connection.lost is None:  # made since this call's batch found none
            return connection
        if self._connecting is None or self._connecting.done():
            self._connecting = self._loop.create_task(self._open_and_keep())
        return await asyncio.shield(self._connecting)

    async def _open_and_keep(self) -> RespConnection:
        connection = await self._open()
        if self._closed:  # wait_for can return a result that came with close()'s cancel
            connection.abort(redis_errors.ConnectionError("the component is closed"))
            raise redis_errors.ConnectionError("the component is closed")
        # Kept here, as the connect ends, not by its callers: they resume loop turns later,
        # and a batch flushed in between would find no connection and open a second one.
        self._connection = connection
        return connection

    async def _open(self) -> RespConnection:
        config = self._config
        loop = asyncio.get_running_loop()
        tls = ssl.create_default_context() if config.tls else None
        _, connection = await asyncio.wait_for(
            loop.create_connection(lambda: RespConnection(config), config.host, config.port, ssl=tls),
            config.dial_timeout or None,
        )
        greeting: list[Command] = []
        if config.username and config.password:
            greeting.append(("AUTH", config.username, config.password))
        elif config.password:
            greeting.append(("AUTH", config.password))
        if config.db:
            greeting.append(("SELECT", config.db))
        if greeting:
            futures = [loop.create_future() for _ in greeting]
            connection.waiting.extend(futures)
            assert connection.transport is not None
            connection.transport.write(b"".join(hiredis.pack_command(command) for command in greeting))
            try:
                await asyncio.wait_for(asyncio.gather(*futures), config.read_timeout or None)
            except BaseException:
                connection.abort(redis_errors.ConnectionError("greeting failed"))
                raise
        return connection

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:  # a connect still going would open a connection nobody closes
            self._connecting.cancel()
            self._connecting = None
        for task in list(self._tasks):
            task.cancel()
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        self._connection = None


class ClusterPipeline(AutoPipeline):
    """Batches through redis-py's cluster pipeline, which sends each command to its slot's master."""

    def __init__(self, client: Client, config: RedisConfig) -> None:
        super().__init__(config)
        self._client = client
        self._tasks: set[asyncio.Task[None]] = set()

    def _send(self, batch: Batch) -> None:
        task = self._loop.create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: Batch) -> None:
        pipe = self._client.pipeline(transaction=False)
        for command, _ in batch:
            assert isinstance(command, tuple), "a cluster takes commands as tuples, routed by key"
            pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BACKEND_ERRORS as exc:
            error = self._config.unavailable(exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            _settle(future, reply, self._config)

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        try:
            return await self.call(("EVALSHA", script.sha, len(keys), *keys, *args))
        except redis_errors.NoScriptError:
            try:
                await self._client.script_load(script.source)  # on every master
            except BACKEND_ERRORS as exc:
                raise self._config.unavailable(exc) from None
            return await self.call(("EVALSHA", script.sha, len(keys), *keys, *args))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class PipelinedRedis:
    """The lifecycle every Redis component shares: a redis-py client (pings, scripts, the
    cluster) and the auto-pipeline its calls go through, both made by ``init``."""

    def __init__(self, config: RedisConfig) -> None:
        self._config = config
        self._client: Client | None = None
        self._pipeline: AutoPipeline | None = None

    async def init(self) -> None:
        if self._client is None:
            self._client = self._config.connect()
            self._pipeline = pipeline_for(self._client, self._config)
        await self.ping()

    async def ping(self) -> None:
        assert self._client is not None, "init() first"
        await ping(self._client, self._config)

    async def close(self) -> None:
        if self._client is not None:
            client, pipeline = self._client, self._pipeline
            self._client, self._pipeline = None, None
            if pipeline is not None:
                await pipeline.close()
            await client.aclose()
