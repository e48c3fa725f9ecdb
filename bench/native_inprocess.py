"""Per-call cost of the native gRPC transport without sockets or a load generator.

A python-hyper ``h2`` client builds batches of GetState requests (as ghz's 64 in
flight would arrive); they are fed to the transport's protocol object with a fake
transport, and only the time inside ``data_received`` is counted. The same run
measures the Rust-only floor (the same paths answered with fixed bytes), so the
difference is what the Python side adds per call. Needs ``pip install h2``.

    python bench/native_inprocess.py [--calls 200000] [--batch 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import uvloop

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.api.transport_native import GrpcProtocol, NativeGrpcServer
from layotto_fast.server import Sidecar, load_manifests
from layotto_fast.settings import Settings

PATH = "/spec.proto.runtime.v1.Runtime/GetState"


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def request_bytes(client: h2.connection.H2Connection, count: int) -> bytes:
    body = pb.GetStateRequest(store_name="in-memory", key="bench").SerializeToString()
    message = b"\x00" + len(body).to_bytes(4, "big") + body
    for _ in range(count):
        stream = client.get_next_available_stream_id()
        client.send_headers(
            stream,
            [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "127.0.0.1"),
             ("content-type", "application/grpc"), ("te", "trailers")],
        )  # fmt: skip
        client.send_data(stream, message, end_stream=True)
    return client.data_to_send()


async def measure(server: NativeGrpcServer, calls: int, batch: int) -> float:
    protocol = GrpcProtocol(server)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    protocol.data_received(client.data_to_send())
    spent = 0
    done = 0
    while done < calls:
        for chunk in transport.out:
            for event in client.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        transport.out.clear()
        data = request_bytes(client, batch)
        started = time.perf_counter_ns()
        protocol.data_received(data)
        spent += time.perf_counter_ns() - started
        done += batch
        await asyncio.sleep(0)  # let tasks and scheduled flushes run, as the loop would
    return spent / done / 1000


async def main(calls: int, batch: int) -> None:
    settings = Settings(resources_path="components")
    sidecar = Sidecar(settings, load_manifests(settings))
    await sidecar.components.init_all()
    descriptor = pb.DESCRIPTOR.services_by_name["Runtime"]
    native = NativeGrpcServer([(descriptor, sidecar.layotto)], stats=sidecar.metrics.calls)
    reply = pb.GetStateResponse(data=b"bench-value", etag="1").SerializeToString()
    floor = NativeGrpcServer([(descriptor, sidecar.layotto)], fixed_replies={PATH: reply})
    for name, server in (("native", native), ("floor (Rust only)", floor), ("native", native)):
        await measure(server, calls // 10, batch)  # warm-up
        print(f"{name:18s} {await measure(server, calls, batch):6.2f} µs per call inside data_received")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=64)
    options = parser.parse_args()
    uvloop.run(main(options.calls, options.batch))
