"""The filters the package ships, registered by name:

- ``headers``: ``set: {name: value}`` adds or replaces request headers, ``remove: [name]``
  drops them.
- ``timeout``: ``timeout_ms: N`` makes N the call's timeout, whatever the caller asked
  (``max_ms: N`` only caps it).
- ``dubbo_json_rpc``: a JSON body becomes Dubbo's generic call, and the answer JSON, as
  Layotto's filter of that name lets an app call a Dubbo service with JSON. The body is
  ``{"types": ["java.lang.String"], "args": ["hi"]}``, or a bare list of arguments whose
  Java types follow from their JSON types.
- ``sofarpc_json``: the same JSON body goes to a SOFARPC provider over the bolt channel
  in SOFARPC's own JSON serialization (Bolt codec 12), and the answer comes back JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from layotto_fast.components.invoke.mesh_channels import BOLT_CODEC, DUBBO_GENERIC, DUBBO_REPLY, DubboCall
from layotto_fast.errors import InvalidArgument, Unknown
from layotto_fast.runtime.invoke import InvokeRequest, InvokeResult, PassThrough, register_filter


@register_filter("headers")
class HeaderFilter(PassThrough):
    def __init__(self, config: Mapping[str, Any]) -> None:
        self._set = {str(k): str(v) for k, v in (config.get("set") or {}).items()}
        self._remove = [str(k) for k in config.get("remove") or []]

    def before(self, request: InvokeRequest) -> InvokeRequest:
        for name in self._remove:
            request.headers.pop(name, None)
        request.headers.update(self._set)
        return request


@register_filter("timeout")
class TimeoutFilter(PassThrough):
    def __init__(self, config: Mapping[str, Any]) -> None:
        self._timeout_ms = config.get("timeout_ms")
        self._max_ms = config.get("max_ms")
        for name in ("timeout_ms", "max_ms"):
            value = config.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

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


def _json_answer(result: InvokeResult, value: Any) -> InvokeResult:
    result.data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=_jsonable)
    result.content_type = "application/json"
    return result


@register_filter("dubbo_json_rpc")
class DubboJsonRpc:
    def __init__(self, config: Mapping[str, Any]) -> None:
        del config

    def before(self, request: InvokeRequest) -> InvokeRequest:
        types, args = _json_call(request)
        request.extensions[DUBBO_GENERIC] = DubboCall(request.method, types, args)
        return request

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult:
        reply = result.extensions.get(DUBBO_REPLY)
        if reply is None:
            return result
        _, outcome, value, _ = reply
        if outcome == "exception":
            message = value.get("detailMessage") if isinstance(value, dict) else None
            name = value.get("$class") if isinstance(value, dict) else type(value).__name__
            raise Unknown(f"the Dubbo service threw {name}: {message or value}")
        return _json_answer(result, value)


SOFARPC_JSON_CODEC = 12


@register_filter("sofarpc_json")
class SofaRpcJson:
    """For a bolt target whose service is SOFARPC's unique name (``interface:version``):
    the request goes out in SOFARPC's own JSON serialization (Bolt codec 12; the arguments,
    typed by the provider from its interface, as a JSON array, or one bare value), and the
    answer is JSON."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        del config

    def before(self, request: InvokeRequest) -> InvokeRequest:
        _, args = _json_call(request)
        # SOFARPC reads one argument as a bare JSON value and several as an array.
        request.data = orjson.dumps(args[0] if len(args) == 1 else args)
        request.extensions[BOLT_CODEC] = SOFARPC_JSON_CODEC
        return request

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult:
        result.content_type = "application/json"
        return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError
