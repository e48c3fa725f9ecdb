"""What every etcd component shares: its typed connection config, the connection built
from it, and how etcd failures read to a caller.

Metadata (Layotto's names; ``keyPrefixPath`` is read when ``keyPrefix`` is absent):

``endpoints``
    Required. ``host:port`` of etcd's client API, several separated by ``,`` (or ``;``,
    as in Layotto); ``http://`` is accepted and ignored, the port defaults to 2379.
    aetcd talks to one endpoint at a time: ``init`` uses the first one that answers, in
    the order given, and a failed ``ping`` moves to the next one that answers. All are
    asked at once, so finding one takes at most one timeout however many do not answer.
``keyPrefix``
    Prefix of every key the component writes; each component has its own default.
    ``lock.etcd`` reads ``keyPrefixPath`` only: its ``keyPrefix`` is the lock service's
    strategy, as in Layotto.
``username`` / ``password``
    etcd's simple authentication; both or neither. A token that expires is renewed
    once per failing call.
``dialTimeout``
    A duration (``5s``; plain digits are seconds, as in Layotto's etcd manifests): how long ``init`` waits for
    each endpoint. Default 5 s.
``operationTimeout``
    A duration: the bound of every call to etcd. Default 3 s.

aetcd's client owns the gRPC channel and the authentication token; the components
build etcd's protobuf requests (``aetcd.rpc``) themselves for transactions, leases and
watches, because they need what aetcd's wrappers drop (the revision of a transaction,
the events of one watch response together). aetcd is imported here and in the etcd
components only, so only a sidecar with an etcd component ever loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd  # type: ignore[import-untyped]
import aetcd.exceptions  # type: ignore[import-untyped]
import grpc
import grpc.aio
from aetcd import rpc

from layotto_fast.errors import InvalidArgument, RuntimeApiError, StartupError, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.timeouts import within

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 2379
# Layotto's etcd TLS settings: refused, where ignoring them connected in plain text to an
# etcd that takes TLS only, and failed as if it were down.
TLS_SETTINGS = ("tlsCa", "tlsCert", "tlsCertKey")
PING_TIMEOUT = 1.0  # a ping slower than this fails
# The other endpoints a failed ping tries answer within this: the ping and its failover end
# inside the runtime's 2 s bound on a health check (lifecycle.PING_TIMEOUT_SECONDS).
FAILOVER_TIMEOUT = 0.8
CLOSE_TIMEOUT = 1.0
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops

# Reconnect within a second of etcd coming back (gRPC's default backoff grows to 2 min);
# keepalive pings find a dead connection under an idle watch (etcd allows one per 5 s).
CHANNEL_OPTIONS: dict[str, int] = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
}

# Failures of the backend, not of the request: the caller gets UNAVAILABLE.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.ClientError,
    grpc.RpcError,
    grpc.aio.BaseError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[tuple[str, int], ...]
    key_prefix: str
    username: str = ""
    password: str = ""
    dial_timeout: float = 5.0
    operation_timeout: float = 3.0
    component: str = ""  # "name (type)", for messages

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest, default_prefix: str) -> EtcdConfig:
        for name in TLS_SETTINGS:
            if manifest.metadata.get(name):
                raise StartupError(manifest.source, manifest.metadata_field(name), "TLS to etcd is not supported")
        username = metadata.text(manifest, "username", "")
        password = metadata.text(manifest, "password", "")
        if bool(username) != bool(password):
            missing = "password" if username else "username"
            raise StartupError(
                manifest.source,
                manifest.metadata_field(missing),
                "is required: give both username and password, or neither",
            )
        prefix = manifest.metadata.get("keyPrefix", manifest.metadata.get("keyPrefixPath", default_prefix))
        return cls(
            endpoints=parse_endpoints(manifest),
            key_prefix=prefix,
            username=username,
            password=password,
            dial_timeout=_positive_duration(manifest, "dialTimeout", 5.0),
            operation_timeout=_positive_duration(manifest, "operationTimeout", 3.0),
            component=f"{manifest.name} ({manifest.type})",
        )

    def address(self, index: int) -> str:
        host, port = self.endpoints[index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoints(manifest: ComponentManifest) -> tuple[tuple[str, int], ...]:
    field = manifest.metadata_field("endpoints")
    raw = metadata.required(manifest, "endpoints")
    found: list[tuple[str, int]] = []
    for entry in raw.replace(";", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith("https://"):
            raise StartupError(manifest.source, field, f"{entry!r}: TLS (https://) is not supported")
        address = entry.removeprefix("http://").rstrip("/")
        host, sep, port_text = address.rpartition(":")
        if not sep or "]" in port_text:
            host, port_text = address, str(DEFAULT_PORT)
        host = host.strip("[]")
        if not host or "/" in host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise StartupError(manifest.source, field, f"{entry!r} is not host:port")
        found.append((host, int(port_text)))
    if not found:
        raise StartupError(manifest.source, field, f"lists no host:port, got {raw!r}")
    return tuple(found)


def _positive_duration(manifest: ComponentManifest, name: str, default: float) -> float:
    value = metadata.duration(manifest, name, default, plain_unit=1.0)
    if value <= 0:
        raise StartupError(manifest.source, manifest.metadata_field(name), "must be more than 0")
    return value


def _why(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.details() or exc.code().name
    return str(exc) or type(exc).__name__


def _refused_argument(exc: BaseException) -> bool:
    if isinstance(exc, aetcd.InvalidArgumentError):
        return True
    if not isinstance(exc, grpc.aio.AioRpcError):
        return False
    # Over etcd's gRPC receive limit: no retry can pass (its "too many requests" may).
    too_large = exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (exc.details() or "")
    return too_large or exc.code() == grpc.StatusCode.INVALID_ARGUMENT


def unauthenticated(exc: BaseException) -> bool:
    if isinstance(exc, aetcd.exceptions.UnauthenticatedError):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAUTHENTICATED


# --- request builders (etcd's protobuf messages) ------------------------------------------------


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    for index in reversed(range(len(end))):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\0"  # every key


def op_put(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def op_get(key: bytes, *, prefix: bool = False) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, range_end=prefix_end(key) if prefix else b""))


def op_delete(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def same_create(key: bytes, revision: int) -> Any:
    """Holds when ``key`` was created at ``revision`` (0: the key does not exist)."""
    return rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=revision)


def same_mod(key: bytes, revision: int) -> Any:
    """Holds when ``key`` was last written at ``revision`` (0: the key does not exist)."""
    return rpc.Compare(key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision)


def same_value(key: bytes, value: bytes) -> Any:
    """Holds when ``key`` exists and holds ``value``."""
    return rpc.Compare(key=key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=value)


def range_kvs(response: Any, index: int) -> list[Any]:
    """The key-values of the ``index``-th operation of a transaction, a range."""
    return list(response.responses[index].response_range.kvs)


# --- the connection -------------------------------------------------------------------------------


class EtcdConnection:
    """One component's aetcd client, on the first configured endpoint that answers.

    Every call is bounded by ``operation_timeout`` and fails with ``Unavailable`` (or
    ``InvalidArgument`` when etcd refuses the request itself), naming the component and
    the endpoint; never with a gRPC error.
    """

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._client: Any = None
        self._index = 0
        self._reauth: asyncio.Lock | None = None

    @property
    def endpoint(self) -> str:
        """``host:port`` in use (the first one before ``open``)."""
        return self.config.address(self._index)

    def _new_client(self, index: int) -> Any:
        host, port = self.config.endpoints[index]
        return aetcd.Client(
            host=f"[{host}]" if ":" in host else host,
            port=port,
            username=self.config.username or None,
            password=self.config.password or None,
            timeout=self.config.operation_timeout,
            options=CHANNEL_OPTIONS,
        )

    async def _probe(self, client: Any, timeout: float) -> None:
        """One linearizable read (it needs a leader): etcd answers, and lets us read."""
        key = self.config.key_prefix.encode() or b"/"

        async def read() -> None:
            await client.connect()
            await client.kvstub.Range(
                rpc.RangeRequest(key=key, count_only=True), timeout=timeout, metadata=client.metadata
            )

        await within(read(), timeout)

    async def _first_answering(self, order: Sequence[int], timeout: float) -> tuple[int, Any] | list[str]:
        """The first endpoint of ``order`` that answers, all of them asked at once: the whole
        search takes at most ``timeout``. One at a time, members that accept connections but
        cannot answer (cut off from the leader: a read waits for one) would each take
        ``timeout`` and use up the caller's budget (the init timeout, the health check's)
        before a live one was asked."""
        clients = [(index, self._new_client(index)) for index in order]
        probes = [asyncio.ensure_future(self._probe(client, timeout)) for _, client in clients]
        failures: list[str] = []
        winner: int | None = None
        try:
            for (index, _), probe in zip(clients, probes, strict=True):
                try:
                    await probe
                except Exception as exc:
                    failures.append(f"{self.config.address(index)}: {_why(exc, timeout)}")
                    continue
                winner = index
                break
        finally:
            # Also when the caller gives up (cancelled): no probe, and no client, is left behind.
            for probe in probes:
                probe.cancel()
            losers = [client for index, client in clients if index != winner]
            await asyncio.shield(asyncio.gather(*(_close_quietly(client) for client in losers)))
        if winner is None:
            return failures
        return winner, dict(clients)[winner]

    async def open(self) -> None:
        """Connect to the first endpoint that answers, in the configured order."""
        await self.close()
        found = await self._first_answering(range(len(self.config.endpoints)), self.config.dial_timeout)
        if isinstance(found, list):
            raise Unavailable(f"{self.config.component}: no etcd endpoint answered: {'; '.join(found)}")
        self._index, self._client = found

    async def ping(self) -> None:
        """Raise ``Unavailable`` unless etcd answers within PING_TIMEOUT; when the endpoint
        in use does not, switch to the next one that does."""
        client = self._client
        if client is None:
            raise Unavailable(f"{self.config.component}: not connected to etcd")
        try:
            await self._probe(client, PING_TIMEOUT)
            return
        except Exception as exc:
            failure = self.unavailable(exc, PING_TIMEOUT)
        count = len(self.config.endpoints)
        if count > 1:
            others = [(self._index + step) % count for step in range(1, count)]
            found = await self._first_answering(others, FAILOVER_TIMEOUT)
            if not isinstance(found, list) and self._client is client:
                log.warning(
                    "%s: etcd at %s failed (%s); using %s",
                    self.config.component,
                    self.endpoint,
                    failure.message,
                    self.config.address(found[0]),
                )
                self._index, self._client = found
                await _close_quietly(client)
                return
            if not isinstance(found, list):
                await _close_quietly(found[1])
        raise failure

    def client(self) -> Any:
        """The aetcd client in use; ``Unavailable`` before a successful ``open``."""
        if self._client is None:
            raise Unavailable(f"{self.config.component}: not connected to etcd")
        return self._client

    async def call(self, operation: Callable[[Any], Awaitable[T]], timeout: float | None = None) -> T:
        """``operation(client)`` bounded by the operation timeout, errors translated.

        An expired authentication token is renewed (a new client) and the call made once more.
        """
        limit = timeout or self.config.operation_timeout
        client = self.client()
        try:
            return await within(operation(client), limit)
        except BACKEND_ERRORS as exc:
            if not (self.config.username and unauthenticated(exc)):
                raise self.translate(exc, limit) from None
        except asyncio.CancelledError:
            if self._cancelled_itself(client):
                raise
            raise self._replaced() from None
        client = await self.renew(client)
        try:
            return await within(operation(client), limit)
        except BACKEND_ERRORS as exc:
            raise self.translate(exc, limit) from None
        except asyncio.CancelledError:
            if self._cancelled_itself(client):
                raise
            raise self._replaced() from None

    def _cancelled_itself(self, client: Any) -> bool:
        """Whether a call on ``client`` that ended cancelled was cancelled by its caller (or
        by the client still in use), not by the close of a replaced client (a failover, a
        renewed token), which cancels the gRPC calls still waiting on its channel."""
        task = asyncio.current_task()
        return (task is not None and task.cancelling() > 0) or client is self._client

    def _replaced(self) -> Unavailable:
        return Unavailable(
            f"{self.config.component}: the etcd connection was replaced while the call waited on it "
            f"(now {self.endpoint}); try again"
        )

    async def renew(self, failed: Any) -> Any:
        """A new client (a new authentication token) in place of ``failed``, once."""
        if self._reauth is None:
            self._reauth = asyncio.Lock()
        async with self._reauth:
            if self._client is failed:  # not already renewed by a concurrent call
                client = self._new_client(self._index)
                try:
                    await self._probe(client, self.config.operation_timeout)
                except Exception as exc:
                    await _close_quietly(client)
                    raise self.unavailable(exc, self.config.operation_timeout) from None
                self._client = client
                await _close_quietly(failed)
            return self.client()

    async def txn(self, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()) -> Any:
        """One transaction; the raw ``TxnResponse`` (``succeeded``, ``header.revision``, ``responses``)."""
        request = rpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        timeout = self.config.operation_timeout

        async def run(client: Any) -> Any:
            return await client.kvstub.Txn(request, timeout=timeout, metadata=client.metadata)

        return await self.call(run)

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        timeout = self.config.operation_timeout

        async def run(client: Any) -> Any:
            return await client.leasestub.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl), timeout=timeout, metadata=client.metadata
            )

        response = await self.call(run)
        lease_id: int = response.ID
        return lease_id

    async def revoke(self, lease_id: int, timeout: float | None = None) -> None:
        """Revoke a lease (its keys are deleted); a lease already gone is not an error."""
        limit = timeout or self.config.operation_timeout

        async def run(client: Any) -> None:
            try:
                await client.leasestub.LeaseRevoke(
                    rpc.LeaseRevokeRequest(ID=lease_id), timeout=limit, metadata=client.metadata
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise

        await self.call(run, limit)

    def translate(self, exc: BaseException, timeout: float) -> RuntimeApiError:
        if _refused_argument(exc):
            return InvalidArgument(f"{self.config.component}: etcd refused the request: {_why(exc, timeout)}")
        return self.unavailable(exc, timeout)

    def unavailable(self, exc: BaseException, timeout: float | None = None) -> Unavailable:
        """The error a caller sees when etcd failed: names the component and the endpoint."""
        why = _why(exc, timeout or self.config.operation_timeout)
        if unauthenticated(exc):
            why = f"authentication failed: {why}"
        return Unavailable(f"{self.config.component}: etcd at {self.endpoint}: {why}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)


async def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        await within(client.close(), CLOSE_TIMEOUT)
