"""A Dubbo provider that says it is shutting down (the read-only event Java sends on each
connection first) gets no new requests from the mesh; its cluster's other hosts take them.

The two providers here are small asyncio servers of this test's own (fakes: they answer
every request with their name, and send the event when told), so that which host answered
and when the event went out are known exactly; the event's bytes are those a Java provider
sends (see ``native/src/dubbo.rs``)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from layotto_fast_native import decode_dubbo_response, encode_dubbo_request

from tests import sidecar as sidecar_process
from tests.mesh.fault_upstream import wait_for

SERVICE, VERSION = "com.example.EchoService", "1.0"
MAGIC = b"\xda\xbb"
HESSIAN2, REQUEST, EVENT = 0x02, 0x80, 0x20
READ_ONLY_EVENT = MAGIC + bytes([REQUEST | EVENT | HESSIAN2, 0]) + struct.pack(">qi", 0, 2) + b"\x01R"


def _response(request_id: int, text: str) -> bytes:
    body = b"\x91" + bytes([len(text)]) + text.encode()  # RESPONSE_VALUE, then a short string
    return MAGIC + bytes([HESSIAN2, 20]) + struct.pack(">qi", request_id, len(body)) + body


class NamedProvider:
    """Answers each request with its name; ``shut_down()`` sends the read-only event."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.loop = name, loop
        self.writers: list[asyncio.StreamWriter] = []
        self.server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", 0), loop).result(
            5
        )
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readexactly(16)
                body = await reader.readexactly(struct.unpack(">i", head[12:16])[0])
                del body
                if head[2] & EVENT:
                    continue  # a heartbeat: not needed here
                writer.write(_response(struct.unpack(">q", head[4:12])[0], self.name))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def shut_down(self) -> None:
        async def announce() -> None:
            for writer in self.writers:
                writer.write(READ_ONLY_EVENT)
                await writer.drain()

        asyncio.run_coroutine_threadsafe(announce(), self.loop).result(5)


@pytest.fixture
def providers() -> Iterator[tuple[NamedProvider, NamedProvider]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield NamedProvider("a", loop), NamedProvider("b", loop)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _call(client: socket.socket, request_id: int) -> str:
    client.sendall(encode_dubbo_request(request_id, SERVICE, VERSION, "echo", "Ljava/lang/String;", ["hi"]))
    head = client.recv(16, socket.MSG_WAITALL)
    frame = head + client.recv(struct.unpack(">i", head[12:16])[0], socket.MSG_WAITALL)
    status, outcome, value, _ = decode_dubbo_response(frame)
    assert (status, outcome) == (20, "value"), (status, outcome, value)
    return str(value)


def test_a_provider_that_announces_its_shutdown_gets_no_new_requests(
    tmp_path: Path, providers: tuple[NamedProvider, NamedProvider]
) -> None:
    a, b = providers
    port = sidecar_process.free_port()
    config = {
        "mesh": {
            "listeners": [
                {"name": "dubbo-in", "protocol": "dubbo", "address": f"127.0.0.1:{port}",
                 "routes": [{"name": "echo", "match": {"service": SERVICE, "version": VERSION}, "cluster": "two"}]}
            ],
            "clusters": [{"name": "two", "protocol": "dubbo", "hosts": [a.address, b.address]}],
        }
    }  # fmt: skip
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(config))
    sidecar = sidecar_process.start(tmp_path, "--config", str(path))
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert {_call(client, i) for i in range(6)} == {"a", "b"}, "round robin over both"
        wait_for(lambda: len(a.writers) == 1)
        a.shut_down()
        wait_for(lambda: _call(client, 99) == "b")  # the event has been read
        answers = [_call(client, 100 + i) for i in range(20)]
        assert answers == ["b"] * 20, "nothing new went to the provider that is shutting down"
        _, body = sidecar.http("/actuator/info")
        hosts = {h["address"]: h for h in json.loads(body)["mesh"]["clusters"][0]["hosts"]}
        assert hosts[a.address]["ejected"] and not hosts[b.address]["ejected"], hosts
    finally:
        sidecar.stop()
