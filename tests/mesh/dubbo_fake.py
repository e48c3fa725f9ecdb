"""A small Dubbo provider for mesh tests (a fake: it answers every request with its own
name, so that a test knows which host answered) and a raw Dubbo call.

``shut_down()`` sends the read-only event a Java provider sends on each connection as it
starts shutting down (the bytes are in ``native/src/dubbo.rs``'s tests)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from layotto_fast_native import decode_dubbo_response, encode_dubbo_request

SERVICE, VERSION = "com.example.EchoService", "1.0"
MAGIC = b"\xda\xbb"
HESSIAN2, REQUEST, TWO_WAY, EVENT = 0x02, 0x80, 0x40, 0x20
READ_ONLY_EVENT = MAGIC + bytes([REQUEST | EVENT | HESSIAN2, 0]) + struct.pack(">qi", 0, 2) + b"\x01R"


def _heartbeat_answer(request_id: int) -> bytes:
    return MAGIC + bytes([HESSIAN2 | EVENT, 20]) + struct.pack(">qi", request_id, 1) + b"N"  # a null body


def _response(request_id: int, text: str) -> bytes:
    body = b"\x91" + bytes([len(text)]) + text.encode()  # RESPONSE_VALUE, then a short string
    return MAGIC + bytes([HESSIAN2, 20]) + struct.pack(">qi", request_id, len(body)) + body


class NamedProvider:
    """Answers each request with its name and each heartbeat as a provider does;
    ``shut_down()`` sends the read-only event."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, port: int = 0) -> None:
        self.name, self.loop = name, loop
        self.silent = False  # reads requests and answers none
        self.mute = False  # answers nothing, heartbeats included
        self.heartbeats = 0
        self.writers: list[asyncio.StreamWriter] = []
        serving = asyncio.start_server(self._serve, "127.0.0.1", port)
        self.server = asyncio.run_coroutine_threadsafe(serving, loop).result(5)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readexactly(16)
                body = await reader.readexactly(struct.unpack(">i", head[12:16])[0])
                del body
                request_id = struct.unpack(">q", head[4:12])[0]
                if self.mute:
                    continue
                if head[2] & EVENT:
                    if head[2] & TWO_WAY:  # a heartbeat; the read-only event wants no answer
                        self.heartbeats += 1
                        writer.write(_heartbeat_answer(request_id))
                    continue
                if not self.silent:
                    writer.write(_response(request_id, self.name))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def shut_down(self) -> None:
        async def announce() -> None:
            for writer in self.writers:
                writer.write(READ_ONLY_EVENT)
                await writer.drain()

        asyncio.run_coroutine_threadsafe(announce(), self.loop).result(5)


@contextmanager
def named_providers(*names: str, port: int = 0) -> Iterator[list[NamedProvider]]:
    """Providers answering with their ``names``, served by one event loop on a thread (on
    ``port``, when one name is given and a port)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert port == 0 or len(names) == 1, "one port, one provider"
    try:
        yield [NamedProvider(name, loop, port) for name in names]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def request(request_id: int) -> bytes:
    """An ``echo("hi")`` call of the test service, as a Dubbo consumer sends it."""
    return encode_dubbo_request(request_id, SERVICE, VERSION, "echo", "Ljava/lang/String;", ["hi"])


def read_response(client: socket.socket) -> tuple[int, int, str, object]:
    """The next response on ``client``: (request id, status, outcome, value or message)."""
    head = client.recv(16, socket.MSG_WAITALL)
    if len(head) < 16:
        raise ConnectionError("the connection closed")
    frame = head + client.recv(struct.unpack(">i", head[12:16])[0], socket.MSG_WAITALL)
    status, outcome, value, _ = decode_dubbo_response(frame)
    return struct.unpack(">q", head[4:12])[0], status, outcome, value


def call(client: socket.socket, request_id: int) -> str:
    """One successful call's answer (the provider's name, or Java's echo)."""
    client.sendall(request(request_id))
    answered, status, outcome, value = read_response(client)
    assert (answered, status, outcome) == (request_id, 20, "value"), (answered, status, outcome, value)
    return str(value)


def mesh_config(port: int, hosts: list[str], route: dict[str, Any] | None = None,
                listener: dict[str, Any] | None = None,
                cluster: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A sidecar ``--config``: a Dubbo listener on ``port`` routing the test service to a
    cluster ``c`` of ``hosts``; ``route``, ``listener`` and ``cluster`` add to theirs."""
    routes = [{"name": "echo", "match": {"service": SERVICE, "version": VERSION}, "cluster": "c", **(route or {})}]
    return {
        "mesh": {
            "listeners": [
                {"name": "dubbo-in", "protocol": "dubbo", "address": f"127.0.0.1:{port}", **(listener or {}),
                 "routes": routes}
            ],
            "clusters": [{"name": "c", "protocol": "dubbo", "hosts": hosts, **(cluster or {})}],
        }
    }  # fmt: skip
