"""Dubbo (dubbo protocol 2.x, Hessian2) peers for the mesh tests, from PyPI.

Client: dubbo-ssl-python 0.9.6 (module ``dubbo_ssl``; the maintained descendant of apache's
dubbo-python2 / dubbo-python3 clients): direct host:port calls without zookeeper, Hessian2
serialization (flag 0xc2), one multiplexed connection per host, answers the server's
heartbeats, and sends its own after 60 s idle (``TIMEOUT_IDLE``)::

    echo_calls(("127.0.0.1", 20882), 5)                  # -> ["echo-0", ..., "echo-4"]
    echo_calls(addr, 5, concurrency=5)                    # 5 threads, calls in flight at once
    client_heartbeat(addr, idle=0.2)                      # lowers TIMEOUT_IDLE, waits for a heartbeat round trip
    run_calls(addr, 5, heartbeat=True)                    # the same in a subprocess, returns its JSON report

Each call sends ``echo(String)`` to ``com.example.EchoService`` version "1.0" (attachments
path, interface, version, group) with dubbo version "2.4.10" (the library's default; a Java
provider answers such a request without response attachments, flag 1 "value").

Provider: dubbo-py 0.2.2 (module ``dubbo``; its own Hessian2 codec and a threaded TCP
server), serving ``echo`` (returns its argument) and ``fail`` (raises: status 90) on
``com.example.EchoService`` (it ignores version and group); a method it does not know gets no
answer at all::

    python -m tests.mesh.dubbo_peers serve --port 0       # prints "READY <port>"
    with start_echo_provider() as provider: provider.address

Compatibility shims (both libraries otherwise run unchanged on Python 3.11):

* dubbo-ssl-python never initialises its per-host heartbeat counter, so once a connection
  has been idle for TIMEOUT_IDLE its heartbeat thread raises KeyError every 30 ms instead of
  sending a heartbeat; ``_prepare(host)`` sets the counter to 0 before the first call.
* dubbo-ssl-python rejects a heartbeat response whose status is not 20 (dubbo-py answers
  heartbeats with status 0; Java ignores the status), and any frame its reader cannot parse
  (e.g. an unknown status byte) makes the reader thread fail on the same buffered bytes over
  and over, flooding the log. ``_patch_client`` accepts heartbeat responses with any status and
  drops a connection on an unparsable frame (calls on it then time out; the next call reconnects).
* dubbo-py's DubboService binds 0.0.0.0 in its constructor (and looks up a "public" address
  by connecting a UDP socket to 8.8.8.8 to register in zookeeper); ``serve`` uses its server
  and request handler directly, bound to the given host.

Not used: dubbo-python 0.0.4 (same codec as dubbo-ssl-python) imports ``nacos.client``, which
nacos-sdk-python >= 1 (what pip resolves) no longer has, pins kazoo==2.6.0, and its reader
thread busy-loops on a whole core until the first connection exists; python3-dubbo and
python-dubbo have that busy loop too; dubbo-client and dubbo-python3 speak jsonrpc, not the
dubbo protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.mesh.bolt_peers import Address, PeerProcess, parse_address, run_report

SERVICE = "com.example.EchoService"
VERSION = "1.0"


def _host_key(address: str | Sequence[Any]) -> str:
    host, port = parse_address(address)
    return f"{host}:{port}"


_patched = False
heartbeats_answered: dict[str, int] = {}  # host:port -> heartbeat responses the client received


def _patch_client() -> None:
    """Shims for dubbo-ssl-python's reader thread (see module doc); idempotent."""
    global _patched
    if _patched:
        return
    import socket
    from struct import unpack

    import dubbo_ssl.connection.connections as connections

    original_head = connections.parse_response_head

    def parse_response_head(head: bytes) -> tuple[int, int]:
        if head[:2] == b"\xda\xbb" and head[2] & 0xA0 == 0x20:  # heartbeat response: any status
            return 1, int(unpack("!i", head[12:16])[0])
        return original_head(head)  # type: ignore[no-any-return]

    original_read = connections.Connection.read

    def read(self: Any, callback: Any) -> None:
        try:
            original_read(self, callback)
        except Exception:
            logging.getLogger("dubbo_ssl").exception("unparsable frame from %s; dropping the connection", self)
            self.read_buffer = bytearray()
            self.read_length, self.read_type, self.invoke_id = connections.DEFAULT_READ_PARAMS
            with contextlib.suppress(OSError):  # the next select sees EOF and the pool drops it
                self._Connection__sock.shutdown(socket.SHUT_RDWR)

    original_parse_head = connections.BaseConnectionPool._parse_head

    def parse_head(self: Any, data: bytes, conn: Any) -> Any:
        if data[2] & 0xA0 == 0x20:
            heartbeats_answered[conn.remote_host()] = heartbeats_answered.get(conn.remote_host(), 0) + 1
        return original_parse_head(self, data, conn)

    connections.parse_response_head = parse_response_head
    connections.BaseConnectionPool._parse_head = parse_head
    connections.Connection.read = read
    _patched = True


def _prepare(address: str | Sequence[Any]) -> str:
    """Apply the shims; initialise dubbo-ssl-python's heartbeat counter for the host (see module doc)."""
    _patch_client()
    from dubbo_ssl.connection.connections import connection_pool

    key = _host_key(address)
    connection_pool.client_heartbeats.setdefault(key, 0)
    return key


def client(address: str | Sequence[Any], *, version: str = VERSION, group: str | None = None) -> Any:
    from dubbo_ssl.client import DubboClient

    return DubboClient(SERVICE, group=group, version=version, host=_prepare(address))


def echo_calls(
    address: str | Sequence[Any],
    n: int,
    *,
    version: str = VERSION,
    group: str | None = None,
    prefix: str = "echo",
    timeout: float = 5.0,
    concurrency: int = 1,
    texts: Sequence[str] | None = None,
) -> list[str]:
    """N calls of echo(String) (payloads f"{prefix}-{i}" unless ``texts``); returns the replies in order."""
    c = client(address, version=version, group=group)
    payloads = list(texts) if texts is not None else [f"{prefix}-{i}" for i in range(n)]

    def one(text: str) -> str:
        return str(c.call("echo", text, timeout=timeout))

    if concurrency <= 1:
        return [one(t) for t in payloads]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, payloads))


def client_heartbeat(address: str | Sequence[Any], *, idle: float = 0.2, timeout: float = 5.0) -> bool:
    """Let the client's own heartbeat fire: lower TIMEOUT_IDLE to ``idle`` (process-wide, restored
    after), and wait until the client got a heartbeat response. Needs an open connection (make a call first)."""
    import dubbo_ssl.connection.connections as connections

    key = _prepare(address)
    before = heartbeats_answered.get(key, 0)
    previous = connections.TIMEOUT_IDLE
    connections.TIMEOUT_IDLE = idle  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if heartbeats_answered.get(key, 0) > before:
                return True
            time.sleep(0.01)
        return False
    finally:
        connections.TIMEOUT_IDLE = previous  # type: ignore[attr-defined]


def run_calls(
    address: str | Sequence[Any],
    n: int,
    *,
    concurrency: int = 1,
    heartbeat: bool = False,
    python: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """``echo_calls`` (and optionally ``client_heartbeat``) in a subprocess; returns its JSON report
    ``{"replies": [...], "heartbeat": bool | None}``; raises with the stderr on failure."""
    args = ["call", "--addr", _host_key(address), "-n", str(n), "--concurrency", str(concurrency)]
    args += ["--heartbeat"] if heartbeat else []
    return run_report("tests.mesh.dubbo_peers", args, "dubbo client", python, timeout)


# ---------------------------------------------------------------------------------------------
# provider (dubbo-py)


def serve(host: str, port: int) -> None:
    """Run a dubbo-py provider of EchoService until SIGTERM/SIGINT; prints READY <port>."""
    import dubbo.server as dubbo_server

    def fail(_: object) -> None:
        raise RuntimeError("asked to fail")

    # What DubboService.add_method builds; DubboService itself binds 0.0.0.0 in its constructor.
    services = {SERVICE: {"echo": lambda text: text, "fail": fail}}
    server = dubbo_server._DubboServer((host, port), dubbo_server._get_dubbo_request_handler(services))
    thread = dubbo_server._ServerThread(server)
    thread.start()
    print(f"READY {server.server_address[1]}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    thread.stop()


class EchoProvider(PeerProcess):
    """A dubbo-py echo provider in a subprocess."""

    module = "tests.mesh.dubbo_peers"
    what = "dubbo-py provider"


def start_echo_provider(port: int = 0, host: str = "127.0.0.1", python: str | None = None) -> PeerProcess:
    return EchoProvider(port, host, python).start()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mesh.dubbo_peers")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="dubbo-py echo provider")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("call", help="dubbo-ssl-python echo calls; prints one JSON line")
    c.add_argument("--addr", default="127.0.0.1:20882")
    c.add_argument("-n", type=int, default=1)
    c.add_argument("--concurrency", type=int, default=1)
    c.add_argument("--heartbeat", action="store_true")
    c.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.cmd == "serve":
        serve(args.host, args.port)
        return
    replies = echo_calls(args.addr, args.n, concurrency=args.concurrency, timeout=args.timeout)
    beat = client_heartbeat(args.addr) if args.heartbeat else None
    print(json.dumps({"replies": replies, "heartbeat": beat}), flush=True)


__all__ = ["Address", "EchoProvider", "client", "client_heartbeat", "echo_calls", "run_calls", "start_echo_provider"]

if __name__ == "__main__":
    main()
