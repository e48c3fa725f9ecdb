"""A Bolt upstream whose misbehaviour a test chooses: echo, answer late, close mid-request,
answer an id it was never sent. A test double for faults only; interop runs against
anthunder and SOFARPC providers.

It runs its own event loop on a thread, so a test's blocking client calls can use it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import layotto_fast_native as native

HEARTBEAT = 0
RESPONSE = 0  # Bolt's type byte
CALLBACK_ID = 777


class FaultUpstream:
    """Modes: echo, close (drops the connection on a request), silent (never answers a
    request), mute (never answers anything, heartbeats included), unknown (answers an id it
    was never sent), split (echo, each answer written in two pieces a few ms apart, the
    n-th request's cut at byte n of the answer), callback (echo, after calling the client
    back on the connection first: a request and a oneway, as a provider may); ``delay`` seconds before each answer,
    ``heartbeat_delay`` before each heartbeat's. The connections numbered in ``wedged``
    (1 is the first accepted) answer nothing, whatever the mode: a dropped route, say.
    While ``paused``, no connection is read (what is sent piles up in the kernel, then in
    the sender). ``slow`` seconds before each request's answer, the connection serving
    heartbeats and other requests meanwhile: a slow service on a responsive server."""

    def __init__(self) -> None:
        self.mode = "echo"
        self.delay = 0.0
        self.heartbeat_delay = 0.0
        self.slow = 0.0
        self.paused = False
        self._answering: set[asyncio.Task[None]] = set()
        self.wedged: set[int] = set()
        self.connections = 0  # accepted so far
        self.requests = 0
        self.request_types: list[int] = []  # Bolt's type of each request: 1 two-way, 2 oneway
        self.request_headers: list[dict[str, str]] = []  # the header map of each request
        self.callback_answers: list[tuple[int, int]] = []  # (request id, status) of the callbacks answered
        self.heartbeats = 0
        self.open_connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self, port: int = 0) -> FaultUpstream:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(port), self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _listen(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        splitter = native.FrameSplitter("bolt")
        self.open_connections += 1
        self.connections += 1
        number = self.connections
        try:
            while True:
                while self.paused:
                    await asyncio.sleep(0.01)
                data = await reader.read(65536)
                if not data:
                    break
                for frame in splitter.feed(data):
                    if frame[1] == RESPONSE:  # to a callback of ours
                        request_id, _, _, status, *_ = native.decode_bolt_response(bytes(frame))
                        self.callback_answers.append((request_id, status))
                    elif number not in self.wedged:
                        await self._answer(bytes(frame), writer)
        except (ConnectionError, native.FrameError, asyncio.CancelledError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()

    async def _answer(self, frame: bytes, writer: asyncio.StreamWriter) -> None:
        request_id, request_type, cmdcode, codec, _, _, header, content = native.decode_bolt_request(frame)
        if self.mode == "mute":  # answers nothing, heartbeats included
            return
        if cmdcode == HEARTBEAT:
            self.heartbeats += 1
            if self.heartbeat_delay:
                await asyncio.sleep(self.heartbeat_delay)
            writer.write(native.encode_bolt_heartbeat_ack(request_id))
            return
        self.requests += 1
        self.request_types.append(request_type)
        self.request_headers.append(dict(header))
        if self.mode == "close":
            writer.transport.abort()
            return
        if self.mode == "silent":
            return
        if self.mode == "unknown":
            request_id += 1_000_000
        if self.mode == "callback":
            writer.write(native.encode_bolt_request(CALLBACK_ID, codec, 1000, "", {"service": "back"}, b"?"))
            writer.write(native.encode_bolt_request(CALLBACK_ID + 1, codec, -1, "", {}, b"!", oneway=True))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.slow:
            later = asyncio.create_task(self._answer_later(self.slow, request_id, codec, header, content, writer))
            self._answering.add(later)
            later.add_done_callback(self._answering.discard)
            return
        answer = {"upstream": str(self.port), **header}
        response = bytes(native.encode_bolt_response(request_id, codec, 0, "", answer, content))
        if self.mode == "split":
            cut = 1 + (self.requests - 1) % (len(response) - 1)
            writer.write(response[:cut])
            await writer.drain()
            await asyncio.sleep(0.003)  # the rest comes in a later segment, read on its own
            response = response[cut:]
        writer.write(response)

    async def _answer_later(self, seconds: float, request_id: int, codec: int, header: dict[str, str],
                            content: bytes, writer: asyncio.StreamWriter) -> None:  # fmt: skip
        await asyncio.sleep(seconds)
        answer = {"upstream": str(self.port), **header}
        writer.write(bytes(native.encode_bolt_response(request_id, codec, 0, "", answer, content)))

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._serving):
                task.cancel()
            await asyncio.gather(*self._serving, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Polls ``condition`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition never held")


@contextmanager
def fault_upstream() -> Iterator[FaultUpstream]:
    upstream = FaultUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


class BoltClient:
    """A blocking Bolt client of raw frames, for tests that need exact bytes on the wire."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self._splitter = native.FrameSplitter("bolt")
        self._frames: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def request(
        request_id: int, service: str, content: bytes = b"hi", headers: dict[str, str] | None = None,
        timeout_ms: int = 0,  # none of its own: the route's timeout applies (a Bolt request's would win)
    ) -> bytes:  # fmt: skip
        header = {"service": service, **(headers or {})}
        return bytes(native.encode_bolt_request(request_id, 1, timeout_ms, "", header, content))

    def responses(self, count: int) -> list[tuple[int, int, dict[str, str], bytes]]:
        """The next ``count`` responses: (request id, status, header, content)."""
        while len(self._frames) < count:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed after {len(self._frames)} of {count} responses")
            self._frames += [bytes(f) for f in self._splitter.feed(data)]
        taken, self._frames = self._frames[:count], self._frames[count:]
        out = []
        for frame in taken:
            request_id, _, _, status, _, header, content = native.decode_bolt_response(frame)
            out.append((request_id, status, header, content))
        return out

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
