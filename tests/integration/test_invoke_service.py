"""InvokeService through the real sidecar: the http channel to a plain HTTP server (the
standard library's), the bolt channel to anthunder's provider, the dubbo channel to
dubbo-py's, with filters, Layotto's request headers, and every failure's status."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.wrappers_pb2 import StringValue

from layotto_fast._proto import runtime_pb2 as pb
from tests import sidecar as sidecar_process
from tests.mesh import bolt_peers, dubbo_peers


class Upstream(BaseHTTPRequestHandler):
    """Answers with what it received, as JSON; /slow waits, /status/N answers N."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        status = int(self.path.split("/status/")[1]) if "/status/" in self.path else 200
        answer = json.dumps(
            {"verb": self.command, "path": self.path, "body": body.decode(), "headers": dict(self.headers)}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815  (http.server's names)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[str, str]]:
    with bolt_peers.start_echo_provider() as bolt, dubbo_peers.start_echo_provider() as dubbo:
        yield f"{bolt.address[0]}:{bolt.address[1]}", f"{dubbo.address[0]}:{dubbo.address[1]}"


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory, http_upstream: str, providers: tuple[str, str]
) -> Iterator[sidecar_process.Sidecar]:
    tmp = tmp_path_factory.mktemp("invoke")
    bolt_address, dubbo_address = providers
    config = {
        "mesh": {
            "clusters": [
                {"name": "bolt-echo", "protocol": "bolt", "hosts": [bolt_address]},
                {"name": "dubbo-echo", "protocol": "dubbo", "hosts": [dubbo_address]},
            ]
        },
        "invoke": {
            "targets": [
                {"id": "web", "channel": "http", "address": http_upstream, "timeout_ms": 400,
                 "before_invoke": [{"name": "headers", "set": {"x-from": "sidecar"}, "remove": ["x-secret"]}]},
                {"id": "web-fast", "channel": "http", "address": http_upstream,
                 "before_invoke": [{"name": "timeout", "timeout_ms": 150}]},
                {"id": "nowhere", "channel": "http", "address": f"127.0.0.1:{sidecar_process.free_port()}"},
                {"id": "echo-bolt", "channel": "bolt", "cluster": "bolt-echo",
                 "service": bolt_peers.INTERFACE, "codec": "protobuf"},
                {"id": "echo-bolt-direct", "channel": "bolt", "address": bolt_address,
                 "service": bolt_peers.INTERFACE, "codec": "protobuf"},
                {"id": "echo-dubbo", "channel": "dubbo", "cluster": "dubbo-echo", "service": dubbo_peers.SERVICE,
                 "version": "1.0"},
            ]
        },
    }  # fmt: skip
    process = sidecar_process.start_with_config(tmp, config)
    yield process
    process.stop()


def invoke(
    sidecar: sidecar_process.Sidecar,
    target: str,
    method: str,
    data: bytes = b"",
    metadata: tuple[tuple[str, str], ...] = (),
    verb: int = 0,
    query: str = "",
) -> pb.InvokeResponse:
    request = pb.InvokeServiceRequest(
        id=target,
        message=pb.CommonInvokeRequest(
            method=method,
            data=any_pb2.Any(value=data),
            content_type="text/plain",
            http_extension=pb.HTTPExtension(verb=verb, querystring=query),
        ),
    )
    response: pb.InvokeResponse = sidecar.stub().InvokeService(request, metadata=metadata, timeout=10)
    return response


def error(sidecar: sidecar_process.Sidecar, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        invoke(sidecar, *args, **kwargs)
    return caught.value


def test_http_channel_sends_verb_path_query_body_and_headers(sidecar: sidecar_process.Sidecar) -> None:
    response = invoke(
        sidecar, "web", "orders/7", b"hello", metadata=(("x-trace", "abc"), ("x-secret", "s")),
        verb=pb.HTTPExtension.PUT, query="a=1&b=2",
    )  # fmt: skip
    seen = json.loads(response.data.value)
    assert (seen["verb"], seen["path"], seen["body"]) == ("PUT", "/orders/7?a=1&b=2", "hello")
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["x-trace"] == "abc", "call metadata goes out as headers"
    assert headers["x-from"] == "sidecar" and "x-secret" not in headers, "the header filter ran"
    assert headers["content-type"] == "text/plain"
    assert response.content_type == "application/json"
    assert json.loads(invoke(sidecar, "web", "x").data.value)["verb"] == "POST", "POST without a verb"


def test_http_status_and_failures_map_to_grpc_codes(sidecar: sidecar_process.Sidecar) -> None:
    not_found = error(sidecar, "web", "status/404")
    assert not_found.code() == grpc.StatusCode.NOT_FOUND and "answered 404" in (not_found.details() or "")
    assert error(sidecar, "web", "status/503").code() == grpc.StatusCode.UNAVAILABLE
    assert error(sidecar, "web", "status/500").code() == grpc.StatusCode.INTERNAL
    assert error(sidecar, "nowhere", "x").code() == grpc.StatusCode.UNAVAILABLE


def test_timeouts_from_the_target_the_header_and_the_filter(sidecar: sidecar_process.Sidecar) -> None:
    started = time.monotonic()
    assert error(sidecar, "web", "slow").code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.35 < time.monotonic() - started < 0.9, "the target's 400 ms"
    started = time.monotonic()
    late = error(sidecar, "web", "slow", metadata=(("rpc_request_timeout", "200"),))
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < 0.6
    assert invoke(sidecar, "web", "slow", metadata=(("rpc_request_timeout", "3000"),)).data.value
    started = time.monotonic()
    assert error(sidecar, "web-fast", "slow", metadata=(("rpc_request_timeout", "3000"),)).code() == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert time.monotonic() - started < 0.6, "the timeout filter overrides the header"
    bad = error(sidecar, "web", "x", metadata=(("rpc_request_timeout", "soon"),))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "rpc_request_timeout" in (bad.details() or "")


def test_rpc_target_address_dials_that_address(sidecar: sidecar_process.Sidecar, http_upstream: str) -> None:
    response = invoke(sidecar, "nowhere", "direct", metadata=(("rpc_target_address", http_upstream),))
    assert json.loads(response.data.value)["path"] == "/direct"


def test_unknown_and_empty_targets(sidecar: sidecar_process.Sidecar) -> None:
    missing = error(sidecar, "no-such-app", "x")
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "web" in (missing.details() or "")
    assert error(sidecar, "", "x").code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bolt_channel_reaches_the_anthunder_provider(sidecar: sidecar_process.Sidecar) -> None:
    payload = StringValue(value="through the bolt channel").SerializeToString()
    for target in ("echo-bolt", "echo-bolt-direct"):
        response = invoke(sidecar, target, "echo", payload)
        assert StringValue.FromString(response.data.value).value == "through the bolt channel"
    failed = error(sidecar, "echo-bolt", "fail", payload)
    assert failed.code() == grpc.StatusCode.INTERNAL and "0x0003" in (failed.details() or "")
    unknown = error(sidecar, "echo-bolt", "nope", payload)
    assert unknown.code() == grpc.StatusCode.UNIMPLEMENTED, "the provider's NO_PROCESSOR"


def test_dubbo_channel_passes_a_hessian_body_to_the_dubbo_py_provider(sidecar: sidecar_process.Sidecar) -> None:
    # The body an app would send, made with dubbo-py's own Hessian encoder (not ours).
    from dubbo.codec.hessian2 import DubboRequest  # type: ignore[import-untyped]

    request = DubboRequest(0, True, "2.0.2", dubbo_peers.SERVICE, "echo", ["via the dubbo channel"], "1.0", {})
    body = request.encode()[16:]
    response = invoke(sidecar, "echo-dubbo", "echo", body)
    # dubbo-py's answer body: RESPONSE_VALUE (0x91) and the string, in Hessian2.
    assert response.data.value == b"\x91" + bytes([len("via the dubbo channel")]) + b"via the dubbo channel"


@pytest.mark.parametrize("target", ["echo-bolt", "echo-dubbo"])
def test_mesh_channels_map_silence_and_absence_to_grpc_codes(
    sidecar: sidecar_process.Sidecar, providers: tuple[str, str], target: str
) -> None:
    """rpc_target_address over the bolt and dubbo channels: the named address is dialled (the
    real provider answers there), one that accepts and never answers or never completes the
    connect is DEADLINE_EXCEEDED within rpc_request_timeout, and one nobody listens on is
    UNAVAILABLE."""
    import socket

    provider = providers[0] if target == "echo-bolt" else providers[1]
    if target == "echo-bolt":
        payload = StringValue(value="redirected").SerializeToString()
        answer = invoke(sidecar, target, "echo", payload, metadata=(("rpc_target_address", provider),))
        assert StringValue.FromString(answer.data.value).value == "redirected"
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never reads or answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        late = error(
            sidecar, target, "echo", b"", metadata=(("rpc_target_address", address), ("rpc_request_timeout", "300"))
        )
        assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED, late
        assert 0.25 < time.monotonic() - started < 2.0
    with socket.create_server(("127.0.0.1", 0), backlog=0) as stuck:
        filler = socket.create_connection(stuck.getsockname())  # fills the accept queue: connects hang
        try:
            address = f"127.0.0.1:{stuck.getsockname()[1]}"
            started = time.monotonic()
            late = error(
                sidecar, target, "echo", b"", metadata=(("rpc_target_address", address), ("rpc_request_timeout", "300"))
            )
            # the connect wait is part of rpc_request_timeout, not 1 s of connect timeout per try
            assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED, late
            assert time.monotonic() - started < 0.9
        finally:
            filler.close()
    closed = f"127.0.0.1:{sidecar_process.free_port()}"
    gone = error(sidecar, target, "echo", b"", metadata=(("rpc_target_address", closed),))
    assert gone.code() == grpc.StatusCode.UNAVAILABLE and closed in (gone.details() or ""), gone
