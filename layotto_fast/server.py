"""Wire the sidecar together and run it on one uvloop event loop until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import stat
from importlib import resources
from pathlib import Path
from typing import Protocol

import uvloop
from google.protobuf.descriptor import ServiceDescriptor

from layotto_fast._proto import runtime_pb2
from layotto_fast.actuator.metrics import Metrics
from layotto_fast.actuator.routes import ActuatorRoutes
from layotto_fast.api.app_callback import GrpcAppChannel
from layotto_fast.api.layotto import LayottoRuntime
from layotto_fast.api.transport_grpcio import build_server
from layotto_fast.api.transport_native import NativeGrpcServer
from layotto_fast.components.invoke.config import InvokeSettings
from layotto_fast.components.invoke.mesh_channels import MeshInvoker
from layotto_fast.components.invoke.targets import build_targets, needs_mesh
from layotto_fast.errors import StartupError
from layotto_fast.http import HttpProtocol
from layotto_fast.manifest import ComponentManifest, load_folder, with_placeholders
from layotto_fast.mesh.config import MeshSettings
from layotto_fast.mesh.metrics import MeshCollector
from layotto_fast.mesh.proxy import Mesh
from layotto_fast.runtime.app_subscriptions import AppSubscriptions
from layotto_fast.runtime.invoke_service import InvokeService
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.pubsub_service import with_consumer_groups
from layotto_fast.runtime.services import Services
from layotto_fast.settings import COMMAND_LINE, Settings

log = logging.getLogger("layotto_fast")

# Young-generation collections every this many allocations instead of Python's 700: a call
# allocates dozens of container objects, so the default collects every few calls under load.
GC_YOUNG_THRESHOLD = 20_000


class GrpcServer(Protocol):
    async def stop(self, grace: float) -> None: ...


def load_manifests(settings: Settings) -> list[ComponentManifest]:
    folder = settings.components_folder()
    if folder is None:
        with resources.as_file(resources.files("layotto_fast") / "defaults") as embedded:
            manifests = load_folder(Path(embedded))
    else:
        manifests = load_folder(folder)
    return with_placeholders(manifests, settings.app_id, os.environ)


def settle_garbage_collector() -> None:
    """What start-up made (modules, protobuf descriptors, components) lives as long as the
    process: move it out of the collector's sight, so that no collection walks it again."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class Sidecar:
    def __init__(self, settings: Settings, manifests: list[ComponentManifest]) -> None:
        self.settings = settings
        self.components = Components(
            with_consumer_groups(manifests, settings.app_id),
            settings.component_init_timeout_seconds,
            app_id=settings.app_id,
        )
        invoke = settings.invoke or InvokeSettings()
        mesh = settings.mesh or MeshSettings()
        wants_mesh = bool(mesh.listeners or mesh.clusters) or needs_mesh(invoke)
        self.mesh = Mesh(mesh, settings.config_file, settings.invoke) if wants_mesh else None
        self.invoker = MeshInvoker(lambda: self.mesh.proxy if self.mesh else None)
        targets = build_targets(invoke, lambda: self.invoker)
        self.services = Services.over(self.components, settings.app_id, InvokeService(targets))
        self.metrics = Metrics(self.components, self.services)
        self.layotto = LayottoRuntime(self.services)
        self.app: AppSubscriptions | None = None
        if settings.app_port:
            channel = GrpcAppChannel(settings.app_host, settings.app_port, settings.app_keepalive_seconds)
            self.app = AppSubscriptions(self.services.pubsub, channel)
        if self.mesh is not None:
            self.metrics.registry.register(MeshCollector(self.mesh))
        self._stop = asyncio.Event()
        self._mesh_started = False
        self._uds_inode: int | None = None

    def grpc_addresses(self) -> list[str]:
        host = self.settings.listen_address
        host = f"[{host}]" if ":" in host else host  # grpc reads "::1:34904" as another address
        addresses = [f"{host}:{self.settings.grpc_port}"]
        if self.settings.grpc_uds:
            addresses.append(f"unix:{self.settings.grpc_uds}")
        return addresses

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        # SIGHUP's default action ends the process with no drain: never that, mesh or not.
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        uds = self.settings.grpc_uds
        if uds:
            claim_socket_path(uds, self.settings.config_file or COMMAND_LINE)
        routes = ActuatorRoutes(
            self.components,
            self.metrics,
            {"app_id": self.settings.app_id, "grpc_transport": self.settings.grpc_transport},
            lambda: self.services.configuration.active_subscriptions,
            self.mesh.info if self.mesh else None,
            self.app,
        )
        actuator = await loop.create_server(
            lambda: HttpProtocol(routes.router), self.settings.listen_address, self.settings.actuator_port
        )
        if self.mesh is not None:
            self.mesh.start()
            self._mesh_started = True
            self.mesh.watch()
        server = await self._start_grpc()
        if uds:  # removed at exit only if it is still this socket, not one another process made since
            self._uds_inode = os.stat(uds).st_ino
        log.info(
            "serving gRPC (%s transport) on %s, actuator on %s:%d",
            self.settings.grpc_transport,
            ", ".join(self.grpc_addresses()),
            self.settings.listen_address,
            self.settings.actuator_port,
        )
        try:
            await self.components.init_all()
        except StartupError as exc:
            # An unresolvable secret reference is a bad manifest: stop as one does (exit 2),
            # after letting go of the ports and the stores already started.
            self.components.stopping_reason = f"bad configuration: {exc}"
            await self._stop_serving(server, actuator, loop.time())
            raise
        log.info("readiness %s", self.components.readiness().status.value)
        if self.app is not None:
            self.app.start()  # after the components: nothing is read for the app before they are up
        settle_garbage_collector()
        checker = loop.create_task(self._check_health())
        await self._stop.wait()

        grace = self.settings.shutdown_grace_seconds
        log.info("stopping: readiness DOWN, draining deliveries and calls for up to %.1fs", grace)
        self.components.stopping_reason = "shutting down"
        checker.cancel()
        await self._stop_serving(server, actuator, loop.time() + grace)
        log.info("stopped")

    async def _stop_serving(self, server: GrpcServer, actuator: asyncio.Server, deadline: float) -> None:
        """Stop everything, the shutdown grace ending at ``deadline`` (the loop's clock): one
        budget, spent first on the deliveries in flight, then on the gRPC calls still open."""
        # First, while the gRPC server still answers the calls an app makes while it handles a
        # message: no message is read any more, and the ones in hand are answered by the
        # deadline or stay unacknowledged, not half-delivered.
        await self.services.pubsub.close(deadline)
        if self.app is not None:
            await self.app.close()  # its subscriptions are stopped: this ends its connection
        await server.stop(max(0.0, deadline - asyncio.get_running_loop().time()))
        actuator.close()
        await self.services.invoke.close()
        self.invoker.close()
        if self.mesh is not None:
            self.mesh.stop()
        await self.components.close_all()
        if self._uds_inode is not None:
            with contextlib.suppress(OSError):
                if os.stat(self.settings.grpc_uds).st_ino == self._uds_inode:
                    os.unlink(self.settings.grpc_uds)

    def _reload(self) -> None:
        if self.mesh is not None and self._mesh_started:
            self.mesh.reload()
        else:
            log.info("SIGHUP: nothing to reload (the config file has no mesh section, or the mesh is not up yet)")

    async def _start_grpc(self) -> GrpcServer:
        services: list[tuple[ServiceDescriptor, object]] = [
            (runtime_pb2.DESCRIPTOR.services_by_name["Runtime"], self.layotto)
        ]
        settings = self.settings
        if settings.grpc_transport == "native":
            native = NativeGrpcServer(
                services,
                settings.max_message_bytes,
                stats=self.metrics.calls,
                handshake_timeout_seconds=settings.grpc_handshake_timeout_seconds,
            )
            await native.start(self.grpc_addresses())
            return native
        grpcio = build_server(
            services,
            self.grpc_addresses(),
            settings.max_message_bytes,
            stats=self.metrics.calls,
            handshake_timeout_seconds=settings.grpc_handshake_timeout_seconds,
        )
        await grpcio.start()
        return grpcio

    async def _check_health(self) -> None:
        await self.components.watch_health(self.settings.health_check_interval_seconds)


def claim_socket_path(path: str, source: str) -> None:
    """Make ``path`` free for the gRPC Unix socket: a socket nobody listens on any more is
    removed; anything else there (a file, a socket another process serves) stops start-up."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(source, "grpc_uds", f"{path!r} cannot be checked: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise StartupError(source, "grpc_uds", f"{path!r} exists and is not a socket: choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a process that is gone
        return
    except OSError as exc:
        raise StartupError(source, "grpc_uds", f"{path!r} cannot be checked: {exc.strerror}") from None
    finally:
        probe.close()
    raise StartupError(source, "grpc_uds", f"{path!r}: another process is serving on this socket")


def serve(settings: Settings, manifests: list[ComponentManifest]) -> None:
    async def main() -> None:
        await Sidecar(settings, manifests).run()

    uvloop.run(main())
