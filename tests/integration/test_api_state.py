"""State rpcs over gRPC against the real sidecar process (in-memory store, and Redis where a test says)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
import pytest

from layotto_fast._proto import runtime_pb2 as pb
from tests.backends.servers import RedisServer
from tests.sidecar import Sidecar, start

STORE = "in-memory"


def key() -> str:
    return f"k-{uuid.uuid4().hex[:8]}"


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()  # type: ignore[operator]
    error = raised.value
    return error.code(), error.details()  # type: ignore[attr-defined]


def test_save_get_delete(sidecar: Sidecar) -> None:
    stub, k = sidecar.stub(), key()
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=k)).data == b""
    stub.SaveState(pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key=k, value=b"v1")]))
    got = stub.GetState(pb.GetStateRequest(store_name=STORE, key=k))
    assert got.data == b"v1" and got.etag
    stub.DeleteState(pb.DeleteStateRequest(store_name=STORE, key=k))
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=k)).data == b""


def test_bulk_get_and_bulk_delete(sidecar: Sidecar) -> None:
    stub, a, b, missing = sidecar.stub(), key(), key(), key()
    stub.SaveState(
        pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key=a, value=b"A"), pb.StateItem(key=b, value=b"B")])
    )
    items = stub.GetBulkState(pb.GetBulkStateRequest(store_name=STORE, keys=[a, missing, b])).items
    assert [(i.key, i.data) for i in items] == [(a, b"A"), (missing, b""), (b, b"B")]
    stub.DeleteBulkState(pb.DeleteBulkStateRequest(store_name=STORE, states=[pb.StateItem(key=a), pb.StateItem(key=b)]))
    items = stub.GetBulkState(pb.GetBulkStateRequest(store_name=STORE, keys=[a, b])).items
    assert [i.data for i in items] == [b"", b""]


def test_etag_first_write(sidecar: Sidecar) -> None:
    stub, k = sidecar.stub(), key()
    first_write = pb.StateOptions(concurrency=pb.StateOptions.CONCURRENCY_FIRST_WRITE)
    stub.SaveState(
        pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key=k, value=b"v1", options=first_write)])
    )
    etag1 = stub.GetState(pb.GetStateRequest(store_name=STORE, key=k)).etag
    # A second first-write without an etag loses: the key exists.
    code, _ = code_of(
        lambda: stub.SaveState(
            pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key=k, value=b"x", options=first_write)])
        )
    )
    assert code == grpc.StatusCode.ABORTED
    stub.SaveState(
        pb.SaveStateRequest(
            store_name=STORE, states=[pb.StateItem(key=k, value=b"v2", etag=pb.Etag(value=etag1), options=first_write)]
        )
    )
    got = stub.GetState(pb.GetStateRequest(store_name=STORE, key=k))
    assert got.data == b"v2" and got.etag != etag1
    code, details = code_of(
        lambda: stub.SaveState(
            pb.SaveStateRequest(
                store_name=STORE,
                states=[pb.StateItem(key=k, value=b"stale", etag=pb.Etag(value=etag1), options=first_write)],
            )
        )
    )
    assert code == grpc.StatusCode.ABORTED and "etag" in details
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=k)).data == b"v2"
    code, _ = code_of(
        lambda: stub.DeleteState(pb.DeleteStateRequest(store_name=STORE, key=k, etag=pb.Etag(value=etag1)))
    )
    assert code == grpc.StatusCode.ABORTED
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=k)).data == b"v2"


def test_ttl_expires(sidecar: Sidecar) -> None:
    stub, k = sidecar.stub(), key()
    stub.SaveState(
        pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key=k, value=b"v", metadata={"ttlInSeconds": "1"})])
    )
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=k)).data == b"v"
    time.sleep(1.2)
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=k)).data == b""
    code, details = code_of(
        lambda: stub.SaveState(
            pb.SaveStateRequest(
                store_name=STORE, states=[pb.StateItem(key=k, value=b"v", metadata={"ttlInSeconds": "-5"})]
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ttlInSeconds" in details and "-5" in details


def test_a_transaction_operation_without_its_request_is_skipped_as_layotto_does(sidecar: Sidecar) -> None:
    """Layotto skips it with a warning; it failed the whole transaction INVALID_ARGUMENT
    ("operations[0].request.key is empty"), and a later operation's error still names its own
    place."""
    stub, a = sidecar.stub(), key()
    stub.ExecuteStateTransaction(
        pb.ExecuteStateTransactionRequest(
            storeName=STORE,
            operations=[
                pb.TransactionalStateOperation(operationType="upsert"),
                pb.TransactionalStateOperation(operationType="upsert", request=pb.StateItem(key=a, value=b"a1")),
            ],
        )
    )
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=a)).data == b"a1"
    code, details = code_of(
        lambda: stub.ExecuteStateTransaction(
            pb.ExecuteStateTransactionRequest(
                storeName=STORE,
                operations=[
                    pb.TransactionalStateOperation(operationType="delete"),
                    pb.TransactionalStateOperation(operationType="upsert", request=pb.StateItem(key="", value=b"x")),
                ],
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "operations[1].request.key" in details, details


def test_transaction_is_all_or_nothing(sidecar: Sidecar) -> None:
    stub, a, b, c = sidecar.stub(), key(), key(), key()
    stub.SaveState(pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key=a, value=b"a0")]))
    stub.ExecuteStateTransaction(
        pb.ExecuteStateTransactionRequest(
            storeName=STORE,
            operations=[
                pb.TransactionalStateOperation(operationType="upsert", request=pb.StateItem(key=b, value=b"b1")),
                pb.TransactionalStateOperation(operationType="delete", request=pb.StateItem(key=a)),
            ],
        )
    )
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=a)).data == b""
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=b)).data == b"b1"
    # The second operation carries a stale etag: the first must not be applied either.
    code, _ = code_of(
        lambda: stub.ExecuteStateTransaction(
            pb.ExecuteStateTransactionRequest(
                storeName=STORE,
                operations=[
                    pb.TransactionalStateOperation(operationType="upsert", request=pb.StateItem(key=c, value=b"c1")),
                    pb.TransactionalStateOperation(
                        operationType="upsert", request=pb.StateItem(key=b, value=b"b2", etag=pb.Etag(value="stale"))
                    ),
                ],
            )
        )
    )
    assert code == grpc.StatusCode.ABORTED
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=c)).data == b""
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key=b)).data == b"b1"
    code, details = code_of(
        lambda: stub.ExecuteStateTransaction(
            pb.ExecuteStateTransactionRequest(
                storeName=STORE,
                operations=[pb.TransactionalStateOperation(operationType="merge", request=pb.StateItem(key=c))],
            )
        )
    )
    assert code == grpc.StatusCode.UNIMPLEMENTED and "operations[0].operationType" in details and "merge" in details


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (pb.GetStateRequest(store_name="", key="k"), grpc.StatusCode.INVALID_ARGUMENT, ["store_name", "empty"]),
        (pb.GetStateRequest(store_name="nope", key="k"), grpc.StatusCode.INVALID_ARGUMENT, ["store_name", "'nope'"]),
        (pb.GetStateRequest(store_name=STORE, key=""), grpc.StatusCode.INVALID_ARGUMENT, ["key", "empty"]),
    ],
)
def test_get_state_bad_input(
    sidecar: Sidecar, request_: pb.GetStateRequest, code: grpc.StatusCode, words: list[str]
) -> None:
    got, details = code_of(lambda: sidecar.stub().GetState(request_))
    assert got == code
    for word in words:
        assert word in details
    # The sidecar keeps serving.
    assert sidecar.stub().GetState(pb.GetStateRequest(store_name=STORE, key="alive")).data == b""


def test_save_state_empty_key_names_field(sidecar: Sidecar) -> None:
    code, details = code_of(
        lambda: sidecar.stub().SaveState(
            pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key="ok", value=b"1"), pb.StateItem(key="")])
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "states[1].key" in details


def test_delete_state_errors_name_its_own_fields(sidecar: Sidecar) -> None:
    """DeleteStateRequest has ``key``, not a list of items: the error names the field as it is."""
    code, details = code_of(lambda: sidecar.stub().DeleteState(pb.DeleteStateRequest(store_name=STORE, key="")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("key is empty"), details


def test_layotto_state_demo_saves_with_etag_2_and_last_write(sidecar: Sidecar) -> None:
    """Layotto's own state demo: etag "2" with last-write concurrency must go through."""
    stub = sidecar.stub()
    last_write = pb.StateOptions(concurrency=pb.StateOptions.CONCURRENCY_LAST_WRITE)
    item = pb.StateItem(key="demo-key", value=b"hello world", etag=pb.Etag(value="2"), options=last_write)
    stub.SaveState(pb.SaveStateRequest(store_name=STORE, states=[item]))
    assert stub.GetState(pb.GetStateRequest(store_name=STORE, key="demo-key")).data == b"hello world"


REDIS_STORE = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: cache
spec:
  type: state.redis
  metadata:
    - name: redisHost
      value: {address}
    - name: keyPrefix
      value: none
"""


def test_bulk_get_reports_a_key_of_another_type_in_its_item(tmp_path: Path, redis_server: RedisServer) -> None:
    """Layotto answers each key of GetBulkState on its own: one key holding a Redis list
    fails that item, not the call, and the other keys are still read; a plain string is read
    as its value with no etag, as Dapr and Layotto read it (older Dapr versions wrote so)."""
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "cache.yaml").write_text(REDIS_STORE.format(address=redis_server.address))
    stored, string, foreign, missing = key(), key(), key(), key()
    redis_server.cli("SET", string, "a string")
    redis_server.cli("RPUSH", foreign, "an item")
    sidecar = start(tmp_path, "--resources-path", str(folder))
    try:
        stub = sidecar.stub()
        stub.SaveState(pb.SaveStateRequest(store_name="cache", states=[pb.StateItem(key=stored, value=b"v")]))
        keys = [stored, string, foreign, missing]
        items = stub.GetBulkState(pb.GetBulkStateRequest(store_name="cache", keys=keys)).items
        expected = [(stored, b"v", True), (string, b"a string", False), (foreign, b"", False), (missing, b"", False)]
        assert [(i.key, i.data, bool(i.etag)) for i in items] == expected
        assert items[0].error == items[1].error == items[3].error == ""
        assert "WRONGTYPE" in items[2].error, items[2].error
        got = stub.GetState(pb.GetStateRequest(store_name="cache", key=string))
        assert (got.data, got.etag) == (b"a string", "")
    finally:
        assert sidecar.stop() == 0
