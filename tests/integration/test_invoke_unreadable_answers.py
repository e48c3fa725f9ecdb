"""InvokeService over the bolt and dubbo channels when the provider answers with a frame
the mesh can route (its framing is right) but whose content cannot be read: the caller
gets a status naming the service and the method, not the native FrameError."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import layotto_fast_native as native
import pytest
from google.protobuf import any_pb2

from layotto_fast._proto import runtime_pb2 as pb
from tests import sidecar as sidecar_process

DUBBO_MAGIC, DUBBO_EVENT, DUBBO_TWO_WAY = b"\xda\xbb", 0x20, 0x40
FASTJSON = 6  # a Dubbo serialization id other than hessian2 (2), which is all the channel reads


def bolt_garbage(request: bytes) -> bytes | None:
    request_id, _, cmdcode, *_ = native.decode_bolt_request(request)
    if cmdcode == 0:
        return bytes(native.encode_bolt_heartbeat_ack(request_id))
    answer = bytearray(native.encode_bolt_response(request_id, 1, 0, "ab", {}, b"x"))
    answer[20:22] = b"\xff\xfe"  # the class name (after the 20-byte v1 header): not UTF-8
    return bytes(answer)


def dubbo_garbage(request: bytes) -> bytes | None:
    request_id = struct.unpack(">q", request[4:12])[0]
    if request[2] & DUBBO_EVENT:
        if not request[2] & DUBBO_TWO_WAY:
            return None
        return DUBBO_MAGIC + bytes([2 | DUBBO_EVENT, 20]) + struct.pack(">qi", request_id, 1) + b"N"
    # An error status for a body that asks for one, else OK; either way in fastjson.
    status = 70 if b"fail" in request else 20
    body = b'"it broke"'
    return DUBBO_MAGIC + bytes([FASTJSON, status]) + struct.pack(">qi", request_id, len(body)) + body


class GarbageUpstream:
    """A bolt and a dubbo provider, on one event loop on a thread, that answer every
    request with a well-framed frame the channel cannot read."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers = [self._listen("bolt", bolt_garbage), self._listen("dubbo", dubbo_garbage)]
        self.bolt, self.dubbo = (f"127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in self.servers)

    def _listen(self, protocol: str, answer: object) -> asyncio.Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            splitter = native.FrameSplitter(protocol)
            try:
                while data := await reader.read(65536):
                    for frame in splitter.feed(data):
                        reply = answer(bytes(frame))  # type: ignore[operator]
                        if reply is not None:
                            writer.write(reply)
            except ConnectionError:
                pass
            finally:
                writer.close()

        started = asyncio.start_server(serve, "127.0.0.1", 0)
        return asyncio.run_coroutine_threadsafe(started, self.loop).result(5)

    def stop(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sidecar_process.Sidecar]:
    upstream = GarbageUpstream()
    tmp: Path = tmp_path_factory.mktemp("unreadable")
    config = {
        "invoke": {
            "targets": [
                {"id": "bolt", "channel": "bolt", "address": upstream.bolt, "service": "com.example.Bolt:1.0"},
                {"id": "dubbo", "channel": "dubbo", "address": upstream.dubbo, "service": "com.example.Dubbo"},
                {"id": "dubbo-json", "channel": "dubbo", "address": upstream.dubbo, "service": "com.example.Dubbo",
                 "before_invoke": [{"name": "dubbo_json_rpc"}], "after_invoke": [{"name": "dubbo_json_rpc"}]},
            ]
        }
    }  # fmt: skip
    process = sidecar_process.start_with_config(tmp, config)
    try:
        yield process
    finally:
        process.stop()
        upstream.stop()


def error(sidecar: sidecar_process.Sidecar, target: str, method: str, data: bytes) -> grpc.RpcError:
    request = pb.InvokeServiceRequest(
        id=target, message=pb.CommonInvokeRequest(method=method, data=any_pb2.Any(value=data))
    )
    with pytest.raises(grpc.RpcError) as caught:
        sidecar.stub().InvokeService(request, timeout=10)
    return caught.value


def test_an_unreadable_bolt_answer_is_internal_naming_service_and_method(sidecar: sidecar_process.Sidecar) -> None:
    failed = error(sidecar, "bolt", "echo", b"hi")
    details = failed.details() or ""
    assert failed.code() == grpc.StatusCode.INTERNAL, failed
    assert "'com.example.Bolt:1.0'" in details and "'echo'" in details and "UTF-8" in details, details
    assert "Traceback" not in sidecar.log()


def test_an_unreadable_dubbo_error_answer_still_reports_its_status(sidecar: sidecar_process.Sidecar) -> None:
    failed = error(sidecar, "dubbo", "fail", b"fail")
    details = failed.details() or ""
    assert failed.code() == grpc.StatusCode.UNKNOWN, failed  # status 70, SERVICE_ERROR
    assert "'com.example.Dubbo'" in details and "'fail'" in details and "status 70" in details, details
    assert "hessian2" in details, details


def test_a_generic_call_answered_in_another_serialization_is_internal(sidecar: sidecar_process.Sidecar) -> None:
    failed = error(sidecar, "dubbo-json", "echo", b'["hi"]')
    details = failed.details() or ""
    assert failed.code() == grpc.StatusCode.INTERNAL, failed
    assert "'com.example.Dubbo'" in details and "'echo'" in details and "hessian2" in details, details
    assert "Traceback" not in sidecar.log()
