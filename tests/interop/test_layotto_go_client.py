"""A Go gRPC client (grpc-go, stubs generated from proto/ by protoc-gen-go) drives the sidecar.

Layotto's own published Go stubs (``mosn.io/layotto/spec``) are not served by the Go
module proxy reachable here, so the client's stubs are generated from this
project's proto/ files, whose descriptors were checked identical to Layotto's.
What this proves is that an independent gRPC stack talks to the sidecar.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sidecar import Sidecar
from tests.tools import tool_missing

CLIENT = Path(__file__).resolve().parent / "layotto_go_client"


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        tool_missing("Go toolchain not installed")
    subprocess.run(["bash", str(CLIENT / "gen.sh")], check=True, capture_output=True, timeout=600)
    binary = tmp_path_factory.mktemp("goclient") / "goclient"
    env_path = "/usr/local/go/bin"
    subprocess.run(
        ["bash", "-c", f'PATH="$PATH:{env_path}" go build -o {binary} .'],
        cwd=CLIENT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return binary


def test_go_client_round_trip(sidecar: Sidecar, go_client: Path) -> None:
    result = subprocess.run([str(go_client), "-addr", sidecar.target], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["hello"] == "greetings, go"
    assert report["state"] == "go-v"
    assert report["config"] == [{"key": "go-cfg", "content": "c1", "group": "g", "label": "l"}]
    assert report["trylock"] is True and report["unlock"] == "SUCCESS"
    assert report["ids"][1] > report["ids"][0]


def test_go_client_subscribe_configuration_stream(sidecar: Sidecar, go_client: Path) -> None:
    """Bidirectional stream: a subscribed key's save and delete (made over unary rpcs) are pushed."""
    result = subprocess.run(
        [str(go_client), "-addr", sidecar.target, "-mode", "stream"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"pushes": [["gk", "v1"], ["gk", ""]]}
