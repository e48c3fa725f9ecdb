"""InvokeService's own rules, with no transport: lookup, Layotto's request headers, the
order of filter steps (sync and async), a step that fails the call, and the invoke config.

The channel here is a recording test double (named as such): the channels themselves are
tested against real upstreams in tests/integration/test_invoke_service.py."""

from __future__ import annotations

import asyncio
import io
from typing import Any, cast

import pytest

from layotto_fast.components.invoke.config import parse
from layotto_fast.errors import Internal, InvalidArgument, NotFound, StartupError, Unavailable
from layotto_fast.runtime.invoke import InvokeRequest, InvokeResult, PassThrough, register_filter
from layotto_fast.runtime.invoke_service import InvokeService, Target


class RecordingChannel:
    """Test double: answers with what it was sent."""

    def __init__(self) -> None:
        self.seen: list[InvokeRequest] = []

    async def call(self, request: InvokeRequest) -> InvokeResult:
        self.seen.append(request)
        return InvokeResult(data=request.data, content_type="text/plain")

    async def close(self) -> None:
        return None


class Tag(PassThrough):
    def __init__(self, tag: str, fail: bool = False) -> None:
        self.tag, self.fail = tag, fail

    async def before(self, request: InvokeRequest) -> InvokeRequest:
        await asyncio.sleep(0)
        if self.fail:
            raise Unavailable(f"{self.tag} refused")
        request.data += self.tag.encode()
        return request

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult:
        result.data += b"<" + self.tag.encode()
        return result


def run(service: InvokeService, request: InvokeRequest) -> InvokeResult:
    return asyncio.run(service.invoke(request))


def test_filters_run_in_order_around_the_channel() -> None:
    channel = RecordingChannel()
    service = InvokeService({"app": Target("app", channel, 3000, before=[Tag("a"), Tag("b")], after=[Tag("c")])})
    result = run(service, InvokeRequest(id="app", method="m", data=b">"))
    assert channel.seen[0].data == b">ab"
    assert result.data == b">ab<c"


def test_a_failing_step_fails_the_call_before_the_channel() -> None:
    channel = RecordingChannel()
    service = InvokeService({"app": Target("app", channel, 3000, before=[Tag("x", fail=True)])})
    with pytest.raises(Unavailable, match="x refused"):
        run(service, InvokeRequest(id="app", method="m", data=b""))
    assert channel.seen == []


def test_layotto_headers_set_timeout_and_address() -> None:
    channel = RecordingChannel()
    service = InvokeService({"app": Target("app", channel, 1234)})
    run(service, InvokeRequest(id="app", method="m", data=b""))
    assert channel.seen[-1].timeout_ms == 1234, "the target's default"
    headers = {"rpc_request_timeout": "50", "rpc_target_address": "10.0.0.1:80"}
    run(service, InvokeRequest(id="app", method="m", data=b"", headers=headers))
    assert (channel.seen[-1].timeout_ms, channel.seen[-1].target_address) == (50, "10.0.0.1:80")
    assert channel.seen[-1].headers == {}, "the sidecar's own headers go no further"
    for bad in ("soon", "-5", "99999999", " 50", "5_0"):
        with pytest.raises(InvalidArgument, match="rpc_request_timeout"):
            run(service, InvokeRequest(id="app", method="m", data=b"", headers={"rpc_request_timeout": bad}))
    # Layotto's SDKs send 0 for "not set", and its invoker takes its default then
    run(service, InvokeRequest(id="app", method="m", data=b"", headers={"rpc_request_timeout": "0"}))
    assert channel.seen[-1].timeout_ms == 1234


@pytest.mark.parametrize("bad", ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", ":80", "::1:80", "h:port", "h:²"])
def test_a_malformed_rpc_target_address_is_refused_before_any_channel(bad: str) -> None:
    """Every channel shares the rule: a bolt or dubbo channel would otherwise make a
    direct mesh cluster of the text and answer UNAVAILABLE."""
    channel = RecordingChannel()
    service = InvokeService({"app": Target("app", channel, 3000)})
    with pytest.raises(InvalidArgument, match=rf"^rpc_target_address: must be host:port, got '{bad}'$"):
        run(service, InvokeRequest(id="app", method="m", data=b"", headers={"rpc_target_address": bad}))
    assert channel.seen == []
    run(service, InvokeRequest(id="app", method="m", data=b"", headers={"rpc_target_address": "[::1]:80"}))
    assert channel.seen[-1].target_address == "[::1]:80"


class Broken(PassThrough):
    """A user's filter with a bug: it raises, or forgets to return the request."""

    def __init__(self, mistake: str) -> None:
        self.mistake = mistake

    async def before(self, request: InvokeRequest) -> InvokeRequest:
        if self.mistake == "raises":
            raise KeyError("x-tenant")
        if self.mistake == "returns None":
            return None  # type: ignore[return-value]
        return request

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult:
        if self.mistake == "after raises":
            raise RuntimeError("no answer to rewrite")
        if self.mistake == "after returns bytes":
            return result.data  # type: ignore[return-value]
        return result


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ([Tag("a"), Broken("raises")], [], r"before_invoke\[1\] \(Broken\) failed: KeyError: 'x-tenant'"),
        ([Broken("returns None")], [], r"before_invoke\[0\] \(Broken\) failed: TypeError: returned NoneType, not an "
                                       r"InvokeRequest"),
        ([], [Broken("after raises")], r"after_invoke\[0\] \(Broken\) failed: RuntimeError: no answer to rewrite"),
        ([], [Tag("c"), Broken("after returns bytes")], r"after_invoke\[1\] \(Broken\) failed: TypeError: returned "
                                                        r"bytes, not an InvokeResult"),
    ],
    ids=["before raises", "before returns None", "after raises", "after returns bytes"],
)  # fmt: skip
def test_a_filters_bug_is_an_internal_error_naming_the_filter(
    before: list[PassThrough], after: list[PassThrough], message: str
) -> None:
    service = InvokeService({"app": Target("app", RecordingChannel(), 3000, before=before, after=after)})
    with pytest.raises(Internal, match=r"^invoke target 'app': filter " + message):
        run(service, InvokeRequest(id="app", method="m", data=b""))


def test_lookup_errors_name_the_field() -> None:
    service = InvokeService({"app": Target("app", RecordingChannel(), 3000)})
    with pytest.raises(InvalidArgument, match=r"^id: "):
        run(service, InvokeRequest(id="", method="m", data=b""))
    with pytest.raises(NotFound, match=r"no invoke target 'other' \(known: app\)"):
        run(service, InvokeRequest(id="other", method="m", data=b""))


@register_filter("test_upper")
class Upper(PassThrough):
    def __init__(self, config: Any) -> None:
        if config.get("bad"):
            raise ValueError("bad is not allowed")


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        ({"targets": [{"id": "a", "channel": "smtp"}]}, "invoke.targets[0].channel", "http, bolt, dubbo"),
        ({"targets": [{"id": "a", "channel": "http"}]}, "invoke.targets[0].address", "required for the http"),
        ({"targets": [{"id": "a", "channel": "bolt"}]}, "invoke.targets[0].cluster", "a cluster or an address"),
        ({"targets": [{"id": "a", "channel": "http", "address": "h:1", "before_invoke": [{"name": "nope"}]}]},
         "invoke.targets[0].before_invoke[0].name", "no filter 'nope'"),
        ({"targets": [{"id": "a", "channel": "http", "address": "h:1", "after_invoke": [{"name": "test_upper",
                                                                                       "bad": True}]}]},
         "invoke.targets[0].after_invoke[0]", "bad is not allowed"),
        ({"targets": [{"id": "a", "channel": "bolt", "address": "h:1", "codec": "xml"}]}, "invoke.targets[0].codec",
         "hessian2, protobuf"),
        ({"filter_modules": ["no_such_module_here"]}, "invoke.filter_modules[0]", "cannot import"),
        ({"targets": [{"id": "a", "channel": "http", "address": "h:0"}]}, "invoke.targets[0].address", "host:port"),
        ({"targets": [{"id": "a", "channel": "http", "address": "::1:80"}]}, "invoke.targets[0].address",
         "host:port"),
        ({"targets": [{"id": "a", "channel": "http", "address": "h:1"}] * 2}, "invoke.targets[1].id", "used twice"),
        ({"targets": [{"id": "a", "channel": "http", "address": "h:1", "max_connections": -1}]},
         "invoke.targets[0].max_connections", "from 0 (no limit)"),
        ({"targets": [{"id": "a", "channel": "http", "address": "h:1", "max_connections": "8"}]},
         "invoke.targets[0].max_connections", "from 0 (no limit)"),
        ({"targets": [{"id": "a", "channel": "bolt", "address": "h:1", "max_connections": 8}]},
         "invoke.targets[0].max_connections", "its cluster's"),
        # settings a channel would ignore, so that every call failed (SOFARPC finds no
        # provider for a service without its version), stop start-up
        ({"targets": [{"id": "a", "channel": "bolt", "address": "h:1", "version": "1.0"}]},
         "invoke.targets[0].version", "only a dubbo target has a version (a bolt target names it in its service"),
        ({"targets": [{"id": "a", "channel": "http", "address": "h:1", "class": "x.Y"}]},
         "invoke.targets[0].class", "only a bolt target has a class"),
        ({"targets": [{"id": "a", "channel": "dubbo", "address": "h:1", "codec": "protobuf"}]},
         "invoke.targets[0].codec", "only a bolt target has a codec"),
        ({"targets": [{"id": "a", "channel": "dubbo", "address": "h:1", "before_invoke": [{"name": "sofarpc_json"}]}]},
         "invoke.targets[0].before_invoke[0].name", "works on bolt targets, not on a dubbo one"),
        ({"targets": [{"id": "a", "channel": "bolt", "address": "h:1", "after_invoke": [{"name": "dubbo_json_rpc"}]}]},
         "invoke.targets[0].after_invoke[0].name", "works on dubbo, http targets, not on a bolt one"),
    ],
)  # fmt: skip
def test_config_mistakes_name_the_field(raw: Any, field: str, problem: str) -> None:
    with pytest.raises(StartupError) as caught:
        parse(raw, "c.yaml")
    assert caught.value.field == field
    assert problem in caught.value.problem


def _step(**step: Any) -> dict[str, Any]:
    return {"targets": [{"id": "a", "channel": "http", "address": "h:1", "before_invoke": [step]}]}


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ({"name": "headers", "set": ["x-a", "1"]}, "set must be a mapping of header names to string values"),
        ({"name": "headers", "set": "x-a"}, "set must be a mapping"),
        ({"name": "headers", "set": {"x-a": {"deep": 1}}}, "set must be a mapping"),
        ({"name": "headers", "remove": "x-secret"}, "remove must be a list of header names, got 'x-secret'"),
        ({"name": "headers", "remove": [1]}, "remove must be a list of header names"),
        ({"name": "headers", "sett": {"x-a": "1"}}, "unknown key 'sett' (known: set, remove)"),
        ({"name": "headers", "set": {"x a": "1"}}, "'x a' is not a header name"),
        ({"name": "headers", "remove": ["x:y"]}, "'x:y' is not a header name"),
        ({"name": "headers", "set": {"x-a": "1\r\nx-b: 2"}}, "set x-a: '1\\r\\nx-b: 2' has a control character"),
        ({"name": "timeout", "timeout": 5}, "unknown key 'timeout' (known: timeout_ms, max_ms)"),
        ({"name": "timeout", "max_ms": "5"}, "max_ms must be a positive integer"),
        ({"name": "timeout", "timeout_ms": 3_600_001}, "timeout_ms must be a positive integer up to 3600000"),
        ({"name": "timeout", "max_ms": 10**30}, "max_ms must be a positive integer up to 3600000"),
        ({"name": "dubbo_json_rpc", "types": []}, "unknown key 'types' (known: none)"),
        ({"name": "sofarpc_json", "codec": 12}, "unknown key 'codec'"),
    ],
)  # fmt: skip
def test_a_shipped_filters_config_mistake_names_the_key(step: dict[str, Any], problem: str) -> None:
    with pytest.raises(StartupError) as caught:
        parse(_step(**step), "c.yaml")
    assert caught.value.field == "invoke.targets[0].before_invoke[0]"
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("step", "requested", "sent"),
    [
        ({"max_ms": 500}, "2000", 500),  # asked for more than the cap: cut to it
        ({"max_ms": 500}, "200", 200),  # asked for less: left as asked
        ({"max_ms": 500}, None, 500),  # the target's own 3000 ms is capped too
        ({"max_ms": 500}, "500", 500),
        ({"timeout_ms": 800}, "200", 800),  # timeout_ms replaces, whatever was asked
        ({"timeout_ms": 800, "max_ms": 500}, "200", 500),  # and max_ms still caps what it set
    ],
    ids=["above the cap", "below the cap", "target default", "at the cap", "replaced", "replaced then capped"],
)
def test_the_timeout_filter_replaces_and_caps_the_calls_timeout(
    step: dict[str, Any], requested: str | None, sent: int
) -> None:
    """The channel bounds the call by the timeout it is given: a cap that were only validated,
    never applied, would let a caller's rpc_request_timeout hold the call for up to an hour."""
    from layotto_fast.components.invoke.filters import TimeoutFilter

    channel = RecordingChannel()
    service = InvokeService({"a": Target("a", channel, 3000, before=[TimeoutFilter(step)])})
    headers = {} if requested is None else {"rpc_request_timeout": requested}
    run(service, InvokeRequest(id="a", method="m", data=b"", headers=headers))
    assert channel.seen[-1].timeout_ms == sent


def test_the_headers_filter_takes_scalar_values_as_text() -> None:
    from layotto_fast.components.invoke.filters import HeaderFilter

    step = HeaderFilter({"set": {"x-count": 3, "x-from": "sidecar"}, "remove": ["x-secret"]})
    request = InvokeRequest(id="a", method="m", data=b"", headers={"x-secret": "s", "x-keep": "k"})
    assert step.before(request).headers == {"x-keep": "k", "x-count": "3", "x-from": "sidecar"}


def test_the_headers_filter_matches_names_in_any_case() -> None:
    """The call's metadata keys arrive lower-case, the config's as written: a removed name
    goes, and a set one replaces the caller's, whatever the case of either."""
    from layotto_fast.components.invoke.filters import HeaderFilter

    step = HeaderFilter({"set": {"X-From": "sidecar"}, "remove": ["X-Internal"]})
    request = InvokeRequest(
        id="a", method="m", data=b"", headers={"x-internal": "1", "X-INTERNAL": "2", "x-from": "evil", "x-keep": "k"}
    )
    assert step.before(request).headers == {"x-keep": "k", "X-From": "sidecar"}
    with pytest.raises(StartupError) as caught:
        parse(_step(name="headers", set={"X-From": "a", "x-from": "b"}), "c.yaml")
    assert "set names 'X-From' and 'x-from': header names are case-insensitive" in caught.value.problem


@register_filter("test_crashing_factory")
def crashing_factory(config: Any) -> PassThrough:
    """A user's factory failing with neither ValueError nor TypeError, which mean a refused config."""
    raise KeyError("missing")


def test_a_users_module_or_factory_that_fails_is_a_startup_error(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crashing_filters.py").write_text("raise RuntimeError('needs FILTER_HOME')\n")
    (tmp_path / "broken_syntax_filters.py").write_text("def (\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    failures = {"crashing_filters": "RuntimeError: needs FILTER_HOME", "broken_syntax_filters": "SyntaxError"}
    for module, failure in failures.items():
        with pytest.raises(StartupError) as caught:
            parse({"filter_modules": ["layotto_fast", module]}, "c.yaml")
        assert caught.value.field == "invoke.filter_modules[1]"
        assert f"cannot import {module!r}: {failure}" in caught.value.problem
    with pytest.raises(StartupError) as caught:
        parse(_step(name="test_crashing_factory", x=1), "c.yaml")
    assert caught.value.field == "invoke.targets[0].before_invoke[0]"
    assert "filter 'test_crashing_factory' failed to build: KeyError: 'missing'" in caught.value.problem


def test_a_users_filter_module_is_imported(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_filters.py").write_text(
        "from layotto_fast.runtime.invoke import PassThrough, register_filter\n"
        "@register_filter('mine')\n"
        "class Mine(PassThrough):\n"
        "    def __init__(self, config):\n"
        "        self.config = config\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = parse(
        {"filter_modules": ["my_filters"],
         "targets": [{"id": "a", "channel": "http", "address": "h:1", "before_invoke": [{"name": "mine", "k": 1}]}]},
        "c.yaml",
    )  # fmt: skip
    assert settings.targets[0].before_invoke[0].config == {"k": 1}


def test_dubbo_json_rpc_makes_a_generic_call_of_a_json_body_for_a_dubbo_target() -> None:
    from layotto_fast.components.invoke.filters import DubboJsonRpc
    from layotto_fast.components.invoke.mesh_channels import DUBBO_GENERIC, DubboCall

    step = DubboJsonRpc({})
    request = step.before(InvokeRequest(id="a", method="echo", data=b'["hi", 5, 3000000000, true, {"k": [1]}]',
                                        channel="dubbo"))  # fmt: skip
    assert request.extensions[DUBBO_GENERIC] == DubboCall(
        "echo", ["java.lang.String", "int", "long", "boolean", "java.util.Map"], ["hi", 5, 3000000000, True, {"k": [1]}]
    )
    typed = step.before(InvokeRequest(id="a", method="m", data=b'{"types": ["java.lang.Integer"], "args": [1]}'))
    assert typed.extensions[DUBBO_GENERIC].arg_types == ["java.lang.Integer"]
    answered = InvokeResult(data=b'"x"')
    assert step.after(request, answered) is answered, "the channel made the JSON already"


def test_dubbo_json_rpc_on_an_http_target_does_what_layottos_filter_does() -> None:
    """Layotto's filter is for dubbo-go's JSON-RPC server behind its http channel: its demo's
    JSON-RPC body was refused here (not a list of arguments)."""
    from layotto_fast.components.invoke.filters import DubboJsonRpc
    from layotto_fast.components.invoke.mesh_channels import DUBBO_GENERIC

    body = b'{"jsonrpc":"2.0","method":"GetUser","params":["A003"],"id":9527}'
    request = DubboJsonRpc({}).before(
        InvokeRequest(id="com.ikurento.user.UserProvider", method="GetUser", data=body, channel="http")
    )
    assert (request.method, request.data, request.content_type) == ("com.ikurento.user.UserProvider", body,
                                                                    "application/json")  # fmt: skip
    assert request.headers == {"x-services": "com.ikurento.user.UserProvider", "x-method": "GetUser",
                               "accept": "application/json"}  # fmt: skip
    assert DUBBO_GENERIC not in request.extensions


def test_sofarpc_json_sends_sofarpcs_json_serialization() -> None:
    from layotto_fast.components.invoke.filters import SofaRpcJson
    from layotto_fast.components.invoke.mesh_channels import BOLT_CODEC

    step = SofaRpcJson({})
    request = step.before(InvokeRequest(id="com.example.EchoService:1.0", method="echo", data=b'{"args": ["hi", 1]}'))
    assert (request.data, request.extensions[BOLT_CODEC]) == (b'["hi",1]', 12)
    one = step.before(InvokeRequest(id="s", method="echo", data=b'["hi"]'))
    assert one.data == b'"hi"', "one argument goes bare, as SOFARPC reads it"
    assert step.after(request, InvokeResult(data=b'"hi"')).content_type == "application/json"


def test_a_sofarpc_error_answer_is_read_in_either_serialization() -> None:
    """The answer SOFARPC's provider gave its own consumer for fail('echo-0') (a golden vector
    recorded off the wire), and the JSON serialization's bare message."""
    import json
    from pathlib import Path

    import layotto_fast_native as native

    from layotto_fast.components.invoke.mesh_channels import _bolt_error_message

    vectors = json.loads((Path(__file__).resolve().parents[1] / "mesh" / "golden" / "vectors.json").read_text())
    answer = native.decode_bolt_response(bytes.fromhex(vectors["bolt_response_sofarpc_fail"]["hex"]))
    codec, content = answer[2], answer[-1]
    assert _bolt_error_message(codec, content) == ": java.lang.IllegalStateException: echo-0"
    assert _bolt_error_message(12, b'"out of stock"') == ": out of stock"
    # a successful answer's content, and bytes that are no Hessian, name nothing
    ok = native.decode_bolt_response(bytes.fromhex(vectors["bolt_response_sofarpc"]["hex"]))[-1]
    assert _bolt_error_message(1, ok) == _bolt_error_message(1, b"\xff\x00") == ""
    assert _bolt_error_message(11, b"\x0a\x03bad") == "", "protobuf content is not read"


def test_an_http_targets_connections_are_bounded_by_default_and_as_configured() -> None:
    default, eight, unbounded = parse({"targets": [
        {"id": "a", "channel": "http", "address": "h:1"},
        {"id": "b", "channel": "http", "address": "h:1", "max_connections": 8},
        {"id": "c", "channel": "http", "address": "h:1", "max_connections": 0},
    ]}, "c.yaml").targets  # fmt: skip
    assert (default.max_connections, eight.max_connections, unbounded.max_connections) == (256, 8, 0)


def test_a_target_without_a_timeout_has_layottos_3000_ms() -> None:
    targets = [{"id": "a", "channel": "http", "address": "h:1"},
               {"id": "b", "channel": "http", "address": "h:1", "timeout_ms": 250}]  # fmt: skip
    settings = parse({"targets": targets}, "c.yaml")
    assert [t.timeout_ms for t in settings.targets] == [3000, 250]


def test_a_json_value_the_dubbo_encoder_cannot_hold_is_invalid_argument() -> None:
    """{"$class": 5}: a class name that is no string; the call fails before reaching the mesh."""
    from layotto_fast.components.invoke.filters import DubboJsonRpc
    from layotto_fast.components.invoke.mesh_channels import DubboChannel, MeshChannelConfig, MeshInvoker

    channel = DubboChannel(MeshChannelConfig(cluster="c", address=None, service="s"), MeshInvoker(lambda: None))
    request = DubboJsonRpc({}).before(InvokeRequest(id="d", method="echo", data=b'[{"$class": 5}]'))
    with pytest.raises(InvalidArgument, match=r"^message\.data: "):
        asyncio.run(channel.call(request))


class RecordingMeshInvoker:
    """Test double for the mesh: keeps each frame sent, answers a Dubbo OK with the string "ok"."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send(self, protocol: str, frame: bytes, timeout_ms: int, **where: str | None) -> bytes:
        self.frames.append(frame)
        body = b"\x91\x02ok"  # Hessian2: RESPONSE_VALUE (1), then the string
        return b"\xda\xbb\x02\x14" + frame[4:12] + len(body).to_bytes(4, "big") + body


def test_a_callers_metadata_cannot_retarget_a_dubbo_call() -> None:
    """Dubbo providers take path, version and group from the attachments, and generic decides
    how the arguments decode: the target's own values go out, whatever the metadata says."""
    from dubbo.codec.hessian2 import Decoder  # type: ignore[import-untyped]  # dubbo-py's, not ours

    from layotto_fast.components.invoke.filters import DubboJsonRpc
    from layotto_fast.components.invoke.mesh_channels import DubboChannel, MeshChannelConfig, MeshInvoker

    invoker = RecordingMeshInvoker()
    config = MeshChannelConfig(cluster="c", address=None, service="com.example.EchoService", version="1.0")
    step = DubboJsonRpc({})
    service = InvokeService({"d": Target("d", DubboChannel(config, cast(MeshInvoker, invoker)), 3000,
                                         before=[step], after=[step])})  # fmt: skip
    metadata = {
        "path": "com.corp.AdminService", "Interface": "com.corp.AdminService", "version": "9.9", "group": "admin",
        "generic": "bean", "dubbo": "9.0.0", "timeout": "1", "dubbo.tag": "gray", "sys_callback_arg-0": "1",
        "x-trace": "abc",
    }  # fmt: skip
    result = run(service, InvokeRequest(id="d", method="echo", data=b'["hi"]', headers=metadata))
    assert result.data == b'"ok"'
    sent = Decoder(io.BytesIO(invoker.frames[0])).decode()
    assert (sent.service_name, sent.service_version, sent.method_name) == (b"com.example.EchoService", b"1.0", b"echo")
    assert sent.attachment == {
        "path": "com.example.EchoService", "interface": "com.example.EchoService", "version": "1.0",
        "generic": "true", "x-trace": "abc",
    }  # fmt: skip


def test_a_verb_number_the_enum_lacks_is_invalid_argument() -> None:
    from google.protobuf import any_pb2

    from layotto_fast._proto import runtime_pb2 as pb
    from layotto_fast.api.layotto import LayottoRuntime
    from layotto_fast.runtime.lifecycle import Components
    from layotto_fast.runtime.services import Services

    channel = RecordingChannel()
    invoke = InvokeService({"app": Target("app", channel, 3000)})
    runtime = LayottoRuntime(Services.over(Components([]), "app", invoke=invoke))

    def call(verb: int) -> Any:
        # A cast: the enum's type stands for its named values, and the wire carries any number.
        extension = pb.HTTPExtension(verb=cast("pb.HTTPExtension.Verb", verb))
        message = pb.CommonInvokeRequest(method="m", data=any_pb2.Any(value=b""), http_extension=extension)
        return asyncio.run(runtime.InvokeService(pb.InvokeServiceRequest(id="app", message=message)))

    call(pb.HTTPExtension.GET)
    assert channel.seen[-1].verb == "GET"
    with pytest.raises(InvalidArgument, match=r"^message\.http_extension\.verb: 99 "):
        call(99)
    assert len(channel.seen) == 1, "refused before the call"


class AnsweringMeshInvoker(RecordingMeshInvoker):
    """Keeps each frame sent and answers with ``answer(frame)``."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self._answer = answer

    async def send(self, protocol: str, frame: bytes, timeout_ms: int, **where: str | None) -> bytes:
        self.frames.append(frame)
        answer: bytes = self._answer(frame)
        return answer


def test_a_generic_dubbo_call_answers_json_and_an_exception_with_only_a_before_step() -> None:
    """Layotto's configs name dubbo_json_rpc under before_invoke only: the answer came back as
    raw Hessian, and a provider's exception as a successful answer."""
    from dubbo.codec.hessian2 import Decoder  # type: ignore[import-untyped]  # dubbo-py's, not ours

    from layotto_fast.components.invoke.filters import DubboJsonRpc
    from layotto_fast.components.invoke.mesh_channels import DubboChannel, MeshChannelConfig, MeshInvoker
    from layotto_fast.errors import Unknown

    def answer(body: bytes) -> Any:
        return lambda frame: b"\xda\xbb\x02\x14" + frame[4:12] + len(body).to_bytes(4, "big") + body

    config = MeshChannelConfig(cluster="c", address=None, service="com.example.EchoService", group="team-a")
    step = DubboJsonRpc({})
    ok = AnsweringMeshInvoker(answer(b"\x91\x02ok"))  # RESPONSE_VALUE "ok"
    service = InvokeService({"d": Target("d", DubboChannel(config, cast(MeshInvoker, ok)), 3000, before=[step],
                                         channel_kind="dubbo")})  # fmt: skip
    result = run(service, InvokeRequest(id="d", method="echo", data=b'["hi"]'))
    assert (result.data, result.content_type) == (b'"ok"', "application/json")
    sent = Decoder(io.BytesIO(ok.frames[0])).decode()
    assert sent.attachment["group"] == "team-a", "a provider exported with a group is found by it"
    thrown = AnsweringMeshInvoker(answer(b"\x90\x04boom"))  # RESPONSE_WITH_EXCEPTION "boom"
    service = InvokeService({"d": Target("d", DubboChannel(config, cast(MeshInvoker, thrown)), 3000, before=[step],
                                         channel_kind="dubbo")})  # fmt: skip
    with pytest.raises(Unknown, match="the Dubbo service threw str: boom"):
        run(service, InvokeRequest(id="d", method="echo", data=b'["hi"]'))


def _hessian_class(name: str, *fields: str) -> bytes:
    """A Hessian2 class definition (``C``) of ``name`` with ``fields``, all short strings."""
    out = b"C" + bytes([len(name)]) + name.encode() + bytes([0x90 + len(fields)])
    return out + b"".join(bytes([len(f)]) + f.encode() for f in fields)


@pytest.mark.parametrize(
    ("body", "json"),
    [
        # Java's one-field value objects stand for their value, as a java.util.Date does
        (b"\x91" + _hessian_class("java.math.BigDecimal", "value") + b"\x60\x0512.34", b'"12.34"'),
        (b"\x91" + _hessian_class("java.sql.Timestamp", "value") + b"\x60\x4a" + (1700000000123).to_bytes(8, "big"),
         b"1700000000123"),
        # an application's class with a value field is an object still
        (b"\x91" + _hessian_class("com.x.Money", "value") + b"\x60\x011", b'{"$class":"com.x.Money","value":"1"}'),
        (b"\x91\x22\xff\x00", b'"/wA="'),  # a byte[]: base64, as Jackson writes one
    ],
)  # fmt: skip
def test_a_generic_dubbo_answer_s_values_come_back_as_json_clients_expect(body: bytes, json: bytes) -> None:
    """BigDecimal and java.sql dates came back as {"$class": ..., "value": ...} wrappers, and
    a byte[] as a Latin-1 string."""
    from layotto_fast.components.invoke.filters import DubboJsonRpc
    from layotto_fast.components.invoke.mesh_channels import DubboChannel, MeshChannelConfig, MeshInvoker

    config = MeshChannelConfig(cluster="c", address=None, service="com.example.EchoService")
    invoker = AnsweringMeshInvoker(
        lambda frame: b"\xda\xbb\x02\x14" + frame[4:12] + len(body).to_bytes(4, "big") + body
    )
    service = InvokeService({"d": Target("d", DubboChannel(config, cast(MeshInvoker, invoker)), 3000,
                                         before=[DubboJsonRpc({})], channel_kind="dubbo")})  # fmt: skip
    assert run(service, InvokeRequest(id="d", method="m", data=b"[]")).data == json


def test_a_thrown_exception_without_a_message_names_its_class_alone() -> None:
    """Its decoded object, stack trace and all, went into the message before."""
    from layotto_fast.components.invoke.filters import DubboJsonRpc
    from layotto_fast.components.invoke.mesh_channels import DubboChannel, MeshChannelConfig, MeshInvoker
    from layotto_fast.errors import Unknown

    body = b"\x90" + _hessian_class("java.lang.NullPointerException", "detailMessage") + b"\x60N"
    config = MeshChannelConfig(cluster="c", address=None, service="com.example.EchoService")
    invoker = AnsweringMeshInvoker(
        lambda frame: b"\xda\xbb\x02\x14" + frame[4:12] + len(body).to_bytes(4, "big") + body
    )
    service = InvokeService({"d": Target("d", DubboChannel(config, cast(MeshInvoker, invoker)), 3000,
                                         before=[DubboJsonRpc({})], channel_kind="dubbo")})  # fmt: skip
    with pytest.raises(Unknown, match=r"^the Dubbo service threw java.lang.NullPointerException: $"):
        run(service, InvokeRequest(id="d", method="m", data=b"[]"))


def test_the_callers_service_and_method_headers_go_out_on_the_bolt_channel_as_layottos_do() -> None:
    """Layotto's bolt channel sends the metadata alone: its apps name the service and method
    there, and they were overwritten by the target's service and an empty method."""
    import layotto_fast_native as native

    from layotto_fast.components.invoke.mesh_channels import BoltChannel, MeshChannelConfig, MeshInvoker

    def answer(frame: bytes) -> bytes:
        request_id = native.decode_bolt_request(frame)[0]
        return native.encode_bolt_response(request_id, 1, 0, "com.alipay.sofa.rpc.core.response.SofaResponse", {},
                                           b"")  # fmt: skip

    invoker = AnsweringMeshInvoker(answer)
    channel = BoltChannel(MeshChannelConfig(cluster="c", address=None, service="target-id"), cast(MeshInvoker, invoker))
    named = {"service": "com.foo.Bar:1.0", "sofa_head_method_name": "sayHello"}
    asyncio.run(channel.call(InvokeRequest(id="t", method="", data=b"", headers=dict(named))))
    asyncio.run(channel.call(InvokeRequest(id="t", method="echo", data=b"")))
    asyncio.run(channel.call(InvokeRequest(id="t", method="", data=b"")))
    configured = MeshChannelConfig(cluster="c", address=None, service="com.corp.Fixed:1.0", service_configured=True)
    asyncio.run(BoltChannel(configured, cast(MeshInvoker, invoker)).call(
        InvokeRequest(id="t", method="m", data=b"", headers=dict(named))))  # fmt: skip
    headers = [native.decode_bolt_request(frame)[6] for frame in invoker.frames]
    assert headers[0] == {"service": "com.foo.Bar:1.0", "sofa_head_target_service": "com.foo.Bar:1.0",
                          "sofa_head_method_name": "sayHello"}  # fmt: skip
    assert headers[1] == {"service": "target-id", "sofa_head_target_service": "target-id",
                          "sofa_head_method_name": "echo"}  # fmt: skip
    assert "sofa_head_method_name" not in headers[2], "no method: none named"
    assert headers[3]["service"] == headers[3]["sofa_head_target_service"] == "com.corp.Fixed:1.0", (
        "a service written in the target's config is not the caller's to change"
    )
    with pytest.raises(InvalidArgument, match="bolt service"):
        request = InvokeRequest(id="t", method="m", data=b"", extensions={"bolt_codec": 300})
        asyncio.run(channel.call(request))
