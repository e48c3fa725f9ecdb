"""The http channel: ``verb /method?querystring`` to an HTTP/1.1 upstream over kept-alive
connections; a non-2xx answer fails the call with the status's meaning and the body."""

from __future__ import annotations

from dataclasses import dataclass

from layotto_fast.errors import (
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RuntimeApiError,
    Unavailable,
    Unimplemented,
)
from layotto_fast.http.client import HttpClient, HttpError
from layotto_fast.runtime.invoke import InvokeRequest, InvokeResult

DEFAULT_VERB = "POST"
# Request headers the client sets itself: not forwarded.
_NOT_FORWARDED = {"host", "content-length", "connection", "transfer-encoding"}
_STATUS_ERRORS: dict[int, type[RuntimeApiError]] = {
    400: InvalidArgument,
    404: NotFound,
    409: Conflict,
    412: FailedPrecondition,
    429: ResourceExhausted,
    501: Unimplemented,
    503: Unavailable,
    504: DeadlineExceeded,
}


@dataclass(frozen=True)
class HttpChannelConfig:
    address: str


def _safe(text: str, what: str) -> str:
    if "\r" in text or "\n" in text:
        raise InvalidArgument(f"{what}: {text!r} contains a line break")
    return text


class HttpChannel:
    def __init__(self, config: HttpChannelConfig) -> None:
        self._config = config
        self._clients: dict[str, HttpClient] = {}

    def _client(self, address: str) -> HttpClient:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = HttpClient(address)
        return client

    async def call(self, request: InvokeRequest) -> InvokeResult:
        address = request.target_address or self._config.address
        target = "/" + _safe(request.method.lstrip("/"), "message.method")
        if request.querystring:
            target += "?" + _safe(request.querystring, "message.http_extension.querystring")
        headers = {
            _safe(k, "metadata key"): _safe(v, f"metadata {k}")
            for k, v in request.headers.items()
            if k.lower() not in _NOT_FORWARDED
        }
        if request.content_type:
            headers["Content-Type"] = _safe(request.content_type, "message.content_type")
        verb = request.verb or DEFAULT_VERB
        try:
            response = await self._client(address).request(
                verb, target, headers, request.data, request.timeout_ms / 1000
            )
        except TimeoutError:
            raise DeadlineExceeded(f"no answer from http://{address}{target} within {request.timeout_ms} ms") from None
        except (OSError, HttpError) as exc:
            raise Unavailable(f"http://{address}{target}: {exc}") from None
        if not 200 <= response.status < 300:
            kind = _STATUS_ERRORS.get(response.status, Internal)
            body = response.body[:1024].decode("utf-8", "replace")
            raise kind(f"http://{address}{target} answered {response.status}: {body}")
        return InvokeResult(
            data=response.body,
            content_type=response.headers.get("content-type", ""),
            headers=response.headers,
        )

    async def close(self) -> None:
        for client in self._clients.values():
            client.close()
