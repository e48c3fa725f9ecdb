"""What every Redis component shares: its typed connection config (Dapr's metadata
names) and the client built from it, and how Redis failures read to a caller.

redis-py's asyncio client is imported here, so only a sidecar with a Redis
component ever loads it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from layotto_fast.errors import FailedPrecondition, RuntimeApiError, StartupError, Unavailable
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata

# Failures of the backend, not of the request: the caller gets UNAVAILABLE.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.RedisClusterException,  # a cluster client that reaches no node
    redis_errors.InvalidResponse,  # what answers at the address is not Redis
    TimeoutError,
    OSError,
)
# Everything a Redis call may raise: BACKEND_ERRORS, and Redis refusing the command.
REDIS_ERRORS: tuple[type[BaseException], ...] = (*BACKEND_ERRORS, redis_errors.RedisError)

# A ping also fails on a wrong password or a server that refuses the command.
PING_ERRORS: tuple[type[BaseException], ...] = (
    *BACKEND_ERRORS,
    redis_errors.AuthenticationError,
    redis_errors.ResponseError,
)

Client = aioredis.Redis | RedisCluster

DEFAULT_POOL_SIZE = 100  # connections to one node, when poolSize is not given (redis-py 8's own)
DEFAULT_READ_TIMEOUT = 3.0  # seconds: Dapr's readTimeout
DEFAULT_DIAL_TIMEOUT = 5.0  # seconds: Dapr's dialTimeout


# Dapr's Redis settings no component here takes, and why: each would be ignored, and with it
# the server, credentials or certificate check the operator meant.
_UNSUPPORTED = {
    "failover": "Redis Sentinel",
    "sentinelMasterName": "Redis Sentinel",
    "sentinelUsername": "Redis Sentinel",
    "sentinelPassword": "Redis Sentinel",
    "clientCert": "TLS client certificates",
    "clientKey": "TLS client certificates",
    "insecureSkipTLSVerify": "TLS without checking the server's certificate",
    "useEntraID": "Microsoft Entra ID authentication",
    "useAzureAD": "Microsoft Entra ID authentication",
    "useOIDC": "OIDC authentication",
}
# Redis refusing for its own state, not the request's (out of memory with noeviction, a
# replica, loading, no master): the caller gets UNAVAILABLE, which clients retry.
UNAVAILABLE_REPLIES = frozenset(
    {"READONLY", "OOM", "LOADING", "MASTERDOWN", "BUSY", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN"}
)
# The same refusals as redis-py raises them (its own client: Redis Cluster, strong writes),
# the code taken out of the message and made the class.
UNAVAILABLE_ERRORS = (redis_errors.ReadOnlyError, redis_errors.OutOfMemoryError, redis_errors.BusyLoadingError)


@dataclass(frozen=True)
class RedisConfig:
    host: str
    port: int
    password: str = ""
    username: str = ""
    db: int = 0
    tls: bool = False
    cluster: bool = False
    max_retries: int = 3
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT  # 0: none
    pool_size: int = 0  # 0: DEFAULT_POOL_SIZE
    pool_timeout: float = 0.0  # seconds a command waits for a free connection; 0: as go-redis (pool_wait)
    key_prefix: str = ""
    component: str = ""  # "name (type)", for messages

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> RedisConfig:
        for name, what in _UNSUPPORTED.items():
            if metadata.turned_on(manifest, name):
                raise StartupError(manifest.source, manifest.metadata_field(name), f"not supported here ({what})")
        # Dapr's redisPort is the port of a redisHost given without one
        default_port = metadata.integer(manifest, "redisPort", 6379, minimum=1)
        host, port = metadata.host_port(manifest, "redisHost", default_port)
        redis_type = metadata.text(manifest, "redisType", "node").lower()
        if redis_type not in ("node", "cluster"):
            raise StartupError(
                manifest.source,
                manifest.metadata_field("redisType"),
                f"must be 'node' or 'cluster', got {redis_type!r}",
            )
        # Layotto's Redis components name it db, Dapr's redisDB
        db_name = "db" if manifest.metadata.get("db") and not manifest.metadata.get("redisDB") else "redisDB"
        db = metadata.integer(manifest, db_name, 0, minimum=0)
        if redis_type == "cluster" and db:
            raise StartupError(manifest.source, manifest.metadata_field(db_name), "a Redis Cluster has only database 0")
        return cls(
            host=host,
            port=port,
            password=metadata.text(manifest, "redisPassword", ""),
            username=metadata.text(manifest, "redisUsername", ""),
            db=db,
            tls=metadata.boolean(manifest, "enableTLS", False),
            cluster=redis_type == "cluster",
            # Dapr's name first, -1 its "no retries"; maxRetries is what it falls back to
            max_retries=max(
                0,
                metadata.integer(
                    manifest, "redisMaxRetries", metadata.integer(manifest, "maxRetries", 3, minimum=-1), minimum=-1
                ),
            ),
            # 0 is the default, as Dapr reads both; a negative readTimeout (Dapr's -1) is none
            dial_timeout=metadata.duration(manifest, "dialTimeout", DEFAULT_DIAL_TIMEOUT) or DEFAULT_DIAL_TIMEOUT,
            read_timeout=_read_timeout(manifest),
            pool_size=metadata.integer(manifest, "poolSize", 0, minimum=0),
            pool_timeout=metadata.duration(manifest, "poolTimeout", 0.0),
            key_prefix=metadata.text(manifest, "keyPrefix", ""),
            component=f"{manifest.name} ({manifest.type})",
        )

    @property
    def pool_wait(self) -> float:
        """Dapr's poolTimeout, else go-redis's default: readTimeout + 1 s, or 30 s without one."""
        if self.pool_timeout:
            return self.pool_timeout
        return self.read_timeout + 1.0 if self.read_timeout else 30.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> Client:
        """A client; it connects on first use (``init`` pings it)."""
        common: dict[str, Any] = {
            "password": self.password or None,
            "username": self.username or None,
            "ssl": self.tls,
            "socket_timeout": self.read_timeout or None,
            "socket_connect_timeout": self.dial_timeout or None,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.01), self.max_retries),
        }
        if self.cluster:
            return RedisCluster(host=self.host, port=self.port, **common)
        # redis-py's pool fails a command at once when every connection is taken ("Too many
        # connections"): a burst of writes that wait for replicas, or blocking reads, failed
        # UNAVAILABLE and the health ping beside them marked the store DOWN. A command waits for
        # a connection instead, as long as go-redis's pool lets Dapr's (``pool_wait``).
        plain = aioredis.Redis(host=self.host, port=self.port, db=self.db, **common)
        pool = WaitingPool(
            wait=self.pool_wait,
            connection_class=plain.connection_pool.connection_class,
            max_connections=self.pool_size or DEFAULT_POOL_SIZE,
            **plain.connection_pool.connection_kwargs,
        )
        client = aioredis.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True  # its own pool: closed with it (Redis.from_pool, redis-py 5.0.1+)
        return client

    def unavailable(self, exc: BaseException) -> Unavailable:
        """The error a caller sees when Redis failed: names the component and the server."""
        if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
            why = f"authentication failed: {exc}"
        elif isinstance(exc, redis_errors.InvalidResponse):
            why = f"the server there does not speak Redis's protocol: {exc}"
        else:
            why = str(exc) or type(exc).__name__
        return Unavailable(f"{self.component}: redis at {self.address}: {why}")


class WaitingPool(aioredis.ConnectionPool):
    """redis-py's pool, where a command finding every connection taken waits up to ``wait``
    seconds for one to be released instead of failing. Not redis-py's BlockingConnectionPool:
    it waits under asyncio.timeout, which needs a Task, and the native transport runs a
    handler's first step in none."""

    def __init__(self, *, wait: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wait = wait
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        deadline: float | None = None
        while True:
            try:
                return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
            except redis_errors.ConnectionError as exc:
                if "Too many connections" not in str(exc):
                    raise
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._wait if deadline is None else deadline
            if loop.time() >= deadline:
                raise redis_errors.ConnectionError(
                    f"all {self.max_connections} connections of the pool stayed taken for {self._wait:g} s"
                ) from None
            freed = loop.create_future()
            self._waiting.append(freed)
            timer = loop.call_at(deadline, _settle, freed)
            try:
                await freed
            except BaseException:
                if freed.done() and not freed.cancelled():
                    self._wake_one()  # handed a free connection, then cancelled: passed on
                raise
            finally:
                timer.cancel()
                if freed in self._waiting:
                    self._waiting.remove(freed)

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:  # redis-py may raise once the connection is back among the free ones
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            freed = self._waiting.popleft()
            if not freed.done():
                freed.set_result(None)
                return


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _read_timeout(manifest: ComponentManifest) -> float:
    """Seconds; 0 for none, which Dapr writes -1 (its 0, as an empty value, is the default)."""
    raw = manifest.metadata.get("readTimeout", "").strip()
    seconds = metadata.parse_duration(raw[1:] if raw[:1] == "-" else raw)  # -1: plain digits, as Dapr reads it
    if raw[:1] == "-" and seconds is not None:
        return 0.0
    return metadata.duration(manifest, "readTimeout", DEFAULT_READ_TIMEOUT) or DEFAULT_READ_TIMEOUT


def refused_for_its_state(exc: BaseException) -> bool:
    """Whether Redis refused the command for its own state (out of memory, a replica, ...),
    not for the command's: the same command may pass later."""
    return isinstance(exc, UNAVAILABLE_ERRORS) or str(exc).split(" ", 1)[0] in UNAVAILABLE_REPLIES


def failure(config: RedisConfig, exc: BaseException) -> RuntimeApiError:
    """What a caller gets for ``exc``: Unavailable when Redis failed or refused for its own
    state (OOM, a replica), FailedPrecondition when it refused the command (a key holding
    another type, an ACL)."""
    if (
        isinstance(exc, redis_errors.ResponseError)
        and not isinstance(exc, BACKEND_ERRORS)
        and not refused_for_its_state(exc)
    ):
        return FailedPrecondition(f"{config.component}: redis at {config.address} refused the command: {exc}")
    return config.unavailable(exc)


async def ping(client: Client, config: RedisConfig) -> None:
    try:
        await client.ping()
    except PING_ERRORS as exc:
        raise config.unavailable(exc) from None
