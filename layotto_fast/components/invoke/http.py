"""The http channel: ``verb /method?querystring`` to an HTTP/1.1 upstream over kept-alive
connections; a non-2xx answer fails the call with the status's meaning and the body."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote

from layotto_fast.components.invoke.config import DEFAULT_HTTP_MAX_CONNECTIONS
from layotto_fast.errors import (
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RuntimeApiError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from layotto_fast.http.client import MAX_RESPONSE_BYTES, ConnectionsBusy, HttpClient, HttpError, ResponseTooLarge
from layotto_fast.http.messages import HEADER_CONTROL, HEADER_NAME
from layotto_fast.runtime.invoke import TARGET_ADDRESS_HEADER, InvokeRequest, InvokeResult, as_header_bytes
from layotto_fast.runtime.metadata import is_host_port

DEFAULT_VERB = "GET"  # with no http_extension, as Layotto's http channel sends
# Layotto's http channel names the call's target (its id) in this header, over any the caller sent.
ID_HEADER = "id"
# Request headers the client sets itself: not forwarded.
_NOT_FORWARDED = frozenset({"host", "content-length", "connection", "transfer-encoding", ID_HEADER})
# ... and Content-Type too when the message has one: it is sent once, the message's.
_NOT_FORWARDED_TYPED = _NOT_FORWARDED | {"content-type"}
_STATUS_ERRORS: dict[int, type[RuntimeApiError]] = {
    400: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    408: DeadlineExceeded,  # the upstream gave up waiting for the request
    409: Conflict,
    412: FailedPrecondition,
    429: ResourceExhausted,
    501: Unimplemented,
    502: Unavailable,  # a proxy in front of the upstream could not reach it
    503: Unavailable,
    504: DeadlineExceeded,
}
# Clients kept for addresses named by rpc_target_address, beyond the target's own: each
# holds idle connections, and callers may name any number of addresses.
MAX_ADDRESS_CLIENTS = 64
# What RFC 3986 lets a path and a query hold as is, besides letters, digits and "-._~"
# (quote never escapes those): "%" for escapes already made, "?" because a method has
# always been allowed to carry its query.
_TARGET_SAFE = "/:@!$&'()*+,;=%?"
# A "%" that starts no %XX escape stands for itself.
_BARE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class HttpChannelConfig:
    address: str
    max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS  # per upstream address; 0: no limit
    # An answer's body past this fails the call RESOURCE_EXHAUSTED as soon as it is: the
    # sidecar's max_message_bytes, which no InvokeResponse may pass anyway.
    max_response_bytes: int = MAX_RESPONSE_BYTES


def _safe(text: str, what: str) -> str:
    if "\r" in text or "\n" in text:
        raise InvalidArgument(f"{what}: {text!r} contains a line break")
    return text


def _header_value(text: str, what: str) -> str:
    """``text`` as a header line carries it: HTTP/1.1 headers are Latin-1 bytes, with no
    control character but the tab (RFC 9110, 5.5)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what}: {text!r} has characters an HTTP header cannot carry") from None
    _safe(text, what)
    if HEADER_CONTROL.search(text):
        raise InvalidArgument(f"{what}: {text!r} has a control character an HTTP header cannot carry")
    return text


def _header_name(text: str) -> str:
    if not HEADER_NAME.fullmatch(text):
        raise InvalidArgument(f"metadata key {text!r} is not an HTTP header name")
    return text


def _escaped(text: str) -> str:
    """``text`` as a request-target may carry it: other characters as UTF-8 %XX escapes."""
    return quote(_BARE_PERCENT.sub("%25", text), safe=_TARGET_SAFE)


def _request_target(method: str, querystring: str) -> str:
    target = "/" + _escaped(_safe(method.lstrip("/"), "message.method"))
    if querystring:
        # a method carrying a query of its own: the querystring's parameters join it
        joint = "&" if "?" in target else "?"
        target += joint + _escaped(_safe(querystring, "message.http_extension.querystring"))
    return target


class HttpChannel:
    def __init__(self, config: HttpChannelConfig) -> None:
        self._config = config
        # as many kept idle as may be open: a burst past 64 in flight, kept to 64 idle, would
        # open and close connections at every burst (Layotto's pool keeps maxActive free ones)
        self._own_client = HttpClient(
            config.address, config.max_connections, config.max_connections or 64, config.max_response_bytes
        )
        # Least recently used first: the first one goes when there are too many.
        self._address_clients: OrderedDict[str, HttpClient] = OrderedDict()

    def _client(self, target_address: str) -> HttpClient:
        if not target_address or target_address == self._config.address:
            return self._own_client
        client = self._address_clients.get(target_address)
        if client is not None:
            self._address_clients.move_to_end(target_address)
            return client
        if not is_host_port(target_address):
            raise InvalidArgument(f"{TARGET_ADDRESS_HEADER}: must be host:port, got {target_address!r}")
        client = self._address_clients[target_address] = HttpClient(
            target_address,
            self._config.max_connections,
            self._config.max_connections or 64,
            self._config.max_response_bytes,
        )
        if len(self._address_clients) > MAX_ADDRESS_CLIENTS:
            # The least recently used with no call in flight, as many as there are too many:
            # one with calls would leave its connections open beside a new client's, past its
            # max_connections. With every one busy there are more until calls end.
            idle = [a for a, c in self._address_clients.items() if not c.in_flight and c is not client]
            for address in idle[: len(self._address_clients) - MAX_ADDRESS_CLIENTS]:
                self._address_clients.pop(address).close()
        return client

    async def call(self, request: InvokeRequest) -> InvokeResult:
        target = _request_target(request.method, request.querystring)
        client = self._client(request.target_address)
        address = client.address
        not_forwarded = _NOT_FORWARDED_TYPED if request.content_type else _NOT_FORWARDED
        headers = {
            _header_name(k): _header_value(v, f"metadata {k}")
            for k, v in request.headers.items()
            if k.lower() not in not_forwarded
        }
        headers[ID_HEADER] = as_header_bytes(request.id)
        if request.content_type:
            headers["Content-Type"] = _header_value(request.content_type, "message.content_type")
        verb = request.verb or DEFAULT_VERB
        try:
            response = await client.request(verb, target, headers, request.data, request.timeout_ms / 1000)
        except ConnectionsBusy as exc:
            raise DeadlineExceeded(
                f"no answer from http://{address}{target} within {request.timeout_ms} ms: {exc} (max_connections)"
            ) from None
        except TimeoutError as exc:
            if exc.errno is not None:  # the kernel gave up connecting, before the call's own deadline
                raise Unavailable(f"http://{address}{target}: {exc}") from None
            raise DeadlineExceeded(f"no answer from http://{address}{target} within {request.timeout_ms} ms") from None
        except ResponseTooLarge as exc:
            raise ResourceExhausted(f"http://{address}{target}: {exc}") from None
        except UnicodeError as exc:  # a name that passes as host:port but not as a DNS name (IDNA), or as a Host header
            raise InvalidArgument(f"http://{address}: a host name this channel cannot use ({exc})") from None
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
        self._own_client.close()
        for client in self._address_clients.values():
            client.close()
        self._address_clients.clear()
