"""Layotto's own published Java client (Maven Central, version 1.1.0) drives the sidecar.

The client in layotto_java_sdk/ is built by Maven from ``io.mosn.layotto:runtime-sdk:1.1.0`` and
the generated stubs it depends on, ``io.mosn.layotto:runtime-spec-pb:1.1.0`` (grpc-java 1.34.1,
protobuf-java 3.12). Nothing in it is generated from this project's proto/ files, so a pass proves
that stubs Layotto itself compiled and published talk to the sidecar over the wire: SayHello,
SaveState/GetState (through the SDK's RuntimeClient), TryLock/Unlock,
GetNextId (through the SDK), SaveConfiguration/GetConfiguration. GetSecret is newer than the 1.1.0
stubs, so the client calls ``spec.proto.runtime.v1.Runtime/GetSecret`` with a hand-encoded message
on the SDK's channel; that call checks the method path and field numbers, not Layotto's stubs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sidecar import Sidecar
from tests.tools import tool_missing

CLIENT = Path(__file__).resolve().parent / "layotto_java_sdk"
JAR = CLIENT / "target" / "layotto-java-sdk-client.jar"


@pytest.fixture(scope="module")
def java_client() -> Path:
    if shutil.which("mvn") is None or shutil.which("java") is None:
        tool_missing("Maven or Java not installed")
    build = subprocess.run(
        ["mvn", "-q", "-B", "package", "-DskipTests"],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, f"maven build failed:\n{build.stdout}\n{build.stderr}"
    assert JAR.is_file(), f"{JAR} was not built"
    return JAR


def test_layotto_java_sdk_round_trip(sidecar: Sidecar, java_client: Path) -> None:
    result = subprocess.run(
        ["java", "-jar", str(java_client), "127.0.0.1", str(sidecar.grpc_port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{result.stderr}\n--- sidecar log ---\n{sidecar.log()}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["hello"] == "greetings, java"
    assert report["state"] == "java-v"
    # the SDK's serializer stores a String as raw UTF-8, read back here with the generated stub
    assert report["state_raw"] == "java-v"
    assert report["trylock"] is True
    assert report["unlock"] == "SUCCESS"
    ids = report["ids"]
    assert len(ids) == 2 and ids[1] > ids[0], ids
    assert report["secret"] == {"redis:user": "demo"}
    assert report["config"] == [{"key": "java-cfg", "content": "c1", "group": "g", "label": "l"}]
