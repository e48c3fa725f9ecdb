"""Auto-pipelining for Redis: the commands of calls made in one loop pass go out as
one pipeline, each call keeping its own result and its own error.

Under load many calls are waiting on the loop at once; sending each as its own
round trip costs Redis a read and a write per command and the sidecar a wake-up per
reply. Batching them the way ioredis' auto-pipelining does cuts both. A call that
arrives alone still goes out at once, in the next loop pass.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors

from layotto_fast.components.redis_client import BACKEND_ERRORS, Client, RedisConfig

Command = tuple[Any, ...]


class Script:
    """A Lua script run by its SHA, loaded again when Redis has forgotten it (a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class AutoPipeline:
    def __init__(self, client: Client, config: RedisConfig) -> None:
        self._client = client
        self._config = config
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, command: Command) -> asyncio.Future[Any]:
        """Queue ``command``; the future gets its reply, or raises its error."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((command, future))
        return future

    async def gather(self, commands: Sequence[Command]) -> list[Any]:
        """Every reply, in order: one round trip where the backend allows."""
        return list(await asyncio.gather(*(self.call(command) for command in commands)))

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        try:
            return await self.call(("EVALSHA", script.sha, len(keys), *keys, *args))
        except redis_errors.NoScriptError:
            try:
                await self._client.script_load(script.source)
            except BACKEND_ERRORS as exc:
                raise self._config.unavailable(exc) from None
            return await self.call(("EVALSHA", script.sha, len(keys), *keys, *args))

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for command, _ in batch:
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
            raise
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller went away (cancelled)
                continue
            if isinstance(reply, BACKEND_ERRORS):
                future.set_exception(self._config.unavailable(reply))
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
