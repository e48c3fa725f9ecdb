"""One gRPC transport serving test handlers in-process, on a uvloop thread of its own.

``kind`` is ``native``, ``native-task`` (the native transport with every unary call
in a Task, the design it is measured against) or ``grpcio``. The Runtime service's
descriptor gives the rpc shapes; the handler object answers whichever it defines.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import uvloop

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.api.stats import CallStats
from layotto_fast.api.transport_grpcio import build_server
from layotto_fast.api.transport_native import NativeGrpcServer
from tests.sidecar import free_port

SERVICE = pb.DESCRIPTOR.services_by_name["Runtime"]
KINDS = ["native", "native-task", "grpcio"]


class InProcessServer:
    def __init__(
        self,
        kind: str,
        handlers: Any,
        max_message_bytes: int = 64 * 1024,
        stats: CallStats | None = None,
        **native_options: Any,
    ) -> None:
        self.kind, self.handlers = kind, handlers
        self.stats = stats if stats is not None else CallStats()
        self.port = free_port()
        self._max_message_bytes = max_message_bytes
        self._native_options = native_options
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: uvloop.run(self._serve()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), f"the {kind} server did not start"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server: Any
        services = [(SERVICE, self.handlers)]
        if self.kind.startswith("native"):
            options = {"inline_unary": self.kind == "native", **self._native_options}
            server = NativeGrpcServer(services, self._max_message_bytes, stats=self.stats, **options)
            await server.start([self.target])
        else:
            server = build_server(services, [self.target], self._max_message_bytes, stats=self.stats)
            await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(1.0)
        # Failed calls leave cycles (exception, traceback, task) that reach a connection
        # object, which must be freed on the thread that made it: collect them here.
        gc.collect()

    def close(self) -> None:
        """Stop the server the way SIGTERM does: GOAWAY, then up to 1 s for calls in flight."""
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
