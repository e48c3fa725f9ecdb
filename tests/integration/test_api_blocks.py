"""SayHello, locks, the sequencer and secrets against the real sidecar process."""

from __future__ import annotations

import os
import time
import uuid

import grpc
import pytest
from google.protobuf import any_pb2, wrappers_pb2

from layotto_fast._proto import runtime_pb2 as pb
from tests.conftest import SIDECAR_ENV
from tests.sidecar import Sidecar

LOCKS = "lock_demo"


def fails(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()  # type: ignore[operator]
    return raised.value.code(), raised.value.details()  # type: ignore[attr-defined]


def test_say_hello(sidecar: Sidecar) -> None:
    payload = any_pb2.Any()
    payload.Pack(wrappers_pb2.StringValue(value="x" * 100))
    response = sidecar.stub().SayHello(pb.SayHelloRequest(service_name="helloworld", name="layotto", data=payload))
    assert response.hello == "greetings, layotto"
    assert response.data == payload
    assert sidecar.stub().SayHello(pb.SayHelloRequest(service_name="helloworld")).hello == "greetings"
    code, details = fails(lambda: sidecar.stub().SayHello(pb.SayHelloRequest(service_name="nobody")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "service_name 'nobody'" in details


def test_lock_lifecycle(sidecar: Sidecar) -> None:
    stub, resource = sidecar.stub(), f"r-{uuid.uuid4().hex[:8]}"
    assert stub.TryLock(pb.TryLockRequest(store_name=LOCKS, resource_id=resource, lock_owner="a", expire=10)).success
    assert not stub.TryLock(
        pb.TryLockRequest(store_name=LOCKS, resource_id=resource, lock_owner="b", expire=10)
    ).success
    unlock_b = stub.Unlock(pb.UnlockRequest(store_name=LOCKS, resource_id=resource, lock_owner="b"))
    assert unlock_b.status == pb.UnlockResponse.LOCK_BELONG_TO_OTHERS
    keep = stub.LockKeepAlive(
        pb.LockKeepAliveRequest(store_name=LOCKS, resource_id=resource, lock_owner="a", expire=10)
    )
    assert keep.status == pb.LockKeepAliveResponse.SUCCESS
    keep_b = stub.LockKeepAlive(
        pb.LockKeepAliveRequest(store_name=LOCKS, resource_id=resource, lock_owner="b", expire=10)
    )
    assert keep_b.status == pb.LockKeepAliveResponse.LOCK_BELONG_TO_OTHERS
    assert (
        stub.Unlock(pb.UnlockRequest(store_name=LOCKS, resource_id=resource, lock_owner="a")).status
        == pb.UnlockResponse.SUCCESS
    )
    again = stub.Unlock(pb.UnlockRequest(store_name=LOCKS, resource_id=resource, lock_owner="a"))
    assert again.status == pb.UnlockResponse.LOCK_UNEXIST
    gone = stub.LockKeepAlive(pb.LockKeepAliveRequest(store_name=LOCKS, resource_id=resource, lock_owner="a", expire=1))
    assert gone.status == pb.LockKeepAliveResponse.LOCK_UNEXIST


def test_expired_lock_can_be_taken_by_another_owner(sidecar: Sidecar) -> None:
    stub, resource = sidecar.stub(), f"r-{uuid.uuid4().hex[:8]}"
    assert stub.TryLock(pb.TryLockRequest(store_name=LOCKS, resource_id=resource, lock_owner="a", expire=1)).success
    assert not stub.TryLock(pb.TryLockRequest(store_name=LOCKS, resource_id=resource, lock_owner="b", expire=1)).success
    time.sleep(1.1)
    assert stub.TryLock(pb.TryLockRequest(store_name=LOCKS, resource_id=resource, lock_owner="b", expire=5)).success
    late = stub.Unlock(pb.UnlockRequest(store_name=LOCKS, resource_id=resource, lock_owner="a"))
    assert late.status == pb.UnlockResponse.LOCK_BELONG_TO_OTHERS


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (pb.TryLockRequest(store_name=LOCKS, resource_id="r", lock_owner="o", expire=-1), ["expire is -1"]),
        (pb.TryLockRequest(store_name=LOCKS, resource_id="r", lock_owner="o", expire=0), ["expire is 0"]),
        (pb.TryLockRequest(store_name=LOCKS, resource_id="", lock_owner="o", expire=1), ["resource_id", "empty"]),
        (pb.TryLockRequest(store_name=LOCKS, resource_id="r", lock_owner="", expire=1), ["lock_owner", "empty"]),
        (pb.TryLockRequest(store_name="", resource_id="r", lock_owner="o", expire=1), ["store_name", "empty"]),
        (pb.TryLockRequest(store_name="zz", resource_id="r", lock_owner="o", expire=1), ["store_name 'zz'"]),
    ],
)
def test_try_lock_bad_input(sidecar: Sidecar, request_: pb.TryLockRequest, words: list[str]) -> None:
    code, details = fails(lambda: sidecar.stub().TryLock(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in details


def test_sequencer_strictly_increasing_per_key(sidecar: Sidecar) -> None:
    """``sequencer_demo`` (in memory, no ``biggerThan``) counts a new key from 1, one by one."""
    stub, key = sidecar.stub(), f"seq-{uuid.uuid4().hex[:8]}"
    ids = [stub.GetNextId(pb.GetNextIdRequest(store_name="sequencer_demo", key=key)).next_id for _ in range(20)]
    assert ids == list(range(1, 21))
    other = stub.GetNextId(pb.GetNextIdRequest(store_name="sequencer_demo", key=key + "-b")).next_id
    assert other == 1
    code, details = fails(lambda: stub.GetNextId(pb.GetNextIdRequest(store_name="sequencer_demo", key="")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "key" in details
    # STRONG is what every store gives (WEAK asks less); a number the enum lacks is refused, as
    # Layotto refuses it
    strong = pb.SequencerOptions(increment=pb.SequencerOptions.STRONG)
    assert stub.GetNextId(pb.GetNextIdRequest(store_name="sequencer_demo", key=key, options=strong)).next_id == 21
    unknown = pb.SequencerOptions(increment=7)  # type: ignore[arg-type]
    code, details = fails(
        lambda: stub.GetNextId(pb.GetNextIdRequest(store_name="sequencer_demo", key=key, options=unknown))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "options.increment" in details, details


def test_secrets_local_file(sidecar: Sidecar) -> None:
    stub = sidecar.stub()
    assert dict(stub.GetSecret(pb.GetSecretRequest(store_name="secret_demo", key="redis:user")).data) == {
        "redis:user": "demo"
    }
    bulk = stub.GetBulkSecret(pb.GetBulkSecretRequest(store_name="secret_demo")).data
    assert dict(bulk["redis:password"].secrets) == {"redis:password": "demo-only"}
    assert "db-password" in bulk
    code, details = fails(lambda: stub.GetSecret(pb.GetSecretRequest(store_name="secret_demo", key="redis")))
    assert code == grpc.StatusCode.NOT_FOUND and "'redis'" in details
    assert details.endswith("not found in the secrets file 'secrets.json'"), "no path of the sidecar's install"


def test_secrets_local_env(sidecar: Sidecar) -> None:
    """The embedded secret_env has prefix LAYOTTO_SECRET_: only those variables, without it."""
    stub = sidecar.stub()
    got = stub.GetSecret(pb.GetSecretRequest(store_name="secret_env", key="TEST_DB"))
    assert dict(got.data) == {"TEST_DB": "s3cret"}  # the variable LAYOTTO_SECRET_TEST_DB
    for other in ("LAYOTTO_TEST_SECRET", "PATH", "NO_SUCH_VARIABLE_XYZ"):
        request = pb.GetSecretRequest(store_name="secret_env", key=other)
        code, _ = fails(lambda: stub.GetSecret(request))  # noqa: B023  (fails calls it at once)
        assert code == grpc.StatusCode.NOT_FOUND, other
    bulk = stub.GetBulkSecret(pb.GetBulkSecretRequest(store_name="secret_env")).data
    assert dict(bulk["TEST_DB"].secrets) == {"TEST_DB": "s3cret"}
    environment = {**os.environ, **SIDECAR_ENV}
    assert set(bulk) == {n.removeprefix("LAYOTTO_SECRET_") for n in environment if n.startswith("LAYOTTO_SECRET_")}


def test_rpc_not_implemented_yet(sidecar: Sidecar) -> None:
    code, _ = fails(lambda: sidecar.stub().InvokeBinding(pb.InvokeBindingRequest(name="b", operation="create")))
    assert code == grpc.StatusCode.UNIMPLEMENTED
