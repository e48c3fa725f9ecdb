"""A Node client (@grpc/grpc-js, stubs loaded at runtime by @grpc/proto-loader) drives the sidecar.

grpc-js is an HTTP/2 + gRPC implementation independent of both grpc-go and the
C core behind grpcio, and proto-loader reads proto/runtime.proto directly, so
this checks the wire format and framing of unary calls and of the
bidirectional SubscribeConfiguration stream against a third client stack.
Dependencies are pinned by package-lock.json and installed once per module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sidecar import Sidecar
from tests.tools import tool_missing

CLIENT = Path(__file__).resolve().parent / "grpc_js_client"


@pytest.fixture(scope="module")
def node_client() -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        tool_missing("node/npm not installed")
    install = "ci" if (CLIENT / "package-lock.json").exists() else "install"
    result = subprocess.run(
        [npm, install, "--no-audit", "--no-fund"], cwd=CLIENT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"npm {install} failed:\n{result.stdout}\n{result.stderr}"
    return Path(node)


def run_client(node: Path, sidecar: Sidecar, mode: str) -> dict[str, object]:
    result = subprocess.run(
        [str(node), str(CLIENT / "client.js"), sidecar.target, mode], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def test_grpc_js_unary(sidecar: Sidecar, node_client: Path) -> None:
    report = run_client(node_client, sidecar, "unary")
    assert set(report) == {"hello", "state", "trylock", "unlock", "ids"}
    assert report["hello"] == "greetings, js"
    assert report["state"] == "js-v"
    assert report["trylock"] is True
    assert report["unlock"] == "SUCCESS"
    ids = report["ids"]
    assert isinstance(ids, list) and len(ids) == 2
    # int64 arrives as a decimal string (longs: String), never a lossy JS number.
    assert all(isinstance(i, str) and i.isdigit() for i in ids), ids
    assert int(ids[1]) > int(ids[0]) >= 1


def test_grpc_js_subscribe_configuration_stream(sidecar: Sidecar, node_client: Path) -> None:
    report = run_client(node_client, sidecar, "stream")
    assert report == {"pushes": [["jk", "v1"], ["jk", ""]]}
