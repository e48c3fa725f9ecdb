"""A building block with no component configured answers FAILED_PRECONDITION, as Layotto
("lock store is not configured", "Sequencer store is not configured", the secret and state
stores alike) and Dapr ("state store is not configured") do; it answered INVALID_ARGUMENT
"... (known: none configured)". Pub/sub is the exception both make: with none configured, a
pubsub name is unknown (or empty), INVALID_ARGUMENT, on publish and on a subscription alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from layotto_fast._proto import runtime_pb2 as pb
from tests import sidecar as sidecar_process
from tests.conftest import TRANSPORTS

CALLS: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("GetState", "state", lambda stub: stub.GetState(pb.GetStateRequest(store_name="s", key="k"))),
    ("SaveState", "state", lambda stub: stub.SaveState(pb.SaveStateRequest(store_name="s", states=[]))),
    (
        "TryLock",
        "lock",
        lambda stub: stub.TryLock(pb.TryLockRequest(store_name="s", resource_id="r", lock_owner="o", expire=5)),
    ),
    ("GetNextId", "sequencer", lambda stub: stub.GetNextId(pb.GetNextIdRequest(store_name="s", key="k"))),
    (
        "GetConfiguration",
        "configuration",
        lambda stub: stub.GetConfiguration(pb.GetConfigurationRequest(store_name="s", keys=["k"])),
    ),
    (
        "SaveConfiguration",
        "configuration",
        lambda stub: stub.SaveConfiguration(
            pb.SaveConfigurationRequest(store_name="s", items=[pb.ConfigurationItem(key="k")])
        ),
    ),
    ("GetSecret", "secretstores", lambda stub: stub.GetSecret(pb.GetSecretRequest(store_name="s", key="k"))),
    ("GetBulkSecret", "secretstores", lambda stub: stub.GetBulkSecret(pb.GetBulkSecretRequest(store_name="s"))),
    ("SayHello", "hello", lambda stub: stub.SayHello(pb.SayHelloRequest(service_name="s"))),
]


@pytest.fixture(scope="module", params=TRANSPORTS)
def bare(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A sidecar started on a resources folder that holds no component."""
    tmp = tmp_path_factory.mktemp("bare")
    (tmp / "components").mkdir()
    running = sidecar_process.start(
        tmp, "--resources-path", str(tmp / "components"), "--grpc-transport", str(request.param)
    )
    yield running
    assert running.stop() == 0, running.log()


@pytest.mark.parametrize(("rpc", "block", "call"), CALLS, ids=[rpc for rpc, _, _ in CALLS])
def test_a_block_with_no_component_is_failed_precondition(
    bare: sidecar_process.Sidecar, rpc: str, block: str, call: Callable[[Any], Any]
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(bare.stub())
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (rpc, error)
    assert f"no {block} component is configured" in error.details(), (rpc, error.details())


PUBSUB_CALLS: list[tuple[str, Callable[[Any, str], Any]]] = [
    ("PublishEvent", lambda stub, name: stub.PublishEvent(pb.PublishEventRequest(pubsub_name=name, topic="t"))),
    (
        "BulkPublishEvent",
        lambda stub, name: stub.BulkPublishEvent(pb.BulkPublishRequest(pubsub_name=name, topic="t", entries=[])),
    ),
    (
        "SubscribeTopicEvents",
        lambda stub, name: next(
            stub.SubscribeTopicEvents(
                iter(
                    [
                        pb.SubscribeTopicEventsRequest(
                            initial_request=pb.SubscribeTopicEventsRequestInitial(pubsub_name=name, topic="t")
                        )
                    ]
                )
            )
        ),
    ),
]


@pytest.mark.parametrize(("rpc", "call"), PUBSUB_CALLS, ids=[rpc for rpc, _ in PUBSUB_CALLS])
@pytest.mark.parametrize(
    ("name", "said"), [("s", "pubsub_name 's': no pubsub component"), ("", "pubsub_name is empty")]
)
def test_pubsub_with_none_configured_is_an_unknown_name(
    bare: sidecar_process.Sidecar, rpc: str, call: Callable[[Any, str], Any], name: str, said: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(bare.stub(), name)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, error)
    assert said in error.details(), (rpc, error.details())
