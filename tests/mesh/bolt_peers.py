"""SOFA Bolt peers for the mesh tests, taken from anthunder 0.8.1 (SOFA's Python bolt library, PyPI).

anthunder speaks Bolt v1 with protobuf payloads (codec 11): the request class name is
``com.alipay.sofa.rpc.core.request.SofaRequest``, the response one
``com.alipay.sofa.rpc.core.response.SofaResponse``; the target service and method travel in the
SOFA header map (``sofa_head_target_service``, ``sofa_head_method_name``, ``service``, ...).
The payload here is ``google.protobuf.StringValue`` (shipped with protobuf, nothing to generate).

Provider (a subprocess, so the test's event loop and threads are untouched)::

    python -m tests.mesh.bolt_peers serve --port 0        # prints "READY <port>" once listening

    with start_echo_provider() as provider:               # or port=N
        provider.address                                   # ("127.0.0.1", port)

It serves ``com.example.EchoService:1.0`` with ``echo`` (answers the request's payload),
``fail`` (raises: anthunder answers RESPSTATUS UNKNOWN = 3), any other method or service answers
NO_PROCESSOR = 6.

Client::

    echo_calls(("127.0.0.1", 12220), 5)                   # in process, anthunder AioClient.invoke_sync
    echo_calls(addr, 5, mode="aio-async")                  # AioClient.invoke_async, all in flight at once
    echo_calls(addr, 5, mode="sock")                       # anthunder's blocking socket Client
    heartbeat(addr)                                        # anthunder's heartbeat (cmdcode 0)
    run_calls(addr, 5, mode=..., heartbeat=True)           # the same in a subprocess, returns its JSON report

anthunder runs unchanged on Python 3.11; what this module adds around it:

* no registry: anthunder's clients and listener POST to a MOSN registry at 127.0.0.1:13330 on
  construction and fall back to direct calls when it fails; ``_no_registry()`` makes that fail
  without any network traffic. The call address is set per client (``mesh_service_address``,
  which anthunder uses for any service not subscribed through the registry; its default is
  127.0.0.1:12220, the sidecar's bolt port).
* a fix for anthunder's AioClient receive loop (``_FixedAioClient``): it drops heartbeat
  responses and non-success responses before storing them, so ``invoke_heartbeat`` and any call
  answered with an error status end in ``KeyError`` in anthunder 0.8.1. The fixed loop stores
  every response; nothing else changes (frames sent are anthunder's own).
* a fixed trace context (``SpanContext(sofaTraceId=TRACE_ID, sofaRpcId="1")``): anthunder
  requires one, and its default trace id embeds the host address, time and pid.

Quirk to know: anthunder's AioListener sends no response at all when the service returns an
empty result, so an empty StringValue (which serializes to b"") is never answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

from google.protobuf.wrappers_pb2 import StringValue

INTERFACE = "com.example.EchoService:1.0"
TRACE_ID = "0a00000117000000000010001"
APP = "mesh-test"
REPO = Path(__file__).resolve().parents[2]

Address = tuple[str, int]


def parse_address(address: str | Sequence[Any]) -> Address:
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        return host or "127.0.0.1", int(port)
    return str(address[0]), int(address[1])


def encode_payload(text: str) -> bytes:
    return StringValue(value=text).SerializeToString()


def decode_payload(data: bytes) -> str:
    return StringValue.FromString(data).value


def _no_registry() -> None:
    """Make anthunder's registry client fail at once instead of POSTing to 127.0.0.1:13330."""
    import anthunder.client.base as client_base
    import anthunder.listener.base_listener as listener_base

    class _NoRegistry:
        def __init__(self, *_: object, **__: object) -> None:
            raise RuntimeError("no service registry in the mesh tests")

    client_base.MeshClient = _NoRegistry  # type: ignore[assignment,misc]
    listener_base.MeshClient = _NoRegistry  # type: ignore[assignment,misc]
    for name in ("anthunder.client.base", "anthunder.listener.base_listener"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # "Fail to startup mesh client"


def span_context() -> Any:
    from mytracer import SpanContext

    return SpanContext(sofaTraceId=TRACE_ID, sofaRpcId="1")


# ---------------------------------------------------------------------------------------------
# provider


class EchoService:
    """anthunder service class: built per request with the span context, methods take bytes."""

    def __init__(self, ctx: object) -> None:
        self.ctx = ctx

    def echo(self, body: bytes) -> bytes:
        return StringValue(value=decode_payload(body)).SerializeToString()

    def fail(self, body: bytes) -> bytes:
        raise RuntimeError("asked to fail")


def serve(host: str, port: int) -> None:
    """Run an anthunder AioListener serving EchoService until SIGTERM/SIGINT; prints READY <port>."""
    _no_registry()
    from anthunder import AioListener

    listener = AioListener((host, port), APP)
    listener.handler.register_interface(INTERFACE, EchoService)
    listener.run_threading()
    deadline = time.monotonic() + 10
    while listener._server is None:
        if time.monotonic() > deadline:
            raise SystemExit("anthunder listener did not start")
        time.sleep(0.01)
    bound = listener._server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    listener.shutdown()


class PeerProcess:
    """A peer server run as ``python -m <module> serve --host H --port P`` (prints "READY <port>")."""

    module = ""
    what = "peer"

    def __init__(self, port: int = 0, host: str = "127.0.0.1", python: str | None = None) -> None:
        self.host = host
        self.port = port
        self.python = python or sys.executable
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> Address:
        return self.host, self.port

    def start(self, timeout: float = 20.0) -> Self:
        self.proc = subprocess.Popen(
            [self.python, "-m", self.module, "serve", "--host", self.host, "--port", str(self.port)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out = self.proc.stdout
        assert out is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(out.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = ready[0] if ready else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{self.what} did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> Self:
        return self if self.proc is not None else self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class EchoProvider(PeerProcess):
    """An anthunder echo provider in a subprocess."""

    module = "tests.mesh.bolt_peers"
    what = "anthunder provider"


def start_echo_provider(port: int = 0, host: str = "127.0.0.1", python: str | None = None) -> PeerProcess:
    return EchoProvider(port, host, python).start()


# ---------------------------------------------------------------------------------------------
# client


def _fixed_aio_client_class() -> Any:
    from anthunder import AioClient
    from anthunder.exceptions import PyboltError
    from anthunder.protocol import BoltResponse

    class _FixedAioClient(AioClient):  # type: ignore[misc]
        """anthunder's AioClient whose receive loop keeps heartbeat and error responses."""

        async def _recv_response(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            log = logging.getLogger("anthunder.client.aio_client")
            while True:
                pkg = None
                try:
                    fixed = await reader.readexactly(BoltResponse.bolt_header_size())
                    header = BoltResponse.bolt_header_from_stream(fixed)
                    rest = await reader.readexactly(header["class_len"] + header["header_len"] + header["content_len"])
                    pkg = BoltResponse.bolt_content_from_stream(rest, header)
                    if pkg.request_id in self.request_mapping:
                        self.response_mapping[pkg.request_id] = pkg
                except PyboltError as e:
                    log.error(e)
                except (asyncio.CancelledError, EOFError, ConnectionResetError) as e:
                    log.info(e)
                    writer.close()
                    break
                except Exception:
                    log.error(traceback.format_exc())
                    writer.close()
                    break
                finally:
                    with contextlib.suppress(AttributeError, KeyError):
                        self.request_mapping.pop(pkg.request_id).set()

    return _FixedAioClient


@contextlib.contextmanager
def aio_client(address: str | Sequence[Any]) -> Iterator[Any]:
    """An anthunder AioClient (fixed receive loop) calling ``address``; its loop thread is stopped after."""
    _no_registry()
    client = _fixed_aio_client_class()(APP)
    client.mesh_service_address = parse_address(address)
    try:
        yield client
    finally:

        async def _close() -> None:
            for task, writer in list(client.connection_mapping.values()):
                task.cancel()
                writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close(), client._loop).result(2)
        client._loop.call_soon_threadsafe(client._loop.stop)


def sock_client(address: str | Sequence[Any]) -> Any:
    """anthunder's blocking Client (socket pool) calling ``address``."""
    _no_registry()
    from anthunder import Client

    client = Client(APP)
    client.mesh_service_address = parse_address(address)
    return client


def _check(pkg: Any) -> bytes:
    from anthunder.exceptions import ServerError
    from anthunder.protocol.constants import RESPSTATUS

    if pkg is None:
        raise ServerError("no response")
    if pkg.respstatus != RESPSTATUS.SUCCESS:
        raise ServerError.from_statuscode(pkg.respstatus)
    return bytes(pkg.content)


def call(
    client: Any, text: str, *, method: str = "echo", interface: str = INTERFACE, timeout_ms: int = 3000
) -> tuple[int, str]:
    """One request through an ``aio_client``: returns (RESPSTATUS, decoded payload or "")."""
    from anthunder.protocol import BoltRequest, SofaHeader

    header = SofaHeader.build_header(span_context(), interface, method)
    pkg = BoltRequest.new_request(header, encode_payload(text), timeout_ms=timeout_ms)
    resp = asyncio.run_coroutine_threadsafe(client.invoke(pkg), client._loop).result(timeout_ms / 1000 + 1)
    if resp is None:
        raise TimeoutError("no response")
    return int(resp.respstatus), decode_payload(resp.content) if resp.content else ""


def heartbeat(address: str | Sequence[Any], client: Any = None, timeout: float = 3.0) -> bool:
    """anthunder's heartbeat (cmdcode 0, empty class/header/content): True if answered with SUCCESS."""
    if client is None:
        with aio_client(address) as c:
            return heartbeat(address, c, timeout)
    fut = asyncio.run_coroutine_threadsafe(client.invoke_heartbeat(parse_address(address)), client._loop)
    return bool(fut.result(timeout))


def echo_calls(
    address: str | Sequence[Any],
    n: int,
    *,
    mode: str = "aio-sync",
    prefix: str = "echo",
    timeout_ms: int = 3000,
) -> list[str]:
    """N echo calls with anthunder, payload StringValue(f"{prefix}-{i}"); returns the decoded replies.

    mode: "aio-sync" (AioClient.invoke_sync, one after another on one connection),
    "aio-async" (AioClient.invoke_async, all N in flight at once on one connection),
    "sock" (anthunder.Client.invoke_sync, blocking sockets from its pool).
    """
    texts = [f"{prefix}-{i}" for i in range(n)]
    ctx = span_context()
    if mode == "sock":
        sock = sock_client(address)
        return [
            decode_payload(sock.invoke_sync(INTERFACE, "echo", encode_payload(t), spanctx=ctx, timeout_ms=timeout_ms))
            for t in texts
        ]
    with aio_client(address) as client:
        if mode == "aio-sync":
            return [
                decode_payload(
                    client.invoke_sync(INTERFACE, "echo", encode_payload(t), spanctx=ctx, timeout_ms=timeout_ms)
                )
                for t in texts
            ]
        if mode == "aio-async":
            futures = [
                client.invoke_async(INTERFACE, "echo", encode_payload(t), spanctx=ctx, timeout_ms=timeout_ms)
                for t in texts
            ]
            return [decode_payload(_check(f.result(timeout_ms / 1000 + 1))) for f in futures]
    raise ValueError(f"unknown mode {mode!r}")


def run_calls(
    address: str | Sequence[Any],
    n: int,
    *,
    mode: str = "aio-sync",
    heartbeat: bool = False,
    python: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """``echo_calls`` (and optionally ``heartbeat``) in a subprocess; returns its JSON report
    ``{"replies": [...], "heartbeat": bool | None}``; raises with the stderr on failure."""
    host, port = parse_address(address)
    args = ["call", "--addr", f"{host}:{port}", "-n", str(n), "--mode", mode] + (["--heartbeat"] if heartbeat else [])
    return run_report("tests.mesh.bolt_peers", args, "anthunder client", python, timeout)


def run_report(module: str, args: list[str], what: str, python: str | None, timeout: float) -> dict[str, Any]:
    """``python -m module args`` (a peer's ``call`` command); its last stdout line, parsed as JSON."""
    command = [python or sys.executable, "-m", module, *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stderr}")
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mesh.bolt_peers")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="anthunder echo provider")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("call", help="anthunder echo calls; prints one JSON line")
    c.add_argument("--addr", default="127.0.0.1:12220")
    c.add_argument("-n", type=int, default=1)
    c.add_argument("--mode", choices=["aio-sync", "aio-async", "sock"], default="aio-sync")
    c.add_argument("--heartbeat", action="store_true")
    c.add_argument("--timeout-ms", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.cmd == "serve":
        serve(args.host, args.port)
        return
    replies = echo_calls(args.addr, args.n, mode=args.mode, timeout_ms=args.timeout_ms)
    beat = heartbeat(args.addr) if args.heartbeat else None
    print(json.dumps({"replies": replies, "heartbeat": beat}), flush=True)


if __name__ == "__main__":
    main()
