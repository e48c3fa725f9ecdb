"""The filters the package ships, registered by name:

- ``headers``: ``set: {name: value}`` adds or replaces request headers, ``remove: [name]``
  drops them.
- ``timeout``: ``timeout_ms: N`` makes N the call's timeout, whatever the caller asked
  (``max_ms: N`` only caps it).
- ``dubbo_json_rpc``: a JSON body becomes Dubbo's generic call, and the answer JSON, as
  Layotto's filter of that name lets an app call a Dubbo service with JSON. The body is
  ``{"types": ["java.lang.String"], "args": ["hi"]}``, or a bare list of arguments whose
  Java types follow from their JSON types.
- ``sofarpc_json``: the same JSON body becomes a SOFARPC request (a Hessian2
  ``SofaRequest`` and its arguments) for the bolt channel, and the ``SofaResponse``
  answer JSON; a SOFARPC error fails the call with its message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import layotto_fast_native as native
import orjson

from layotto_fast.components.invoke.mesh_channels import DUBBO_GENERIC, DUBBO_REPLY, DubboCall
from layotto_fast.errors import Internal, InvalidArgument
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
            raise Internal(f"the Dubbo service threw {name}: {message or value}")
        return _json_answer(result, value)


SOFA_REQUEST = "com.alipay.sofa.rpc.core.request.SofaRequest"


@register_filter("sofarpc_json")
class SofaRpcJson:
    """For a bolt target whose codec is hessian2 and whose service is SOFARPC's unique
    name (``interface:version``)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._app = str(config.get("target_app", ""))

    def before(self, request: InvokeRequest) -> InvokeRequest:
        types, args = _json_call(request)
        service = request.headers.get("sofa_head_target_service") or request.id
        sofa_request = {
            "$class": SOFA_REQUEST,
            "targetAppName": self._app,
            "methodName": request.method,
            "targetServiceUniqueName": service,
            "methodArgSigs": types,
            "requestProps": {},
        }
        try:
            request.data = native.encode_hessian([sofa_request, *args])
        except ValueError as exc:
            raise InvalidArgument(f"message.data: {exc}") from None
        return request

    def after(self, request: InvokeRequest, result: InvokeResult) -> InvokeResult:
        try:
            values = native.decode_hessian(result.data)
        except (ValueError, native.FrameError) as exc:
            raise Internal(f"the SOFARPC answer is not Hessian2: {exc}") from None
        response = values[0] if values else None
        if not isinstance(response, dict):
            raise Internal(f"the SOFARPC answer is not a SofaResponse: {response!r}")
        if response.get("isError"):
            raise Internal(f"the SOFARPC service failed: {response.get('errorMsg')}")
        app_response = response.get("appResponse")
        if isinstance(app_response, dict) and str(app_response.get("$class", "")).endswith("Exception"):
            message = app_response.get("detailMessage")
            raise Internal(f"the SOFARPC service threw {app_response['$class']}: {message}")
        return _json_answer(result, app_response)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError
