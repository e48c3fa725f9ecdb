"""Lock conformance: owner-only unlock, expiry, keep-alive, exclusivity between sidecars, and the
key the lock service hands every store."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from layotto_fast.errors import InvalidArgument
from layotto_fast.runtime.lock import LockStatus
from tests.backends.servers import EtcdServer
from tests.conformance.conftest import Harness, implementations
from tests.conformance.matrix import Implementation

pytestmark = implementations("lock")


def test_lock_semantics(harness: Harness, implementation: Implementation) -> None:
    locks = harness.make(implementation)
    r = uuid.uuid4().hex
    assert harness.run(locks.try_lock(r, "a", 1))
    assert not harness.run(locks.try_lock(r, "b", 1))
    assert not harness.run(locks.try_lock(r, "a", 1))  # not re-entrant
    assert harness.run(locks.unlock(r, "b")) == LockStatus.LOCK_BELONG_TO_OTHERS
    assert harness.run(locks.keep_alive(r, "b", 5)) == LockStatus.LOCK_BELONG_TO_OTHERS
    assert harness.run(locks.keep_alive(r, "a", 2)) == LockStatus.SUCCESS
    harness.run(asyncio.sleep(1.2))
    assert not harness.run(locks.try_lock(r, "b", 1)), "keep-alive did not extend the lock"
    harness.run(asyncio.sleep(1.3))
    assert harness.run(locks.unlock(r, "a")) == LockStatus.LOCK_UNEXIST  # expiry released it
    assert harness.run(locks.keep_alive(r, "a", 1)) == LockStatus.LOCK_UNEXIST
    assert harness.run(locks.try_lock(r, "b", 5))
    assert harness.run(locks.unlock(r, "b")) == LockStatus.SUCCESS
    assert harness.run(locks.try_lock(r, "a", 5))


def test_two_sidecars_never_both_hold_a_lock(harness: Harness, implementation: Implementation) -> None:
    if implementation.backend is None:
        first = second = harness.make(implementation)  # one process: the same store
    else:
        first, second = harness.make(implementation, "first"), harness.make(implementation, "second")
    resource = uuid.uuid4().hex
    holders: list[str] = []
    overlaps: list[tuple[str, str]] = []
    acquired = 0

    async def contender(store: object, owner: str) -> None:
        nonlocal acquired
        for _ in range(5):
            if await store.try_lock(resource, owner, 5):  # type: ignore[attr-defined]
                if holders:
                    overlaps.append((holders[0], owner))
                holders.append(owner)
                acquired += 1
                await asyncio.sleep(0.002)
                holders.remove(owner)
                assert await store.unlock(resource, owner) == LockStatus.SUCCESS  # type: ignore[attr-defined]
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        await asyncio.gather(*(contender(first if i % 2 else second, f"owner-{i}") for i in range(20)))

    harness.run(scenario())
    assert not overlaps and acquired > 0


def test_the_lock_service_keeps_a_lock_where_layotto_keeps_it(harness: Harness, implementation: Implementation) -> None:
    """Through the lock service, a resource id is the store key ``lock|||<app id>||<id>`` (the
    default keyPrefix), as Layotto's runtime hands it to its lock components; in Redis that
    is the key itself, in etcd it goes under Layotto's default keyPrefixPath ``/layotto/``."""
    services, store = harness.services(implementation, "conformance-app")
    locks = services.lock
    r = uuid.uuid4().hex
    stored = f"lock|||conformance-app||{r}"
    assert harness.run(locks.try_lock("conformance", r, "a", 5))
    assert harness.run(store.unlock(stored, "b")) == LockStatus.LOCK_BELONG_TO_OTHERS  # held under that key
    assert harness.run(store.unlock(r, "a")) == LockStatus.LOCK_UNEXIST  # and not under the id as sent
    backend = harness.backend(implementation)
    if isinstance(backend, EtcdServer):
        assert backend.ctl("get", "--print-value-only", f"/layotto/{stored}") == "a"
    elif backend is not None:
        assert backend.cli("GET", stored) == "a"
    assert harness.run(locks.keep_alive("conformance", r, "a", 5)) == LockStatus.SUCCESS
    assert harness.run(locks.unlock("conformance", r, "a")) == LockStatus.SUCCESS
    assert harness.run(store.unlock(stored, "a")) == LockStatus.LOCK_UNEXIST
    with pytest.raises(InvalidArgument, match=r"^resource_id 'a\|\|b' contains '\|\|'"):
        harness.run(locks.try_lock("conformance", "a||b", "a", 5))
