"""The filters the package ships, registered by name:

- ``headers``: ``set: {name: value}`` adds or replaces request headers, ``remove: [name]``
  drops them; names match in any case.
- ``timeout``: ``timeout_ms: N`` makes N the call's timeout, whatever the caller asked
  (``max_ms: N`` only caps it).
- ``dubbo_json_rpc``: on a dubbo target, a JSON body becomes Dubbo's generic call, and the
  answer JSON. The body is ``{"types": ["java.lang.String"], "args": ["hi"]}``, or a bare
  list of arguments whose Java types follow from their JSON types. On an http target it
  does what Layotto's filter of that name does, for dubbo-go's JSON-RPC server: the
  JSON-RPC body goes as it is, to ``/<id>``, with ``x-services`` and ``x-method`` headers.
- ``sofarpc_json``: the same JSON body goes to a SOFARPC provider over the bolt channel
  in SOFARPC's own JSON serialization (Bolt codec 12), and the answer comes back JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from layotto_fast.components.invoke.mesh_channels import BOLT_CODEC, DUBBO_GENERIC, DubboCall
from layotto_fast.errors import InvalidArgument
from layotto_fast.http.messages import HEADER_CONTROL, HEADER_NAME
from layotto_fast.runtime.invoke import InvokeRequest, InvokeResult, PassThrough, as_header_bytes, register_filter
from layotto_fast.runtime.invoke_service import MAX_TIMEOUT_MS


def _only_keys(config: Mapping[str, Any], known: tuple[str, ...]) -> None:
    # A misspelt key would otherwise leave the filter doing nothing, silently.
    unknown = sorted(set(map(str, config)) - set(known))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(known) or 'none'})")


@dataclass(frozen=True)
class HeaderFilterConfig:
    set_headers: dict[str, str]
    remove_headers: tuple[str, ...]

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> HeaderFilterConfig:
        _only_keys(config, ("set", "remove"))
        raw_set = config.get("set") or {}
        if not isinstance(raw_set, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for k, v in raw_set.items()
        ):
            raise ValueError(f"set must be a mapping of header names to string values, got {raw_set!r}")
        raw_remove = config.get("remove") or []
        if not isinstance(raw_remove, list) or not all(isinstance(k, str) and k for k in raw_remove):
            raise ValueError(f"remove must be a list of header names, got {raw_remove!r}")
        for name in (*raw_set, *raw_remove):
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)")
        for name, value in raw_set.items():
            if HEADER_CONTROL.search(str(value)):
                raise ValueError(f"set {name}: {value!r} has a control character a header cannot carry")
        seen: dict[str, str] = {}
        for name in raw_set:
            twice = seen.setdefault(name.lower(), name)
            if twice != name:
                raise ValueError(f"set names {twice!r} and {name!r}: header names are case-insensitive")
        # Values are kept as the headers' bytes, a channel's to send: UTF-8, as gRPC sends text.
        set_headers = {k: as_header_bytes(str(v)) for k, v in raw_set.items()}
        return cls(set_headers=set_headers, remove_headers=tuple(raw_remove))


@register_filter("headers")
class HeaderFilter(PassThrough):
    def __init__(self, config: Mapping[str, Any]) -> None:
        parsed = HeaderFilterConfig.parse(config)
        self._set = parsed.set_headers
        # Names compare case-insensitively (the call's metadata keys arrive lower-case): a
        # header set replaces one of that name in any case, as a removed one goes in any case.
        self._drop = frozenset(name.lower() for name in (*parsed.remove_headers, *parsed.set_headers))

    def before(self, request: InvokeRequest) -> InvokeRequest:
        headers = request.headers
        for name in [name for name in headers if name.lower() in self._drop]:
            del headers[name]
        headers.update(self._set)
        return request


@dataclass(frozen=True)
class TimeoutFilterConfig:
    timeout_ms: int | None
    max_ms: int | None

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> TimeoutFilterConfig:
        _only_keys(config, ("timeout_ms", "max_ms"))
        for name in ("timeout_ms", "max_ms"):
            value = config.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMEOUT_MS
            ):
                raise ValueError(f"{name} must be a positive integer up to {MAX_TIMEOUT_MS}, got {value!r}")
        return cls(timeout_ms=config.get("timeout_ms"), max_ms=config.get("max_ms"))


@register_filter("timeout")
class TimeoutFilter(PassThrough):
    def __init__(self, config: Mapping[str, Any]) -> None:
        parsed = TimeoutFilterConfig.parse(config)
        self._timeout_ms, self._max_ms = parsed.timeout_ms, parsed.max_ms

    def before(self, request: InvokeRequest) -> InvokeRequest:
        if self._timeout_ms is not None:
            request.timeout_ms = self._timeout_ms
        if self._max_ms is not None:
            request.timeout_ms = min(request.timeout_ms, self._max_ms)
        return request


def _java_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long" if not -(2**31) <= value < 2**31 else "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "java.lang.String"
    if isinstance(value, list):
        return "java.util.List"
    if isinstance(value, dict):
        return "java.util.Map"
    return "java.lang.Object"


def _json_call(request: InvokeRequest) -> tuple[list[str], list[Any]]:
    """(Java types, arguments) of a JSON body: a bare list, or {"types": [...], "args": [...]}."""
    try:
        body = orjson.loads(request.data) if request.data else []
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"message.data: not JSON ({exc})") from None
    if isinstance(body, list):
        args, types = body, [_java_type(a) for a in body]
    elif isinstance(body, dict) and isinstance(body.get("args"), list):
        args = body["args"]
        types = body.get("types") or [_java_type(a) for a in args]
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types) or len(types) != len(args):
            raise InvalidArgument("message.data: types must be a list of Java type names, one per arg")
    else:
        raise InvalidArgument('message.data: expected a JSON list of arguments or {"types": [...], "args": [...]}')
    if not request.method:
        raise InvalidArgument("message.method: the method to call must not be empty")
    return types, args


@register_filter("dubbo_json_rpc")
class DubboJsonRpc:
    """On a dubbo target, the JSON body becomes Dubbo's generic call, whose answer the
    channel gives back as JSON. On an http target, what Layotto's filter of that name does
    (for dubbo-go's JSON-RPC server behind the http channel): the body goes as it is, to
    ``/<id>``, with ``x-services`` (the id) and ``x-method`` (the method) headers, JSON as
    its content type and ``Accept``. Its place in ``after_invoke`` is kept and does nothing."""

    channels = ("dubbo", "http")

    def __init__(self, config: Mapping[str, Any]) -> None:
        _only_keys(config, ())

    def before(self, request: InvokeRequest) -> InvokeRequest:
        if request.channel == "http":
            request.headers["x-services"] = as_header_bytes(request.id)
            request.headers["x-method"] = as_header_bytes(request.method)
            request.headers["accept"] = "application/json"
            request.content_type = "application/json"
            request.method = request.id
            return request
        types, args = _json_call(request)
        request.extensions[DUBBO_GENERIC] = DubboCall(request.method, types, args)
        return request

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult:
        return result


SOFARPC_JSON_CODEC = 12


@register_filter("sofarpc_json")
class SofaRpcJson:
    """For a bolt target whose service is SOFARPC's unique name (``interface:version``):
    the request goes out in SOFARPC's own JSON serialization (Bolt codec 12; the arguments,
    typed by the provider from its interface, as a JSON array, or one bare value), and the
    answer is JSON."""

    channels = ("bolt",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        _only_keys(config, ())

    def before(self, request: InvokeRequest) -> InvokeRequest:
        _, args = _json_call(request)
        # SOFARPC reads one argument as a bare JSON value and several as an array.
        request.data = orjson.dumps(args[0] if len(args) == 1 else args)
        request.extensions[BOLT_CODEC] = SOFARPC_JSON_CODEC
        return request

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult:
        result.content_type = "application/json"
        return result
