"""Real backend servers for tests: ``redis-server``, a 3-master Redis Cluster, ``etcd`` and
``nats-server`` with JetStream.

Each server runs as a child process on free loopback ports, in its own directory (a given one,
or a temporary one removed by ``close()``), with its output in ``<directory>/<name>.log``.
``stop()`` then ``start()`` brings a server back on the same ports with the same data
directory, for tests whose backend goes away mid-run and comes back.

Nothing here imports a client library: readiness is checked over a raw socket (Redis, NATS) or with
the server's own command-line client (``etcdctl``), so this module imports with the standard
library alone. Children are killed at interpreter exit (``atexit``) and, on Linux with
``setpriv`` available (util-linux), also when the test process dies without running its exit
handlers (SIGKILL, a crash).

The binaries come from Debian's packages: ``tests/backends/install.sh`` installs them.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
INSTALL_HINT = "run tests/backends/install.sh (it installs redis-server, etcd and nats-server from Debian's packages)"
CLUSTER_BUS_OFFSET = 10000  # Redis Cluster's bus listens on the client port + 10000
START_ATTEMPTS = 5  # launches tried when a port turns out to be taken in the meantime
START_TIMEOUT = 20.0  # seconds for one launch to answer
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
COMMAND_TIMEOUT = 30.0  # seconds for one redis-cli / etcdctl run

RespValue = bytes | int | list["RespValue"] | None


class BackendError(RuntimeError):
    """A backend server could not be started or did not answer."""


class BinaryMissingError(BackendError):
    """A server binary is not installed."""


class RedisReplyError(BackendError):
    """Redis answered a command with an error reply."""


def require_binary(name: str) -> str:
    """The path of ``name`` on PATH, or ``BinaryMissingError`` saying how to install it."""
    # Debian puts some servers (nats-server) in /usr/sbin, off a non-root user's PATH.
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if path is None:
        raise BinaryMissingError(f"{name} is not installed (not found on PATH): {INSTALL_HINT}")
    return path


# --- ports -------------------------------------------------------------------------------------


def _bind(port: int) -> socket.socket | None:
    """A socket bound to ``HOST:port`` (0: any free port), or None when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # The servers set SO_REUSEADDR too: a port only in TIME_WAIT is free for them.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        return None
    return sock


def free_ports(count: int = 1, *, bus_offset: int | None = None) -> list[int]:
    """``count`` distinct free loopback ports; with ``bus_offset``, ``port + bus_offset`` is free too.

    All the probe sockets stay bound until every port is chosen, so the ports differ from one
    another (and from each other's bus ports). A port can still be taken between this call and the
    server's bind: the servers' ``start()`` retries on new ports when that happens.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(200 * count):
            if len(ports) == count:
                break
            sock = _bind(0)
            if sock is None:
                continue
            held.append(sock)
            port = int(sock.getsockname()[1])
            if bus_offset is not None:
                if port + bus_offset > 65535:
                    continue
                bus = _bind(port + bus_offset)
                if bus is None:
                    continue
                held.append(bus)
            ports.append(port)
        if len(ports) < count:
            raise BackendError(f"could not find {count} free loopback ports (bus offset {bus_offset})")
        return ports
    finally:
        for sock in held:
            sock.close()


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- child processes -----------------------------------------------------------------------------

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _register(process: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.add(process)


def _unregister(process: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(process)


@atexit.register
def kill_all() -> None:
    """Kill every server child still running (also runs at interpreter exit)."""
    with _LIVE_LOCK:
        processes = list(_LIVE)
        _LIVE.clear()
    for process in processes:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


def _die_with_parent() -> list[str]:
    """A prefix making the child get SIGKILL when this process dies (no atexit on SIGKILL).

    Linux sends the signal when the *thread* that started the child ends, so this is only used
    from the main thread: a server started from a worker thread (``asyncio.to_thread``...)
    must outlive that thread; ``atexit`` still covers it.
    """
    if platform.system() != "Linux" or threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _clean_env(drop_prefixes: Iterable[str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment without variables the tools would read as flags (ETCD_*, ETCDCTL_*...)."""
    prefixes = tuple(drop_prefixes)
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update(extra)
    return env


def _run(argv: list[str], env: Mapping[str, str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a client command; its stdout, or ``BackendError`` with its output when it fails."""
    try:
        done = subprocess.run(
            argv, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BackendError(f"{' '.join(argv)} timed out after {timeout:g} s") from error
    stdout = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        raise BackendError(f"{' '.join(argv)} exited {done.returncode}:\n{stdout}{stderr}")
    return stdout


class _ServerProcess:
    """One server child process: launch with retries on port collisions, readiness, stop/kill."""

    name = "server"

    def __init__(self, directory: Path | str | None) -> None:
        self._owns_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix=f"layotto-{self.name}-")) if directory is None else Path(directory)
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_path = self.directory / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._ports_chosen = False  # once a launch answered, its ports are kept for every restart
        self._log_offset = 0

    # Subclasses define these.
    def _choose_ports(self) -> None:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _ready(self) -> bool:
        raise NotImplementedError

    def _describe(self) -> str:
        return self.name

    def _before_launch(self) -> None:
        """Called before each launch; ``self._ports_chosen`` is False on a first start."""

    @property
    def running(self) -> bool:
        """True while the child process is alive (it may not answer yet)."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    def log(self) -> str:
        """Everything the server wrote, over all its starts."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_since_launch(self) -> str:
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                return log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _launch(self) -> subprocess.Popen[bytes]:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [*_die_with_parent(), *self._argv()],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self._env(),
                start_new_session=True,  # Ctrl-C reaches pytest, which then stops the server itself
            )
        _register(process)
        self.process = process
        return process

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> bool:
        """True once the server answers; False when it exited because a port was taken."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            if process.poll() is not None:
                _unregister(process)
                output = self._log_since_launch()
                if "address already in use" in output.lower():
                    return False
                raise BackendError(f"{self._describe()} exited {process.returncode} while starting:\n{output}")
            if self._ready() and process.poll() is None:
                return True
            if time.monotonic() > deadline:
                self._terminate(process, 0)
                raise BackendError(
                    f"{self._describe()} did not answer within {timeout:g} s:\n{self._log_since_launch()}"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start the server (again on the same ports after a stop) and wait until it answers."""
        if self.running:
            return self
        for attempt in range(START_ATTEMPTS):
            if not self._ports_chosen:
                self._choose_ports()
            self._before_launch()
            process = self._launch()
            if self._wait_ready(process, timeout):
                self._ports_chosen = True
                return self
            if self._ports_chosen:  # a restart: the port may be released shortly
                time.sleep(0.2 * (attempt + 1))
        raise BackendError(
            f"{self._describe()} could not start: its ports stayed in use after {START_ATTEMPTS} attempts:\n"
            f"{self._log_since_launch()}"
        )

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes], timeout: float) -> int:
        if process.poll() is None:
            if timeout > 0:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
            else:
                process.kill()
        returncode = process.wait()
        _unregister(process)
        return returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code (None if never started)."""
        if self.process is None:
            return None
        return self._terminate(self.process, timeout)

    def kill(self) -> int | None:
        """SIGKILL at once: the server dies without any shutdown work."""
        if self.process is None:
            return None
        return self._terminate(self.process, 0)

    def close(self) -> None:
        """Stop, and remove the directory if it is a temporary one made by this object."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


# --- Redis ---------------------------------------------------------------------------------------


def _resp_encode(args: Iterable[str | bytes]) -> bytes:
    parts = [arg.encode() if isinstance(arg, str) else arg for arg in args]
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _resp_read(reader: io.BufferedReader) -> RespValue:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed in the middle of a reply")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisReplyError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = b""
        while len(data) < size + 2:
            chunk = reader.read(size + 2 - len(data))
            if not chunk:
                raise ConnectionError("connection closed in the middle of a reply")
            data += chunk
        return data[:-2]
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_resp_read(reader) for _ in range(count)]
    raise ConnectionError(f"not a RESP reply: {line!r}")


def redis_command(
    port: int, *args: str | bytes, password: str | None = None, host: str = HOST, timeout: float = 2.0
) -> RespValue:
    """One command over a raw socket (no client library); error replies raise ``RedisReplyError``."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        request = _resp_encode(("AUTH", password)) if password is not None else b""
        sock.sendall(request + _resp_encode(args))
        reader = sock.makefile("rb")
        with reader:
            if password is not None:
                _resp_read(reader)
            return _resp_read(reader)


class RedisServer(_ServerProcess):
    """``redis-server`` on a free loopback port: no persistence, optional password."""

    name = "redis"

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        password: str | None = None,
        cluster: bool = False,
        cluster_node_timeout_ms: int = 5000,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.server_binary = require_binary("redis-server")
        self.cli_binary = require_binary("redis-cli")
        super().__init__(directory)
        self.host = HOST
        self.port = 0
        self.password = password
        self.cluster = cluster
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.extra_args = list(extra_args)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def bus_port(self) -> int | None:
        return self.port + CLUSTER_BUS_OFFSET if self.cluster else None

    def _describe(self) -> str:
        return f"redis-server on {self.address}"

    def _choose_ports(self) -> None:
        self.port = free_ports(1, bus_offset=CLUSTER_BUS_OFFSET if self.cluster else None)[0]

    def _argv(self) -> list[str]:
        argv = [
            self.server_binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self.password is not None:
            argv += ["--requirepass", self.password]
        if self.cluster:
            argv += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{self.port}.conf",
                "--cluster-node-timeout", str(self.cluster_node_timeout_ms),
            ]  # fmt: skip
        return argv + self.extra_args

    def ping(self, timeout: float = 1.0) -> bool:
        """True when the server answers PING (authenticating with the password, if any)."""
        try:
            return redis_command(self.port, "PING", password=self.password, timeout=timeout) == b"PONG"
        except (OSError, BackendError):
            return False

    def _ready(self) -> bool:
        # The answer must come from this process: a port taken meanwhile may reach another server.
        try:
            reply = redis_command(self.port, "INFO", "server", password=self.password, timeout=0.25)
        except (OSError, BackendError):
            return False
        pid = self.process.pid if self.process is not None else None
        return isinstance(reply, bytes) and f"process_id:{pid}\r\n".encode() in reply

    def command(self, *args: str | bytes, timeout: float = 2.0) -> RespValue:
        """One command over a raw socket: replies as bytes / int / list / None."""
        return redis_command(self.port, *args, password=self.password, timeout=timeout)

    def cli_env(self) -> dict[str, str]:
        """The environment for redis-cli: the password in REDISCLI_AUTH (no warning on stderr)."""
        return _clean_env(["REDISCLI_"], {"REDISCLI_AUTH": self.password} if self.password is not None else {})

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -h HOST -p PORT ARGS...``; its output without the trailing newline."""
        argv = [self.cli_binary, "-h", self.host, "-p", str(self.port), *args]
        return _run(argv, self.cli_env()).removesuffix("\n")


class RedisCluster:
    """A Redis Cluster of ``masters`` masters (no replicas) on free loopback ports."""

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        masters: int = 3,
        node_timeout_ms: int = 5000,
        forming_node_timeout_ms: int = 1000,
    ) -> None:
        # Nodes gossip at least every node timeout / 2: a short timeout while the cluster forms makes
        # redis-cli see a consistent configuration in about 1 s instead of up to ~8 s; once the
        # cluster is ok, the nodes switch to ``node_timeout_ms`` so that a loaded test machine does
        # not get a node marked failed.
        self.node_timeout_ms = node_timeout_ms
        self._owns_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="layotto-redis-cluster-")) if directory is None else Path(directory)
        )
        self.servers = [
            RedisServer(self.directory / f"node{index}", cluster=True, cluster_node_timeout_ms=forming_node_timeout_ms)
            for index in range(masters)
        ]
        self._created = False

    @property
    def nodes(self) -> list[str]:
        """``host:port`` of every node."""
        return [server.address for server in self.servers]

    @property
    def address(self) -> str:
        """``host:port`` of the first node."""
        return self.servers[0].address

    @property
    def host(self) -> str:
        return self.servers[0].host

    @property
    def port(self) -> int:
        return self.servers[0].port

    @property
    def running(self) -> bool:
        return all(server.running for server in self.servers)

    def start(self, timeout: float = 30.0) -> Self:
        """Start the nodes; create the cluster the first time; wait until every node says ok.

        After ``stop()``, the nodes come back on their ports with their ``nodes-*.conf`` and the
        cluster forms again by itself.
        """
        try:
            for server in self.servers:
                server.start()
            if not self._created:
                first = self.servers[0]
                _run(
                    [first.cli_binary, "--cluster", "create", *self.nodes, "--cluster-replicas", "0", "--cluster-yes"],
                    first.cli_env(),
                    timeout=timeout,
                )
                self._created = True
            self.wait_ok(timeout)
            for server in self.servers:
                server.command("CONFIG", "SET", "cluster-node-timeout", str(self.node_timeout_ms))
        except BaseException:
            self.stop()
            raise
        return self

    def cluster_info(self, server: RedisServer) -> dict[str, str]:
        """``CLUSTER INFO`` of one node, as a dict."""
        reply = server.command("CLUSTER", "INFO")
        text = reply.decode() if isinstance(reply, bytes) else ""
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node reports cluster_state:ok, knows every node and all slots are assigned."""
        deadline = time.monotonic() + timeout
        want = {"cluster_state": "ok", "cluster_slots_assigned": "16384", "cluster_known_nodes": str(len(self.servers))}
        infos: list[dict[str, str]] = []
        while True:
            try:
                infos = [self.cluster_info(server) for server in self.servers]
                if all(all(info.get(key) == value for key, value in want.items()) for info in infos):
                    return
            except (OSError, BackendError):
                pass
            if time.monotonic() > deadline:
                raise BackendError(f"Redis Cluster {self.nodes} not ok within {timeout:g} s: {infos}")
            time.sleep(0.05)

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -c`` (following redirections) against the first node."""
        first = self.servers[0]
        argv = [first.cli_binary, "-c", "-h", first.host, "-p", str(first.port), *args]
        return _run(argv, first.cli_env()).removesuffix("\n")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        for server in self.servers:
            server.stop(timeout)

    def kill(self) -> None:
        for server in self.servers:
            server.kill()

    def close(self) -> None:
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


# --- etcd ----------------------------------------------------------------------------------------

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class EtcdServer(_ServerProcess):
    """A single-member ``etcd`` (v3 API) on free loopback client and peer ports."""

    name = "etcd"

    def __init__(
        self, directory: Path | str | None = None, *, member_name: str = "layotto-test", election_timeout_ms: int = 500
    ) -> None:
        self.server_binary = require_binary("etcd")
        self.ctl_binary = require_binary("etcdctl")
        super().__init__(directory)
        self.host = HOST
        self.client_port = 0
        self.peer_port = 0
        self.member_name = member_name
        # A single member elects itself only after an election timeout when it restarts: etcd's
        # default (1 s, randomised up to 2 s) would make every restart take that long.
        self.election_timeout_ms = election_timeout_ms
        self.data_dir = self.directory / "data"

    @property
    def port(self) -> int:
        return self.client_port

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client API."""
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def _describe(self) -> str:
        return f"etcd on {self.endpoint}"

    def _choose_ports(self) -> None:
        self.client_port, self.peer_port = free_ports(2)

    def _before_launch(self) -> None:
        # A first launch that lost its ports may have left a member for those ports: start afresh.
        if not self._ports_chosen:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _argv(self) -> list[str]:
        return [
            self.server_binary,
            "--name", self.member_name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.member_name}={self.peer_url}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"{self.member_name}-{self.peer_port}",
            "--election-timeout", str(self.election_timeout_ms),
            "--heartbeat-interval", str(max(self.election_timeout_ms // 10, 10)),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        # ETCD_* variables are read as flags; etcd 3.4 refuses to run on some architectures unless told.
        extra: dict[str, str] = {}
        arch = _GOARCH.get(platform.machine().lower(), platform.machine().lower())
        if arch != "amd64":
            extra["ETCD_UNSUPPORTED_ARCH"] = arch
        return _clean_env(["ETCD_"], extra)

    def ctl_env(self) -> dict[str, str]:
        # etcdctl exits when an ETCDCTL_* variable shadows a flag it is given.
        return _clean_env(["ETCDCTL_"], {"ETCDCTL_API": "3"})

    def ctl(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run ``etcdctl --endpoints URL ARGS...`` (v3 API); its output without the trailing newline."""
        argv = [self.ctl_binary, f"--endpoints={self.client_url}", *args]
        return _run(argv, self.ctl_env(), timeout=timeout).removesuffix("\n")

    def healthy(self) -> bool:
        """True when ``etcdctl endpoint health`` says so."""
        if not _port_open(self.client_port, timeout=0.25):
            return False
        try:
            self.ctl("--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health", timeout=5.0)
        except BackendError:
            return False
        return True

    def _ready(self) -> bool:
        return self.healthy()


# --- NATS ----------------------------------------------------------------------------------------


def nats_info(port: int, timeout: float = 1.0) -> dict[str, object]:
    """The ``INFO`` a NATS server sends first on a new connection, as a dict (raw socket, no client)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        line = reader.readline(1 << 16)
    if not line.startswith(b"INFO ") or not line.endswith(b"\r\n"):
        raise BackendError(f"no INFO line from 127.0.0.1:{port}: {line[:200]!r}")
    info = json.loads(line[5:])
    if not isinstance(info, dict):
        raise BackendError(f"INFO from 127.0.0.1:{port} is not an object: {line[:200]!r}")
    return info


class NatsServer(_ServerProcess):
    """``nats-server -js`` on a free loopback port, its JetStream store in ``<directory>/jetstream``.

    ``stop()`` then ``start()`` brings it back on the same port with the same store: streams,
    consumers and unacknowledged messages survive (file storage).
    """

    name = "nats"

    def __init__(self, directory: Path | str | None = None, *, extra_args: Iterable[str] = ()) -> None:
        self.server_binary = require_binary("nats-server")
        super().__init__(directory)
        self.host = HOST
        self.port = 0
        self.store_dir = self.directory / "store"
        # INFO carries the server name: readiness checks the answer comes from this server.
        self.server_name = f"layotto-test-{uuid.uuid4().hex[:8]}"
        self.extra_args = list(extra_args)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"nats://{self.address}"

    def _describe(self) -> str:
        return f"nats-server on {self.address}"

    def _choose_ports(self) -> None:
        self.port = free_ports(1)[0]

    def _argv(self) -> list[str]:
        return [
            self.server_binary,
            "--addr", self.host,
            "--port", str(self.port),
            "--name", self.server_name,
            "--jetstream",
            "--store_dir", str(self.store_dir),
            *self.extra_args,
        ]  # fmt: skip

    def info(self, timeout: float = 1.0) -> dict[str, object]:
        """The server's ``INFO`` (``BackendError`` or ``OSError`` when it does not answer)."""
        return nats_info(self.port, timeout)

    def _ready(self) -> bool:
        try:
            info = self.info(timeout=0.25)
        except (OSError, ValueError, BackendError):
            return False
        return info.get("server_name") == self.server_name and info.get("jetstream") is True
