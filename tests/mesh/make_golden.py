"""Record golden Bolt and Dubbo frames from real third-party peers into tests/mesh/golden/vectors.json.

    python -m tests.mesh.make_golden [--out PATH]

Needs anthunder 0.8.1 (Bolt client and provider), dubbo-ssl-python 0.9.6 (Dubbo client) and
dubbo-py 0.2.2 (Dubbo provider) in the running interpreter. Nothing of the sidecar is used:
each peer client talks to its peer provider through a recording TCP proxy (asyncio, in a
thread) which cuts both byte streams into frames by their length fields and stores them
verbatim. The proxy also injects one frame of its own (a Dubbo heartbeat request towards the
client) to record the client's answer.

Every value is fixed except request ids, and those are made repeatable too: anthunder starts
its request ids at random.randint() when imported (pinned by seeding ``random`` first) and
dubbo-ssl-python counts from 0 per process. The "what" text of each vector says what would vary
with other runs of the peers. "fields" is a decoding of the frame for reading convenience only.

When ``java`` is installed it also records the Java peers of tests/interop/java_mesh (building
their jars with ``mvn package`` if missing), each consumer calling its provider through the same
kind of recording proxy: SOFARPC 5.13.2 over Bolt (*_sofarpc: a call, a heartbeat and a call the
provider fails) and Apache Dubbo 3.3.4 over the dubbo protocol (*_java, a call and a heartbeat),
and bolt 1.6.10's own client and server over Bolt v2 (*_v2*_bolt, with ver1 1 and 2). The request
ids of the first two cannot be pinned (Dubbo's start at a random long, SOFARPC's depend on how many
heartbeats came first), so those vectors change in their ids on every run; ``--keep-java``
re-records only the Python peers and keeps the Java vectors already in the file (as happens,
with a note, when java or the jars are unavailable).
The JVMs and Maven run under ``nice``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.mesh import bolt_peers, dubbo_peers

OUT = Path(__file__).resolve().parent / "golden" / "vectors.json"
SEED = 20220  # random.seed before anthunder is imported: pins its first request id
ANTHUNDER = "anthunder 0.8.1"
DUBBO_CLIENT = "dubbo-ssl-python 0.9.6"
DUBBO_SERVER = "dubbo-py 0.2.2"

Framer = Callable[[bytes], int | None]


# ---------------------------------------------------------------------------------------------
# framing (only lengths; the proxy never interprets anything else)


def bolt_request_len(buf: bytes) -> int | None:
    if len(buf) < 22:
        return None
    class_len, header_len, content_len = struct.unpack(">HHI", buf[14:22])
    total: int = 22 + class_len + header_len + content_len
    return total if len(buf) >= total else None


def bolt_response_len(buf: bytes) -> int | None:
    if len(buf) < 20:
        return None
    class_len, header_len, content_len = struct.unpack(">HHI", buf[12:20])
    total: int = 20 + class_len + header_len + content_len
    return total if len(buf) >= total else None


def bolt_v2_len(buf: bytes) -> int | None:
    """Bolt v2 in either direction: ``ver1`` after ``proto``, ``switch`` after ``codec`` and,
    for ``ver1`` 2 with the switch's CRC bit on, a CRC32 after the content."""
    if len(buf) < 3:
        return None
    request = buf[2] != 0  # type: 1 request, 2 oneway, 0 response
    head = 24 if request else 22
    if len(buf) < head:
        return None
    class_len, header_len, content_len = struct.unpack(">HHI", buf[head - 8 : head])
    crc = 4 if buf[1] == 2 and buf[11] & 1 else 0
    total: int = head + class_len + header_len + content_len + crc
    return total if len(buf) >= total else None


def dubbo_len(buf: bytes) -> int | None:
    if len(buf) < 16:
        return None
    total: int = 16 + struct.unpack(">i", buf[12:16])[0]
    return total if len(buf) >= total else None


# ---------------------------------------------------------------------------------------------
# recording proxy


class RecordingProxy:
    """Listens on loopback, relays each connection to ``upstream``, records every frame."""

    def __init__(self, upstream: tuple[str, int], up_framer: Framer, down_framer: Framer) -> None:
        self.upstream = upstream
        self.up_framer = up_framer  # client -> server frames
        self.down_framer = down_framer  # server -> client frames
        self.frames: list[tuple[str, bytes]] = []
        self.swallow: Callable[[bytes], bool] = lambda frame: False  # client frames not relayed
        self._cond = threading.Condition()
        self._clients: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._clients.append(writer)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, self.up_framer, "client->server", self.swallow),
                self._pump(up_reader, writer, self.down_framer, "server->client", lambda frame: False),
                return_exceptions=True,
            )
        except asyncio.CancelledError:  # close(): end quietly (3.11's start_server logs cancelled handlers)
            pass
        finally:
            self._clients.remove(writer)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framer: Framer,
        direction: str,
        swallow: Callable[[bytes], bool],
    ) -> None:
        buf = b""
        try:
            while data := await reader.read(65536):
                buf += data
                while (n := framer(buf)) is not None:
                    frame, buf = buf[:n], buf[n:]
                    with self._cond:
                        self.frames.append((direction, frame))
                        self._cond.notify_all()
                    if not swallow(frame):
                        writer.write(frame)
                await writer.drain()
        finally:
            writer.close()

    def inject_to_clients(self, frame: bytes) -> None:
        def _write() -> None:
            for w in self._clients:
                w.write(frame)

        self._loop.call_soon_threadsafe(_write)

    def mark(self) -> int:
        with self._cond:
            return len(self.frames)

    def take(self, since: int, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """The ``count`` frames recorded after mark ``since`` (waits for them)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.frames) < since + count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {count} frames, got {self.frames[since:]}")
                self._cond.wait(left)
            return self.frames[since : since + count]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# ---------------------------------------------------------------------------------------------
# decoding for the "fields" annotation


def _sofa_header_map(data: bytes) -> dict[str, str]:
    out: list[str] = []
    i = 0
    while i < len(data):
        (n,) = struct.unpack(">i", data[i : i + 4])
        n = max(n, 0)
        out.append(data[i + 4 : i + 4 + n].decode())
        i += 4 + n
    return dict(zip(out[::2], out[1::2], strict=True))


def bolt_fields(frame: bytes) -> dict[str, Any]:
    proto, ptype, cmdcode, ver2, request_id, codec = struct.unpack(">BBHBIB", frame[:10])
    fields: dict[str, Any] = {
        "proto": proto,
        "type": ptype,
        "cmdcode": cmdcode,
        "ver2": ver2,
        "request_id": request_id,
        "codec": codec,
    }
    if ptype == 0:  # response
        status, class_len, header_len, content_len = struct.unpack(">HHHI", frame[10:20])
        fields["respstatus"] = status
        off = 20
    else:
        timeout, class_len, header_len, content_len = struct.unpack(">iHHI", frame[10:22])
        fields["timeout_ms"] = timeout
        off = 22
    fields["class_name"] = frame[off : off + class_len].decode()
    fields["header"] = _sofa_header_map(frame[off + class_len : off + class_len + header_len])
    fields["content_hex"] = frame[off + class_len + header_len :].hex()
    fields["lengths"] = {"class": class_len, "header": header_len, "content": content_len}
    return fields


def dubbo_fields(frame: bytes) -> dict[str, Any]:
    magic, flag, status, request_id, body_len = struct.unpack(">HBBqi", frame[:16])
    return {
        "magic": f"{magic:#06x}",
        "flag": f"{flag:#04x}",
        "request": bool(flag & 0x80),
        "twoway": bool(flag & 0x40),
        "event": bool(flag & 0x20),
        "serialization_id": flag & 0x1F,
        "status": status,
        "request_id": request_id,
        "body_length": body_len,
        "body_hex": frame[16:].hex(),
    }


# ---------------------------------------------------------------------------------------------
# recording


def record_bolt(vectors: dict[str, dict[str, Any]]) -> None:
    def put(name: str, frame: tuple[str, bytes], what: str, client: str = "AioClient") -> None:
        direction, data = frame
        peer = f"{ANTHUNDER} " + (client if direction == "client->server" else "AioListener")
        vectors[name] = {"hex": data.hex(), "peer": peer, "direction": direction, "what": what}
        vectors[name]["fields"] = bolt_fields(data)

    rid = (
        "request_id: anthunder starts at a random id per process (random.randint at import) and adds 1 per "
        "request or heartbeat; pinned here by seeding random. "
    )
    with bolt_peers.start_echo_provider() as provider:
        proxy = RecordingProxy(provider.address, bolt_request_len, bolt_response_len)
        try:
            with bolt_peers.aio_client(proxy.address) as client:
                m = proxy.mark()
                ctx = bolt_peers.span_context()
                payload = bolt_peers.encode_payload("hello")
                reply = client.invoke_sync(bolt_peers.INTERFACE, "echo", payload, spanctx=ctx, timeout_ms=3000)
                assert bolt_peers.decode_payload(reply) == "hello"
                req, resp = proxy.take(m, 2)
                put(
                    "bolt_request_echo",
                    req,
                    "Bolt v1 request (proto 1, type 1 request, cmdcode 1, ver2 1, codec 11 protobuf, timeout 3000) "
                    "from AioClient.invoke_sync('com.example.EchoService:1.0', 'echo', StringValue('hello'), "
                    "timeout_ms=3000); class com.alipay.sofa.rpc.core.request.SofaRequest; SOFA header map in "
                    "insertion order sofa_head_target_service, sofa_head_method_name, sofa_head_target_app (''), "
                    "service, uid (''), rpc_trace_context.sofaTraceId, rpc_trace_context.sofaRpcId; content is "
                    "the protobuf bytes. " + rid + "rpc_trace_context.* come from the span context: fixed here; "
                    "anthunder's default sofaTraceId is hex(host IPv4) + ms timestamp + a 1000..9000 sequence + "
                    "pid. sofa_head_target_app and uid are empty strings (length 0, not -1).",
                )
                put(
                    "bolt_response_echo",
                    resp,
                    "Bolt v1 response from anthunder's AioListener to bolt_request_echo (type 0, cmdcode 2, "
                    "codec 11, respstatus 0 SUCCESS), class com.alipay.sofa.rpc.core.response.SofaResponse, "
                    "empty header map (header_len 0), content = the echoed protobuf bytes. request_id copies the "
                    "request's.",
                )

                m = proxy.mark()
                assert bolt_peers.heartbeat(proxy.address, client)
                req, resp = proxy.take(m, 2)
                put(
                    "bolt_heartbeat_request",
                    req,
                    "Bolt heartbeat from AioClient.invoke_heartbeat: request layout (22-byte header), type 1, "
                    "cmdcode 0 HEARTBEAT, codec 11, timeout 0, no class name, no header, no content. " + rid,
                )
                put(
                    "bolt_heartbeat_response",
                    resp,
                    "anthunder AioListener's heartbeat answer: response layout (20-byte header), type 0, "
                    "cmdcode 0 HEARTBEAT, codec 11, respstatus 0, empty class/header/content; request_id copies "
                    "the heartbeat's.",
                )

                m = proxy.mark()
                assert bolt_peers.call(client, "hello", method="fail") == (3, "")
                req, resp = proxy.take(m, 2)
                put(
                    "bolt_request_fail",
                    req,
                    "Same as bolt_request_echo with sofa_head_method_name 'fail' (anthunder's BoltRequest + "
                    "SofaHeader.build_header, sent through AioClient.invoke). " + rid,
                )
                put(
                    "bolt_response_server_error",
                    resp,
                    "anthunder AioListener's answer when the service method raises: respstatus 3 (UNKNOWN), "
                    "cmdcode 2, class name SofaResponse, empty header and content.",
                )

                m = proxy.mark()
                assert bolt_peers.call(client, "hello", interface="com.example.Missing:1.0")[0] == 6
                req, resp = proxy.take(m, 2)
                put(
                    "bolt_response_no_processor",
                    resp,
                    "anthunder AioListener's answer to a request for a service it does not serve "
                    "(com.example.Missing:1.0): respstatus 6 (NO_PROCESSOR), empty header and content.",
                )

                m = proxy.mark()
                fut = client.invoke_async(bolt_peers.INTERFACE, "echo", payload, spanctx=ctx)
                fut.result(5)
                req, _ = proxy.take(m, 2)
                put(
                    "bolt_request_async_no_timeout",
                    req,
                    "AioClient.invoke_async without timeout_ms: like bolt_request_echo but timeout -1 "
                    "(0xffffffff). " + rid,
                )

            m = proxy.mark()
            assert bolt_peers.echo_calls(proxy.address, 1, mode="sock", prefix="sock") == ["sock-0"]
            req, _ = proxy.take(m, 2)
            put(
                "bolt_request_sock_client",
                req,
                "anthunder's blocking Client.invoke_sync (socket pool, not asyncio), payload "
                "StringValue('sock-0'), timeout 3000: same layout and header keys as bolt_request_echo. " + rid,
                "Client",
            )

            m = proxy.mark()
            sock = bolt_peers.sock_client(proxy.address)
            sock.invoke_oneway(bolt_peers.INTERFACE, "echo", bolt_peers.encode_payload("oneway"), spanctx=ctx)
            (req,) = proxy.take(m, 1)
            put(
                "bolt_request_oneway",
                req,
                "anthunder's Client.invoke_oneway, payload StringValue('oneway'): type 2 (oneway), cmdcode 1, "
                "timeout -1; the provider sends no response. (AioClient.invoke_oneway is not usable for this: "
                "it sends type 1, a normal request.) " + rid,
                "Client",
            )
            time.sleep(0.3)  # nothing may come back for the oneway
            assert proxy.mark() == m + 1, proxy.frames[m:]
        finally:
            proxy.close()


def record_dubbo(vectors: dict[str, dict[str, Any]]) -> None:
    def put(name: str, frame: tuple[str, bytes], what: str, peer: str) -> None:
        direction, data = frame
        vectors[name] = {"hex": data.hex(), "peer": peer, "direction": direction, "what": what}
        vectors[name]["fields"] = dubbo_fields(data)

    rid = (
        "request_id: dubbo-ssl-python's process-wide counter from 0, +1 per request or heartbeat, so it "
        "depends on how many came before in the process. "
    )
    with dubbo_peers.start_echo_provider() as provider:
        proxy = RecordingProxy(provider.address, dubbo_len, dubbo_len)
        injected_id = 0x7FFF0001
        proxy.swallow = lambda frame: struct.unpack(">q", frame[4:12])[0] == injected_id
        try:
            m = proxy.mark()
            assert dubbo_peers.echo_calls(proxy.address, 1, texts=["hello"]) == ["hello"]
            req, resp = proxy.take(m, 2)
            put(
                "dubbo_request_echo",
                req,
                "Dubbo request from DubboClient('com.example.EchoService', group=None, version='1.0')"
                ".call('echo', 'hello'): magic 0xdabb, flag 0xc2 (request, two-way, serialization 2 = "
                "Hessian2), status 0, 8-byte id, 4-byte body length; body = Hessian2 strings dubbo version "
                "'2.4.10', path, version '1.0', method 'echo', parameter types 'Ljava/lang/String;', the "
                "argument 'hello', then an untyped map 'H' ... 'Z' of attachments path, interface, version, "
                "group (null 'N'). " + rid,
                DUBBO_CLIENT,
            )
            put(
                "dubbo_response_echo",
                resp,
                "dubbo-py's response: flag 0x02 (response, Hessian2), status 20 OK, id copied, body = "
                "Hessian2 int 1 (0x91, RESPONSE_VALUE) then the string 'hello'.",
                DUBBO_SERVER,
            )

            m = proxy.mark()
            logging.getLogger("dubbo_ssl").setLevel(logging.CRITICAL)  # it logs the peer's error with a trace
            try:
                dubbo_peers.client(proxy.address).call("fail", "hello", timeout=5)
                raise AssertionError("fail did not fail")
            except Exception as e:  # DubboResponseException from the peer
                assert "asked to fail" in str(e), e
            req, resp = proxy.take(m, 2)
            put(
                "dubbo_response_error",
                resp,
                "dubbo-py's answer when the method raises: flag 0x02, status 90 (CLIENT_ERROR in the client's "
                "table; Java would use 70 SERVICE_ERROR or an exception value), body = the Hessian2 string of "
                "the error message.",
                DUBBO_SERVER,
            )

            m = proxy.mark()
            assert dubbo_peers.client_heartbeat(proxy.address, idle=0.2)
            req, resp = proxy.take(m, 2)
            put(
                "dubbo_heartbeat_request",
                req,
                "dubbo-ssl-python's own heartbeat (sent after TIMEOUT_IDLE, 60 s, without reads; lowered to "
                "0.2 s here): flag 0xe2 (request, two-way, event, Hessian2), status 0, id, body length 1, body "
                "'N' (Hessian2 null). " + rid,
                DUBBO_CLIENT,
            )
            put(
                "dubbo_heartbeat_response",
                resp,
                "dubbo-py's heartbeat answer: flag 0x22 (response, event, Hessian2), id copied, body 'N'; "
                "status 0 where Java Dubbo sends 20 (OK).",
                DUBBO_SERVER,
            )

            m = proxy.mark()
            server_beat = struct.pack(">HBBqi", 0xDABB, 0xE2, 0, injected_id, 1) + b"N"
            proxy.inject_to_clients(server_beat)
            (resp,) = proxy.take(m, 1)
            put(
                "dubbo_client_heartbeat_response",
                resp,
                "dubbo-ssl-python's answer to a server heartbeat request (injected by the recorder: flag "
                "0xe2, id 0x7fff0001, body 'N'): flag 0x22 (response, event, Hessian2), status 20, the "
                "request's id, body length 1, body 'N'.",
                DUBBO_CLIENT,
            )
        finally:
            proxy.close()


# ---------------------------------------------------------------------------------------------
# Java peers (tests/interop/java_mesh): SOFARPC 5.13.2 over Bolt, Apache Dubbo 3.3.4 over dubbo


def java_available() -> bool:
    """Builds the Java peers' jars if missing; False (with a note) if Maven or Java is not installed."""
    from tests.interop.test_mesh_java import DUBBO_JAR, PROJECT, SOFA_JAR

    if shutil.which("java") is None:
        print("java not installed: Java peers not recorded")
        return False
    if not (SOFA_JAR.is_file() and DUBBO_JAR.is_file()):
        if shutil.which("mvn") is None:
            print(f"mvn not installed and {SOFA_JAR.name}/{DUBBO_JAR.name} not built: Java peers not recorded")
            return False
        print(f"building the Java peers in {PROJECT} (mvn package) ...")
        subprocess.run(["nice", "mvn", "-q", "-B", "package", "-DskipTests"], cwd=PROJECT, check=True, timeout=1800)
    return True


def run_java_pair(
    jvm: list[str],
    jar: Path,
    provider_main: str,
    consumer_main: str,
    up_framer: Framer,
    down_framer: Framer,
    consumer_jvm: list[str],
    options: list[str],
    fails: bool = False,
) -> list[tuple[str, bytes]]:
    """Starts the provider, runs the consumer through a recording proxy; every frame recorded, in order.
    ``fails``: the consumer calls ``fail`` and must report the provider's exception."""
    from tests.interop.test_mesh_java import start_provider

    with tempfile.TemporaryDirectory(prefix="make-golden-") as tmp_dir:
        tmp = Path(tmp_dir)
        provider = start_provider(tmp, ["nice", *jvm], jar, provider_main)
        try:
            proxy = RecordingProxy(("127.0.0.1", provider.port), up_framer, down_framer)
            try:
                result = subprocess.run(
                    ["nice", *consumer_jvm, "-cp", str(jar), consumer_main, *map(str, proxy.address), *options],
                    capture_output=True,
                    text=True,
                    stdin=subprocess.DEVNULL,
                    cwd=tmp,
                    timeout=180,
                )
                lines = result.stdout.strip().splitlines()
                report = json.loads(lines[-1]) if lines else None
                if result.returncode != 0 or report is None or (report["error"] is None) != (not fails):
                    raise RuntimeError(f"{consumer_main} failed ({result.returncode}): {report}\n{result.stderr}")
                time.sleep(0.3)  # let the last frames through the proxy
                return proxy.take(0, proxy.mark())
            finally:
                proxy.close()
        finally:
            provider.stop()


SOFARPC = "SOFARPC 5.13.2 (sofa-rpc-all, bolt 1.6.10, hessian 3.5.5)"
JAVA_DUBBO = "Apache Dubbo 3.3.4 (hessian-lite 4.0.3)"
JAVA_VECTORS = (
    "bolt_request_sofarpc",
    "bolt_response_sofarpc",
    "bolt_heartbeat_request_sofarpc",
    "bolt_heartbeat_response_sofarpc",
    "bolt_request_sofarpc_fail",
    "bolt_response_sofarpc_fail",
    "bolt_request_v2_bolt",
    "bolt_response_v2_bolt",
    "bolt_request_v2_crc_bolt",
    "bolt_response_v2_crc_bolt",
    "dubbo_request_java",
    "dubbo_response_java",
    "dubbo_heartbeat_request_java",
    "dubbo_heartbeat_response_java",
)


def _first(frames: list[tuple[str, bytes]], direction: str, test: Callable[[bytes], bool]) -> tuple[str, bytes]:
    for frame in frames:
        if frame[0] == direction and test(frame[1]):
            return frame
    raise AssertionError(f"no {direction} frame of the kind looked for in {[(d, f.hex()) for d, f in frames]}")


def record_sofarpc(vectors: dict[str, dict[str, Any]]) -> None:
    from tests.interop.test_mesh_java import SOFA_JAR, SOFA_JVM

    def put(name: str, frame: tuple[str, bytes], what: str) -> None:
        direction, data = frame
        role = "ConsumerConfig (interop.SofaConsumer)" if direction == "client->server" else "ProviderConfig"
        peer = f"{SOFARPC} " + (role if direction == "client->server" else f"{role} (interop.SofaProvider)")
        vectors[name] = {"hex": data.hex(), "peer": peer, "direction": direction, "what": what}
        vectors[name]["fields"] = bolt_fields(data)

    def cmd(code: int) -> Callable[[bytes], bool]:
        return lambda data: struct.unpack(">H", data[2:4])[0] == code

    def reply_to(req: tuple[str, bytes], code: int) -> Callable[[bytes], bool]:
        return lambda data: cmd(code)(data) and data[5:9] == req[1][5:9]

    # two calls with 1 s idle between them; bolt's RpcHeartbeatTrigger fires on 300 ms of idleness
    frames = run_java_pair(
        SOFA_JVM,
        SOFA_JAR,
        "interop.SofaProvider",
        "interop.SofaConsumer",
        bolt_request_len,
        bolt_response_len,
        [*SOFA_JVM, "-Dbolt.tcp.heartbeat.interval=300"],
        ["2", "timeoutMs=3000", "idleMs=1000"],
    )
    req = _first(frames, "client->server", cmd(1))
    resp = _first(frames, "server->client", reply_to(req, 2))
    beat = _first(frames, "client->server", cmd(0))
    beat_resp = _first(frames, "server->client", reply_to(beat, 0))
    fields = bolt_fields(req[1])
    assert fields["codec"] == 1 and fields["class_name"] == "com.alipay.sofa.rpc.core.request.SofaRequest", fields
    assert fields["header"]["service"] == "com.example.EchoService:1.0", fields
    assert bolt_fields(resp[1])["respstatus"] == 0 and resp[1].endswith(b"echo-0N"), resp
    rid = (
        "request_id: bolt's per-process IDGenerator, from 1 and +1 per request or heartbeat, so it depends "
        "on how many heartbeats the idle consumer sent before (the first heartbeat may even precede the "
        "first call when the JVM is slow). "
    )
    put(
        "bolt_request_sofarpc",
        req,
        "SOFARPC consumer's Bolt v1 request for EchoService.echo('echo-0') (ConsumerConfig, direct bolt:// URL, "
        "no registry, timeout 3000): proto 1, type 1, cmdcode 1, ver2 1, codec 1 (Hessian2), timeout 3000; "
        "class com.alipay.sofa.rpc.core.request.SofaRequest; SOFA header map in wire order "
        "sofa_head_target_service and service both 'com.example.EchoService:1.0' (interfaceId:version), "
        "protocol 'bolt', sofa_head_method_name 'echo', type 'sync' (no sofa_head_target_app, uid or "
        "rpc_trace_context.*: the peers switch SOFATracer off, default.tracer=''); content = SOFA hessian "
        "(the draft Hessian 2 grammar sofa-hessian writes) class definition 'O' + instance 'o' SofaRequest "
        "{targetAppName null, methodName 'echo', "
        "targetServiceUniqueName 'com.example.EchoService:1.0', requestProps as an untyped 'M' map "
        "{protocol: bolt, type: sync}, methodArgSigs as a 'V' list typed '[string' of 'java.lang.String'} "
        "followed by the argument 'echo-0'. Otherwise the same every run. " + rid,
    )
    put(
        "bolt_response_sofarpc",
        resp,
        "SOFARPC provider's Bolt v1 response to bolt_request_sofarpc: type 0, cmdcode 2, codec 1, respstatus 0 "
        "SUCCESS, class com.alipay.sofa.rpc.core.response.SofaResponse, empty header map (header_len 0), "
        "content = Hessian2 object SofaResponse {isError false, errorMsg null, appResponse 'echo-0', "
        "responseProps null}. request_id copies the request's; nothing else varies.",
    )
    put(
        "bolt_heartbeat_request_sofarpc",
        beat,
        "bolt's RpcHeartbeatTrigger heartbeat from the SOFARPC consumer's connection "
        "(-Dbolt.tcp.heartbeat.interval=300, sent after 300 ms idle): request layout (22-byte header), "
        "type 1, cmdcode 0 HEARTBEAT, ver2 1, codec 1 (Hessian2), timeout -1 (0xffffffff), no class, "
        "header or content. " + rid,
    )
    put(
        "bolt_heartbeat_response_sofarpc",
        beat_resp,
        "SOFARPC (bolt RpcHeartBeatProcessor) provider's heartbeat answer: response layout (20-byte header), "
        "type 0, cmdcode 0 HEARTBEAT, ver2 1, codec 1, respstatus 0, empty class/header/content; request_id "
        "copies the heartbeat's, nothing else varies.",
    )
    # one call of fail('echo-0'): the provider throws, SOFARPC answers SUCCESS with the error flagged
    frames = run_java_pair(
        SOFA_JVM, SOFA_JAR, "interop.SofaProvider", "interop.SofaConsumer", bolt_request_len, bolt_response_len,
        SOFA_JVM, ["1", "timeoutMs=3000", "method=fail"], fails=True,
    )  # fmt: skip
    req = _first(frames, "client->server", cmd(1))
    resp = _first(frames, "server->client", reply_to(req, 2))
    assert bolt_fields(resp[1])["header"] == {"sofa_head_response_error": "true"}, resp
    put(
        "bolt_request_sofarpc_fail",
        req,
        "SOFARPC consumer's request for EchoService.fail('echo-0'), as bolt_request_sofarpc but for the method "
        "name (header sofa_head_method_name and the SofaRequest's methodName). " + rid,
    )
    put(
        "bolt_response_sofarpc_fail",
        resp,
        "SOFARPC provider's answer when fail('echo-0') throws IllegalStateException: respstatus 0 SUCCESS, "
        "header map {sofa_head_response_error: 'true'}, content = SofaResponse {isError false, errorMsg null, "
        "appResponse = the IllegalStateException object (detailMessage 'echo-0', cause a back-reference to "
        "itself, stackTrace a 'V' list of StackTraceElement objects, suppressedExceptions an empty list), "
        "responseProps {sofa_head_response_error: 'true'}}, in SOFA's Hessian dialect. The stack trace's line "
        "numbers and JDK version follow the JVM and SOFARPC build; request_id copies the request's.",
    )


BOLT_JAVA = "SOFA Bolt 1.6.10 (RpcClient / RpcServer, no SOFARPC)"


def record_bolt_v2(vectors: dict[str, dict[str, Any]]) -> None:
    """Bolt v2 from bolt's own client and server: ``ver1`` 1 (the switch's CRC bit set, no CRC
    written) and ``ver1`` 2 (a CRC32 after the content)."""
    from tests.interop.test_mesh_java import SOFA_JAR, SOFA_JVM

    for version, suffix in (("1", ""), ("2", "_crc")):
        frames = run_java_pair(
            SOFA_JVM, SOFA_JAR, "interop.BoltEchoServer", "interop.BoltClient", bolt_v2_len, bolt_v2_len,
            SOFA_JVM, ["1", "protocol=2", f"version={version}"],
        )  # fmt: skip
        req = _first(frames, "client->server", lambda data: data[2] == 1)
        resp = _first(frames, "server->client", lambda data, rid=req[1][6:10]: data[2] == 0 and data[6:10] == rid)
        assert req[1][:2] == resp[1][:2] == bytes([2, int(version)]), (req, resp)
        crc = (
            "switch 0x01 (CRC bit) and a CRC32 (java.util.zip.CRC32 of every byte before it) after the content"
            if version == "2"
            else "switch 0x01 (bolt sets the CRC bit by default) but no CRC32: bolt writes one only for ver1 2"
        )
        what = {
            "client->server": f"bolt RpcClient's Bolt v2 request (URL _PROTOCOL=2&_VERSION={version}) of the "
            f"String 'bolt-0': proto 2, ver1 {version}, type 1, cmdcode 1, ver2 1, request_id 1 (the first of a "
            f"fresh client), codec 1 (Hessian2), {crc}, timeout 3000, class 'java.lang.String', no header map, "
            "content = Hessian2 string 'bolt-0'. The same every run.",
            "server->client": f"bolt RpcServer's (interop.BoltEchoServer) Bolt v2 answer 'echo:bolt-0': proto 2, "
            f"ver1 {version} (the request's), type 0, cmdcode 2, ver2 1, request_id 1, codec 1, {crc}, "
            "respstatus 0, class 'java.lang.String'. The same every run.",
        }
        roles = {"client->server": "interop.BoltClient", "server->client": "interop.BoltEchoServer"}
        for name, (direction, data) in ((f"bolt_request_v2{suffix}", req), (f"bolt_response_v2{suffix}", resp)):
            vectors[f"{name}_bolt"] = {
                "hex": data.hex(), "peer": f"{BOLT_JAVA} {roles[direction]}", "direction": direction,
                "what": what[direction],
            }  # fmt: skip


def record_java_dubbo(vectors: dict[str, dict[str, Any]]) -> None:
    from tests.interop.test_mesh_java import DUBBO_JAR, JVM

    def put(name: str, frame: tuple[str, bytes], what: str) -> None:
        direction, data = frame
        peer = f"{JAVA_DUBBO} " + (
            "ReferenceConfig (interop.DubboConsumer)"
            if direction == "client->server"
            else "ServiceConfig (interop.DubboProvider)"
        )
        vectors[name] = {"hex": data.hex(), "peer": peer, "direction": direction, "what": what}
        vectors[name]["fields"] = dubbo_fields(data)

    def kind(event: bool) -> Callable[[bytes], bool]:
        return lambda data: bool(data[2] & 0x20) == event

    def reply_to(req: tuple[str, bytes]) -> Callable[[bytes], bool]:
        return lambda data: data[4:12] == req[1][4:12]

    # two calls with 2 s idle between them; heartbeat=600 ms makes the consumer send heartbeats meanwhile
    frames = run_java_pair(
        JVM,
        DUBBO_JAR,
        "interop.DubboProvider",
        "interop.DubboConsumer",
        dubbo_len,
        dubbo_len,
        JVM,
        ["2", "timeoutMs=3000", "idleMs=2000", "heartbeatMs=600"],
    )
    req = _first(frames, "client->server", kind(False))
    resp = _first(frames, "server->client", reply_to(req))
    beat = _first(frames, "client->server", kind(True))
    beat_resp = _first(frames, "server->client", reply_to(beat))
    assert req[1][16:22] == b"\x052.0.2" and b"echo-0" in req[1], req
    assert resp[1][3] == 20 and b"echo-0" in resp[1], resp
    rid = (
        "request_id: Dubbo's process-wide Request id counter, which starts at a random long "
        "(so it differs every run), +1 per request or heartbeat. "
    )
    put(
        "dubbo_request_java",
        req,
        "Apache Dubbo consumer's request for EchoService.echo('echo-0') (ReferenceConfig, version 1.0, direct "
        "dubbo:// URL, serialization hessian2, timeout 3000, application 'interop-dubbo-consumer'): magic 0xdabb, "
        "flag 0xc2 (request, two-way, Hessian2), status 0; body = Hessian2 strings dubbo version '2.0.2', path "
        "'com.example.EchoService', service version '1.0', method 'echo', parameter types "
        "'Ljava/lang/String;', the argument 'echo-0', then an untyped map 'H' ... 'Z' of attachments in wire "
        "order path 'com.example.EchoService', remote.application 'interop-dubbo-consumer', interface "
        "'com.example.EchoService', version '1.0', timeout '3000' (a string). Otherwise the same every "
        "run. " + rid,
    )
    put(
        "dubbo_response_java",
        resp,
        "Apache Dubbo provider's response to dubbo_request_java: flag 0x02 (response, Hessian2), status 20 OK, "
        "id copied; body = Hessian2 int 4 (0x94, RESPONSE_VALUE_WITH_ATTACHMENTS, chosen because the request's "
        "dubbo version is 2.0.2), the string 'echo-0', then the attachments map {dubbo: '2.0.2'}. Only the "
        "id varies.",
    )
    put(
        "dubbo_heartbeat_request_java",
        beat,
        "Apache Dubbo consumer's heartbeat (HeartbeatTimerTask, heartbeat=600 ms, on a connection idle that "
        "long): flag 0xe2 (request, two-way, event, Hessian2), status 0, body length 1, body 'N' (Hessian2 "
        "null). " + rid,
    )
    put(
        "dubbo_heartbeat_response_java",
        beat_resp,
        "Apache Dubbo provider's heartbeat answer: flag 0x22 (response, event, Hessian2), status 20 OK, id "
        "copied, body length 1, body 'N'. Only the id varies.",
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mesh.make_golden")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--keep-java",
        action="store_true",
        help="do not run the Java peers; keep the Java vectors already in --out (their ids change every run)",
    )
    args = parser.parse_args()
    random.seed(SEED)
    import anthunder  # noqa: F401  (first import: draws the first request id from the seeded random)

    vectors: dict[str, dict[str, Any]] = {}
    record_bolt(vectors)
    record_dubbo(vectors)
    if not args.keep_java and java_available():
        record_sofarpc(vectors)
        record_bolt_v2(vectors)
        record_java_dubbo(vectors)
    else:  # keep what an earlier run recorded from the Java peers
        previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
        kept = {name: previous[name] for name in JAVA_VECTORS if name in previous}
        vectors.update(kept)
        print(f"Java peers not recorded: kept {len(kept)} earlier Java vectors from {args.out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(vectors)} vectors to {args.out}")


if __name__ == "__main__":
    main()
