"""``python bench/mesh_echo.py bolt|dubbo|tcp PORT``: the echo upstream of make bench's mesh rows.

Python on uvloop, as in the reference figures: each read's complete requests are
answered in one write. Bolt: a v1 response with the request's id, codec, class, header
and content. Dubbo: an OK response carrying a null value. Tcp: every byte sent back as
it came, no protocol at all (the pub/sub bench's bare round trip). Prints "ready" once
listening.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

BOLT_RESPONSE = b"\x01\x00\x00\x02\x01"  # proto 1, type response, cmdcode 2, ver2
DUBBO_NULL = b"\xda\xbb\x02\x14"  # magic, response|hessian2, status 20


def bolt_answers(buffer: bytearray) -> tuple[bytes, int]:
    out, at = [], 0
    while len(buffer) - at >= 22:
        class_len = int.from_bytes(buffer[at + 14 : at + 16], "big")
        header_len = int.from_bytes(buffer[at + 16 : at + 18], "big")
        content_len = int.from_bytes(buffer[at + 18 : at + 22], "big")
        end = at + 22 + class_len + header_len + content_len
        if end > len(buffer):
            break
        request_id, codec = bytes(buffer[at + 5 : at + 9]), bytes(buffer[at + 9 : at + 10])
        if buffer[at + 2 : at + 4] == b"\x00\x00":  # heartbeat
            out.append(b"\x01\x00\x00\x00\x01" + request_id + codec + b"\x00\x00" + bytes(10))
        else:
            lengths = bytes(buffer[at + 14 : at + 22])
            out.append(BOLT_RESPONSE + request_id + codec + b"\x00\x00" + lengths + bytes(buffer[at + 22 : end]))
        at = end
    return b"".join(out), at


def dubbo_answers(buffer: bytearray) -> tuple[bytes, int]:
    out, at = [], 0
    while len(buffer) - at >= 16:
        end = at + 16 + int.from_bytes(buffer[at + 12 : at + 16], "big")
        if end > len(buffer):
            break
        flag = buffer[at + 2]
        request_id = bytes(buffer[at + 4 : at + 12])
        if flag & 0x20:  # heartbeat: event response with a null body
            out.append(b"\xda\xbb\x22\x14" + request_id + b"\x00\x00\x00\x01N")
        else:
            out.append(DUBBO_NULL + request_id + b"\x00\x00\x00\x01\x92")
        at = end
    return b"".join(out), at


def raw_answers(buffer: bytearray) -> tuple[bytes, int]:
    return bytes(buffer), len(buffer)


ANSWERS = {"bolt": bolt_answers, "dubbo": dubbo_answers, "tcp": raw_answers}


class Echo(asyncio.Protocol):
    def __init__(self, answers: object) -> None:
        self.answers = answers
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out, used = self.answers(self.buffer)  # type: ignore[operator]
        del self.buffer[:used]
        if out:
            self.transport.write(out)  # type: ignore[attr-defined]


async def main(protocol: str, port: int) -> None:
    answers = ANSWERS[protocol]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Echo(answers), "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
