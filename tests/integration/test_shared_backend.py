"""Two real sidecar processes on one real backend (Redis or etcd) keep their promises together.

- lock: two sidecars never both hand out the same lock, and neither unlocks another's lock;
- sequencer: ids for one key strictly increase whichever sidecar hands them out, also after one
  of them restarts;
- configuration: a subscriber on one sidecar sees, within 1 s, a save made through the other
  sidecar and a change written straight into the backend (``redis-cli`` / ``etcdctl``).

Each test writes its own manifest folder pointing at the session's ``redis_server`` /
``etcd_server`` and starts its own two sidecars on it; every name it uses is unique, so the
tests share the backends without seeing one another's data.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import orjson
import pytest

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast._proto import runtime_pb2_grpc
from tests import sidecar as sidecar_process
from tests.backends.servers import EtcdServer, RedisServer

BACKENDS = ("redis", "etcd")
STORE = "shared"  # the store_name of the one component in each manifest
STARTUP_TIMEOUT = 40.0  # two sidecars start at once on a 2-core machine that others load too
RPC_TIMEOUT = 10.0
VISIBLE_WITHIN = 1.0  # the promise: a change reaches another sidecar's subscriber within 1 s

CONTENDERS_PER_SIDECAR = 8
CONTEND_SECONDS = 2.0
HOLD_SECONDS = 0.002  # held a little while, so that an overlap would have room to show
MIN_HOLDS_PER_SIDECAR = 3
LOCK_EXPIRE = 10

SEQUENCE_CALLS = 200
SEQUENCE_CALLS_AFTER_RESTART = 60

ETCD_CONFIG_PREFIX = "/"  # configuration.etcd's default keyPrefix: the keys Layotto's etcd store writes

MANIFEST = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: {type}
  version: v1
  metadata:
    - name: {address_field}
      value: "{address}"
"""

Server = RedisServer | EtcdServer


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- backends and sidecars ----------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, Server]:
    """The backend's name and its session server; only the server a test needs gets started."""
    name = str(request.param)
    server: Server = request.getfixturevalue(f"{name}_server")
    return name, server


def write_manifest(tmp_path: Path, block: str, backend: tuple[str, Server]) -> Path:
    """A components folder holding one ``{block}.{backend}`` component named STORE."""
    name, server = backend
    if isinstance(server, RedisServer):
        address_field, address = "redisHost", server.address
    else:
        address_field, address = "endpoints", server.endpoint
    folder = tmp_path / "components"
    folder.mkdir(exist_ok=True)
    text = MANIFEST.format(name=STORE, type=f"{block}.{name}", address_field=address_field, address=address)
    (folder / f"{block}-{name}.yaml").write_text(text)
    return folder


class SidecarPair:
    """Sidecar processes on one components folder; ``stop_all`` stops whatever is running."""

    def __init__(self, tmp_path: Path, folder: Path) -> None:
        self.tmp_path, self.folder = tmp_path, folder
        self.sidecars: list[sidecar_process.Sidecar] = []

    def start(self, count: int) -> None:
        """Launch ``count`` sidecars, then wait for each: they start side by side."""
        for _ in range(count):
            self.sidecars.append(self._launch())
        for running in self.sidecars:
            running.wait_ready(timeout=STARTUP_TIMEOUT)

    def _launch(self) -> sidecar_process.Sidecar:
        return sidecar_process.start(self.tmp_path, "--resources-path", str(self.folder), wait=False)

    def stub(self, index: int) -> runtime_pb2_grpc.RuntimeStub:
        return self.sidecars[index].stub()

    def restart(self, index: int) -> None:
        """Stop sidecar ``index`` (it must exit cleanly) and start a new one in its place."""
        old = self.sidecars[index]
        code = old.stop()
        assert code == 0, f"sidecar {index} exited {code} on SIGTERM:\n{old.log()[-4000:]}"
        self.sidecars[index] = self._launch()
        self.sidecars[index].wait_ready(timeout=STARTUP_TIMEOUT)

    def stop_all(self) -> list[tuple[int, str]]:
        """Stop every sidecar; (exit code, log tail) of those that did not exit 0."""
        failed = []
        for running in self.sidecars:
            code = running.stop()
            if code != 0:
                failed.append((code, running.log()[-4000:]))
        return failed


@contextlib.contextmanager
def two_sidecars(tmp_path: Path, folder: Path) -> Iterator[SidecarPair]:
    """Two sidecars on ``folder``, always stopped; a clean exit of each is checked after a passing body."""
    pair = SidecarPair(tmp_path, folder)
    try:
        pair.start(2)
        yield pair
    finally:
        failed = pair.stop_all()  # also those launched before a failed start
    assert not failed, f"sidecars did not exit cleanly: {failed}"


# --- lock ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """One successful hold, as seen by the test: after TryLock answered, before Unlock was sent."""

    sidecar: int
    owner: str
    start: float
    end: float


def contend(
    stub: runtime_pb2_grpc.RuntimeStub, sidecar: int, resource: str, owner: str, until: float
) -> tuple[list[Hold], list[str]]:
    """Loop TryLock / Unlock on ``resource`` until ``until``; the holds and any unlock that failed."""
    holds: list[Hold] = []
    problems: list[str] = []
    while time.monotonic() < until:
        acquired = stub.TryLock(
            pb.TryLockRequest(store_name=STORE, resource_id=resource, lock_owner=owner, expire=LOCK_EXPIRE),
            timeout=RPC_TIMEOUT,
        ).success
        if acquired:
            start = time.monotonic()
            time.sleep(HOLD_SECONDS)
            end = time.monotonic()
            status = stub.Unlock(
                pb.UnlockRequest(store_name=STORE, resource_id=resource, lock_owner=owner), timeout=RPC_TIMEOUT
            ).status
            holds.append(Hold(sidecar, owner, start, end))
            if status != pb.UnlockResponse.SUCCESS:
                problems.append(f"{owner}: Unlock answered {pb.UnlockResponse.Status.Name(status)}")
        # A short random pause, so that neither sidecar's contenders starve the other's.
        time.sleep(random.uniform(0.0005, 0.004))
    return holds, problems


def overlaps(holds: list[Hold]) -> list[tuple[Hold, Hold]]:
    """Pairs of holds whose intervals overlap (each later one against the latest-ending earlier one)."""
    found = []
    latest: Hold | None = None
    for hold in sorted(holds, key=lambda h: h.start):
        if latest is not None and hold.start < latest.end:
            found.append((latest, hold))
        if latest is None or hold.end > latest.end:
            latest = hold
    return found


def test_lock_is_never_held_through_both_sidecars(tmp_path: Path, backend: tuple[str, Server]) -> None:
    folder = write_manifest(tmp_path, "lock", backend)
    resource = unique("resource")
    with two_sidecars(tmp_path, folder) as pair:
        until = time.monotonic() + CONTEND_SECONDS
        with ThreadPoolExecutor(max_workers=2 * CONTENDERS_PER_SIDECAR) as pool:
            futures = [
                pool.submit(contend, pair.stub(index), index, resource, f"owner-{index}-{thread}", until)
                for index in (0, 1)
                for thread in range(CONTENDERS_PER_SIDECAR)
            ]
            results = [future.result() for future in futures]
        holds = [hold for thread_holds, _ in results for hold in thread_holds]
        problems = [problem for _, thread_problems in results for problem in thread_problems]

        assert not problems, problems
        clashes = overlaps(holds)
        assert not clashes, f"{len(clashes)} overlapping holds out of {len(holds)}, e.g. {clashes[:3]}"
        per_sidecar = [sum(1 for hold in holds if hold.sidecar == index) for index in (0, 1)]
        assert min(per_sidecar) >= MIN_HOLDS_PER_SIDECAR, f"holds per sidecar: {per_sidecar}"


def test_unlock_through_the_other_sidecar_belongs_to_others(tmp_path: Path, backend: tuple[str, Server]) -> None:
    folder = write_manifest(tmp_path, "lock", backend)
    resource = unique("resource")
    with two_sidecars(tmp_path, folder) as pair:
        first, second = pair.stub(0), pair.stub(1)
        held = first.TryLock(
            pb.TryLockRequest(store_name=STORE, resource_id=resource, lock_owner="holder", expire=LOCK_EXPIRE),
            timeout=RPC_TIMEOUT,
        )
        assert held.success
        taken = second.TryLock(
            pb.TryLockRequest(store_name=STORE, resource_id=resource, lock_owner="intruder", expire=LOCK_EXPIRE),
            timeout=RPC_TIMEOUT,
        )
        assert not taken.success
        refused = second.Unlock(
            pb.UnlockRequest(store_name=STORE, resource_id=resource, lock_owner="intruder"), timeout=RPC_TIMEOUT
        )
        assert refused.status == pb.UnlockResponse.LOCK_BELONG_TO_OTHERS, pb.UnlockResponse.Status.Name(refused.status)
        # The refused unlock changed nothing: the holder still unlocks, and then the other can lock.
        released = first.Unlock(
            pb.UnlockRequest(store_name=STORE, resource_id=resource, lock_owner="holder"), timeout=RPC_TIMEOUT
        )
        assert released.status == pb.UnlockResponse.SUCCESS, pb.UnlockResponse.Status.Name(released.status)
        again = second.TryLock(
            pb.TryLockRequest(store_name=STORE, resource_id=resource, lock_owner="intruder", expire=LOCK_EXPIRE),
            timeout=RPC_TIMEOUT,
        )
        assert again.success


# --- sequencer ----------------------------------------------------------------------------------


def next_ids(pair: SidecarPair, key: str, calls: int) -> list[tuple[int, int]]:
    """``calls`` GetNextId of ``key``, one after the other, alternating sidecars: (sidecar, id) in call order."""
    ids = []
    for call in range(calls):
        index = call % 2
        reply = pair.stub(index).GetNextId(pb.GetNextIdRequest(store_name=STORE, key=key), timeout=RPC_TIMEOUT)
        ids.append((index, reply.next_id))
    return ids


def not_increasing(ids: list[tuple[int, int]]) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
    """(call number, previous, this) wherever an id is not strictly greater than the one before."""
    return [(call, ids[call - 1], ids[call]) for call in range(1, len(ids)) if ids[call][1] <= ids[call - 1][1]]


def test_sequencer_ids_increase_across_sidecars_and_a_restart(tmp_path: Path, backend: tuple[str, Server]) -> None:
    folder = write_manifest(tmp_path, "sequencer", backend)
    key = unique("sequence")
    with two_sidecars(tmp_path, folder) as pair:
        before = next_ids(pair, key, SEQUENCE_CALLS)
        assert not not_increasing(before), not_increasing(before)[:5]
        assert before[0][1] >= 1

        pair.restart(1)
        after = next_ids(pair, key, SEQUENCE_CALLS_AFTER_RESTART)
        everything = before + after
        assert not not_increasing(everything), not_increasing(everything)[:5]


# --- configuration ------------------------------------------------------------------------------


class Subscription:
    """A SubscribeConfiguration stream read by a thread; each push is queued with its arrival time."""

    def __init__(self, target: str, request: pb.SubscribeConfigurationRequest) -> None:
        self._channel = grpc.insecure_channel(target)
        self._requests: queue.Queue[pb.SubscribeConfigurationRequest | None] = queue.Queue()
        self._requests.put(request)
        self.pushes: queue.Queue[tuple[float, pb.SubscribeConfigurationResponse]] = queue.Queue()
        self.error: grpc.RpcError | None = None
        stub = runtime_pb2_grpc.RuntimeStub(self._channel)  # type: ignore[no-untyped-call]
        self._call = stub.SubscribeConfiguration(self._outgoing())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _outgoing(self) -> Iterator[pb.SubscribeConfigurationRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for response in self._call:
                self.pushes.put((time.monotonic(), response))
        except grpc.RpcError as error:
            self.error = error

    def wait_for(self, key: str, content: str, timeout: float) -> float:
        """The arrival time of the first push of ``key`` with ``content``; earlier pushes are skipped."""
        deadline = time.monotonic() + timeout
        seen: list[tuple[str, str]] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                at, push = self.pushes.get(timeout=remaining)
            except queue.Empty:
                break
            for item in push.items:
                seen.append((item.key, item.content))
                if item.key == key and item.content == content:
                    return at
        raise AssertionError(
            f"no push of {key}={content!r} within {timeout:g} s; pushes seen: {seen}; stream error: {self.error}"
        )

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._channel.close()
        self._reader.join(timeout=5)


def subscriptions(running: sidecar_process.Sidecar) -> int:
    return int(orjson.loads(running.http("/actuator/info")[1])["configuration_subscriptions"])


def wait_subscribed(running: sidecar_process.Sidecar, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while subscriptions(running) < count:
        assert time.monotonic() < deadline, f"the sidecar never counted {count} subscription(s)"
        time.sleep(0.02)


def save_item(stub: runtime_pb2_grpc.RuntimeStub, app: str, group: str, label: str, key: str, content: str) -> None:
    item = pb.ConfigurationItem(key=key, content=content, group=group, label=label)
    stub.SaveConfiguration(pb.SaveConfigurationRequest(store_name=STORE, app_id=app, items=[item]), timeout=RPC_TIMEOUT)


def wait_watching(
    subscription: Subscription, stub: runtime_pb2_grpc.RuntimeStub, app: str, group: str, label: str, warm: str
) -> None:
    """Save the warm-up key through ``stub`` until the subscriber sees it.

    A watch is set up after the subscribe request is read (etcd's in the background): a change
    made before that is not a change the subscriber was promised. Only later changes are timed.
    """
    deadline = time.monotonic() + 15.0
    attempt = 0
    while True:
        attempt += 1
        content = f"warm-{attempt}"
        save_item(stub, app, group, label, warm, content)
        try:
            subscription.wait_for(warm, content, timeout=0.5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def write_in_backend(backend: tuple[str, Server], app: str, group: str, label: str, key: str, content: str) -> str:
    """Write one item straight into the backend, in the component's layout; the client used."""
    name, server = backend
    if isinstance(server, RedisServer):
        # configuration.redis: a hash at {keyPrefix}{app}|{group}|{label}|{key} (no keyPrefix here),
        # the content in its field "content".
        redis_key = f"{app}|{group}|{label}|{key}"
        cli = shutil.which("redis-cli")
        if cli is None:  # the issue names redis-cli; redis-py writes the same hash
            import redis

            with redis.Redis(host=server.host, port=server.port) as client:
                client.hset(redis_key, "content", content)
            return "redis-py"
        run_client([cli, "-h", server.host, "-p", str(server.port), "HSET", redis_key, "content", content])
        return "redis-cli"
    # configuration.etcd: the raw content at {keyPrefix}{app}/{group}/{label}/{key}.
    assert name == "etcd"
    ctl = shutil.which("etcdctl")
    if ctl is None:
        pytest.fail("etcdctl is not on PATH: run tests/backends/install.sh (it installs etcd-client)", pytrace=False)
    run_client(
        [ctl, f"--endpoints={server.client_url}", "put", f"{ETCD_CONFIG_PREFIX}{app}/{group}/{label}/{key}", content]
    )
    return "etcdctl"


def run_client(argv: list[str]) -> None:
    # ETCDCTL_* variables would shadow the flags given (etcdctl then refuses to run).
    env = {name: value for name, value in os.environ.items() if not name.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    done = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stdout!r} {done.stderr!r}"


def test_configuration_changes_reach_the_other_sidecars_subscriber(tmp_path: Path, backend: tuple[str, Server]) -> None:
    folder = write_manifest(tmp_path, "configuration", backend)
    app, group, label = unique("app"), "group", "label"
    key, warm = unique("key"), unique("warm")
    with two_sidecars(tmp_path, folder) as pair:
        request = pb.SubscribeConfigurationRequest(
            store_name=STORE, app_id=app, group=group, label=label, keys=[key, warm]
        )
        subscription = Subscription(pair.sidecars[0].target, request)
        try:
            wait_subscribed(pair.sidecars[0], 1)
            wait_watching(subscription, pair.stub(1), app, group, label, warm)

            # A save through the other sidecar.
            sent = time.monotonic()
            save_item(pair.stub(1), app, group, label, key, "through-sidecar-b")
            seen = subscription.wait_for(key, "through-sidecar-b", timeout=5.0) - sent
            assert seen < VISIBLE_WITHIN, f"a save through sidecar B reached A's subscriber after {seen:.3f} s"

            # A write made straight in the backend, timed from before its client was launched.
            sent = time.monotonic()
            client = write_in_backend(backend, app, group, label, key, "straight-in-backend")
            seen = subscription.wait_for(key, "straight-in-backend", timeout=5.0) - sent
            assert seen < VISIBLE_WITHIN, f"a write with {client} reached the subscriber after {seen:.3f} s"
        finally:
            subscription.close()
