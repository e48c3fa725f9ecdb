"""When the mesh's thread ends: the InvokeService calls it held are refused, not left waiting
for an answer that cannot come, later ones are refused at once, and a failed thread stops the
sidecar (exit 1) for the platform to restart it."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from layotto_fast_native import MeshProxy

from layotto_fast import server, settings
from layotto_fast.components.invoke.mesh_channels import MeshInvoker
from layotto_fast.errors import Unavailable
from layotto_fast.mesh.config import MeshSettings

GOLDEN = Path(__file__).resolve().parent.parent / "mesh" / "golden" / "vectors.json"


def _bolt_request() -> bytes:
    return bytes.fromhex(json.loads(GOLDEN.read_text())["bolt_request_echo"]["hex"])


def test_a_call_in_flight_when_the_mesh_thread_ends_is_refused_at_once() -> None:
    """A call held by an upstream connection that never answers: the thread's end used to leave
    its caller waiting for the whole timeout (or for good, with none)."""

    async def scenario(silent: socket.socket) -> None:
        proxy = MeshProxy(MeshSettings().to_native())
        invoker = MeshInvoker(lambda: proxy)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        call = asyncio.ensure_future(invoker.send("bolt", _bolt_request(), 60_000, address=address))
        connection, _ = await asyncio.get_running_loop().sock_accept(silent)
        with connection:
            await asyncio.get_running_loop().sock_recv(connection, 1)  # the request is out: in flight
            assert not call.done()
            proxy.stop()
            with pytest.raises(Unavailable, match="the mesh"):  # why it ended, or that it dropped the call
                await asyncio.wait_for(call, 5)
            with pytest.raises(Unavailable, match="the mesh is stopped"):
                await invoker.send("bolt", _bolt_request(), 60_000, address=address)
        assert proxy.failure() is None, "a stop is no failure"
        invoker.close()

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, reads, never answers
        silent.setblocking(False)
        asyncio.run(scenario(silent))


class FailedMesh:
    """Stands in for a mesh whose thread panicked: a release build cannot be made to panic from
    outside (the Rust tests make the real thread fail and check what it leaves)."""

    def failure(self) -> str | None:
        return "index out of bounds"


def test_a_failed_mesh_thread_stops_the_sidecar_with_the_reason() -> None:
    sidecar = server.Sidecar(settings.load(None, {"app_port": 0, "health_check_interval_seconds": 0.01}), [])
    sidecar.mesh = FailedMesh()  # type: ignore[assignment]
    asyncio.run(asyncio.wait_for(sidecar._stop_if_mesh_fails(), 5))
    assert sidecar._stop.is_set()
    assert sidecar.failure == "the mesh thread failed (index out of bounds): stopping, to be restarted"
