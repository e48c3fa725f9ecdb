"""The Layotto configuration the Redis benchmark writes serves the stores its calls name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.redis_backed import CALLS, IN_MEMORY, layotto_config


def grpc_components(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [server] = config["servers"]
    [grpc] = [listener for listener in server["listeners"] if listener["name"] == "grpc"]
    [chain] = grpc["filter_chains"]
    [runtime] = chain["filters"]
    components: dict[str, dict[str, Any]] = runtime["config"]["grpc_config"]
    return components


def test_every_store_a_benchmark_call_names_is_configured_on_the_same_redis(tmp_path: Path) -> None:
    config = layotto_config(34904, 34999, "127.0.0.1:6390", tmp_path / "layotto.log")
    components = grpc_components(config)
    blocks = {"GetState": "state", "SaveState": "state", "TryLock": "lock", "GetNextId": "sequencer"}
    for rpc, body in [*CALLS.items(), *IN_MEMORY.items()]:
        store = components[blocks[rpc]][str(body["store_name"])]
        if store["type"] == "redis":
            assert store["metadata"]["redisHost"] == "127.0.0.1:6390"
        else:
            assert store["type"] == "in-memory"


def test_the_listeners_are_on_the_ports_given(tmp_path: Path) -> None:
    config = layotto_config(41000, 41001, "127.0.0.1:6390", tmp_path / "layotto.log")
    addresses = {listener["name"]: listener["address"] for listener in config["servers"][0]["listeners"]}
    assert addresses == {"grpc": "127.0.0.1:41000", "actuator": "127.0.0.1:41001"}
