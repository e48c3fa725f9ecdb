"""Wire the sidecar together and run it on one uvloop event loop until SIGTERM.

SIGTERM or SIGINT starts a graceful stop: readiness DOWN at once, then everything in flight
gets the shutdown grace, and the sidecar exits 0 within it (plus at most FINISH_SECONDS for
the last acknowledgements and closes when the deliveries used it all). A stop during
start-up abandons the component inits still running and never starts the app's
subscriptions. A second signal during a stop exits at once, with 128 + the signal's number
(143 for SIGTERM, 130 for SIGINT), as a shell reports a process the signal ended.
"""

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
from layotto_fast.actuator.routes import ACTUATOR_LIMITS, ActuatorRoutes
from layotto_fast.api.app_callback import GrpcAppChannel
from layotto_fast.api.layotto import LayottoRuntime
from layotto_fast.api.transport_grpcio import bind, build_server
from layotto_fast.api.transport_native import NativeGrpcServer
from layotto_fast.components.invoke.config import InvokeSettings
from layotto_fast.components.invoke.mesh_channels import MeshInvoker
from layotto_fast.components.invoke.targets import build_targets, needs_mesh
from layotto_fast.errors import StartupError
from layotto_fast.http import HttpProtocol
from layotto_fast.manifest import ComponentManifest, for_app, load_folder, with_placeholders
from layotto_fast.mesh.config import MeshSettings
from layotto_fast.mesh.metrics import MeshCollector
from layotto_fast.mesh.proxy import Mesh
from layotto_fast.runtime.app_subscriptions import AppSubscriptions
from layotto_fast.runtime.invoke_service import InvokeService
from layotto_fast.runtime.lifecycle import Components, Health
from layotto_fast.runtime.pubsub_service import with_consumer_groups
from layotto_fast.runtime.services import Services
from layotto_fast.settings import Settings

log = logging.getLogger("layotto_fast")

# Young-generation collections every this many allocations instead of Python's 700: a call
# allocates dozens of container objects, so the default collects every few calls under load.
GC_YOUNG_THRESHOLD = 20_000

# Seconds past the shutdown grace that the last steps of a stop may take (acknowledging what
# was settled, closing the components) when the deliveries in flight used the whole grace; a
# backend that answers in that time is left cleanly, one that does not is abandoned.
FINISH_SECONDS = 0.5
# What closing the app's subscription cycle and connection may take: at least the first,
# at most the second, within the grace (a frozen backend must not use up the calls' share).
APP_CLOSE_SECONDS = (0.2, 1.0)


class GrpcServer(Protocol):
    async def stop(self, grace: float) -> None: ...


def load_manifests(settings: Settings) -> list[ComponentManifest]:
    """This app's manifests (with those scoped to other app ids, for ``check``), logging
    where they came from and how many this app loads: a folder that is not the one meant
    (a ./components of front-end code) otherwise shows only as calls naming no component."""
    folders = settings.components_folders()
    if not folders:
        with resources.as_file(resources.files("layotto_fast") / "defaults") as embedded:
            manifests = load_folder(Path(embedded))
        where = "none given and no ./components folder: the embedded in-memory set"
    else:
        manifests = [manifest for folder in folders for manifest in load_folder(folder)]
        where = ", ".join(str(folder.resolve()) for folder in folders)
        where += "" if settings.resources_path else " (the default, ./components)"
        if not manifests:
            log.warning(
                "resources path %s holds no component manifests (YAML documents of kind: Component): "
                "no components are loaded; give --resources-path DIR (or resources_path in the --config "
                "file) to read them from another folder",
                where,
            )
    manifests = for_app(manifests, settings.app_id, os.environ)
    loaded = sum(m.loaded_by(settings.app_id) for m in manifests)
    log.info("resources path %s: %d components loaded for app id %s", where, loaded, settings.app_id)
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
        self.mesh = Mesh(mesh, settings.config_file, settings.invoke, settings.config_stamp) if wants_mesh else None
        self.invoker = MeshInvoker(lambda: self.mesh.proxy if self.mesh else None)
        targets = build_targets(invoke, lambda: self.invoker, settings.max_message_bytes)
        self.services = Services.over(self.components, settings.app_id, InvokeService(targets))
        self.metrics = Metrics(self.components, self.services)
        self.layotto = LayottoRuntime(self.services)
        self.app: AppSubscriptions | None = None
        if settings.app_port:
            channel = GrpcAppChannel(
                settings.app_host, settings.app_port, settings.app_keepalive_seconds, settings.app_ping_spacing_seconds
            )
            self.app = AppSubscriptions(self.services.pubsub, channel)
        if self.mesh is not None:
            self.metrics.registry.register(MeshCollector(self.mesh))
        self._stop = asyncio.Event()
        self._signalled = False  # a stop signal came: a second one exits at once
        self._grpc_port = settings.grpc_port  # the one bound, once serving: port 0 asks for any
        self.failure: str | None = None  # why it stopped by itself (exit 1), when it did
        self._mesh_started = False
        self._uds_inode: int | None = None

    def grpc_addresses(self) -> list[str]:
        host = self.settings.listen_address
        host = f"[{host}]" if ":" in host else host  # grpc reads "::1:34904" as another address
        addresses = [f"{host}:{self._grpc_port}"]
        if self.settings.grpc_uds:
            addresses.append(f"unix:{self.settings.grpc_uds}")
        return addresses

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        # SIGHUP's default action ends the process with no drain: never that, mesh or not.
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        uds = self.settings.grpc_uds
        if uds:
            claim_socket_path(uds, *self.settings.origin("grpc_uds"))
        routes = ActuatorRoutes(
            self.components,
            self.metrics,
            {"app_id": self.settings.app_id, "grpc_transport": self.settings.grpc_transport},
            lambda: self.services.configuration.active_subscriptions,
            self.mesh.info if self.mesh else None,
            self.app,
        )
        actuator_address = self.settings.actuator_listen_address or self.settings.listen_address
        actuator = await loop.create_server(
            lambda: HttpProtocol(routes.router, ACTUATOR_LIMITS), actuator_address, self.settings.actuator_port
        )
        if self.mesh is not None:
            self.mesh.start()
            self._mesh_started = True
            self.mesh.watch()
        server = await self._start_grpc()
        # Kept referenced while they run; they end with the stop.
        grpcio_watch = (
            loop.create_task(self._stop_if_grpcio_ends()) if self.settings.grpc_transport == "grpcio" else None
        )
        mesh_watch = loop.create_task(self._stop_if_mesh_fails()) if self.mesh is not None else None
        if uds:  # removed at exit only if it is still this socket, not one another process made since
            self._uds_inode = os.stat(uds).st_ino
        log.info(
            "serving gRPC (%s transport) on %s, actuator on %s:%d",
            self.settings.grpc_transport,
            ", ".join(self.grpc_addresses()),
            actuator_address,
            actuator.sockets[0].getsockname()[1],  # the one bound: port 0 asks for any
        )
        # A stop signal does not wait for the inits: a backend that never answers would hold
        # it (readiness INIT) for the whole init timeout, then the app would be dialled.
        initialising = loop.create_task(self.components.init_all())
        stop = loop.create_task(self._stop.wait())
        await asyncio.wait((initialising, stop), return_when=asyncio.FIRST_COMPLETED)
        if not initialising.done():
            await self._stop_during_start_up(initialising, server, actuator)
            return
        stop.cancel()
        try:
            initialising.result()
        except StartupError as exc:
            # An unresolvable secret reference is a bad manifest: stop as one does (exit 2),
            # after letting go of the ports and the stores already started.
            self.components.stopping_reason = f"bad configuration: {exc}"
            await self._stop_serving(server, actuator, loop.time())
            raise
        log.info("readiness %s", self.components.readiness().status.value)
        if self.app is not None and not self._stop.is_set():
            self.app.start()  # after the components: nothing is read for the app before they are up
        settle_garbage_collector()
        checker = loop.create_task(self._check_health())
        await self._stop.wait()

        grace = self.settings.shutdown_grace_seconds
        log.info("stopping: readiness DOWN, draining deliveries and calls for up to %.1fs", grace)
        self.components.stopping_reason = self.failure or "shutting down"
        checker.cancel()
        for watch in (grpcio_watch, mesh_watch):
            if watch is not None:
                watch.cancel()
        await self._stop_serving(server, actuator, loop.time() + grace)
        log.info("stopped")

    async def _stop_during_start_up(
        self, initialising: asyncio.Task[None], server: GrpcServer, actuator: asyncio.Server
    ) -> None:
        """A stop signal came before every component had initialised: readiness DOWN, the
        inits still running cancelled (one that ignores it is abandoned at the end of the
        grace), the app never dialled, and what did start closed as in any stop."""
        loop = asyncio.get_running_loop()
        grace = self.settings.shutdown_grace_seconds
        deadline = loop.time() + grace
        waiting = sorted(s.manifest.name for s in self.components.slots if s.health == Health.INIT)
        log.info("stopping during start-up: readiness DOWN, abandoning the inits still running (%s)",
                 ", ".join(waiting) or "secret references")  # fmt: skip
        self.components.stopping_reason = "shutting down"
        self.services.configuration.end_subscriptions("the sidecar is shutting down")
        initialising.cancel()
        await asyncio.wait((initialising,), timeout=max(0.0, deadline - loop.time()))
        if not initialising.done():
            log.warning("stopping: component inits still running at the end of the grace: abandoned")
        elif not initialising.cancelled() and initialising.exception() is not None:
            log.info("stopping: start-up ended with: %s", initialising.exception())
        await self._stop_serving(server, actuator, deadline)
        log.info("stopped")

    async def _stop_if_grpcio_ends(self) -> None:
        """grpcio's server can end by itself: its loop raises on a request path that is not
        UTF-8, closes its listening sockets and every connection, and says so nowhere that can
        be awaited (``wait_for_termination`` never returns then). The sidecar then stops,
        liveness and readiness DOWN, and exits 1 for the platform to restart it, rather than
        stay up, healthy by its probes, with nothing serving the API. A connection to its own
        port every health-check interval finds out: refused means the server is gone."""
        host, port = self.settings.listen_address, self._grpc_port
        while not self._stop.is_set():
            await asyncio.sleep(self.settings.health_check_interval_seconds)
            try:
                _, writer = await asyncio.open_connection(host, port)
            except ConnectionRefusedError:
                if not self._stop.is_set():
                    self._stop_by_itself("the gRPC server (grpcio transport) ended by itself")
                return
            except OSError:
                continue  # out of descriptors and the like: not the server's end
            writer.close()

    async def _stop_if_mesh_fails(self) -> None:
        """The mesh's thread ends by itself only on a bug (a panic): its listeners are no
        longer served and InvokeService over bolt and dubbo is refused. The sidecar then
        stops and exits 1, liveness DOWN with the reason, for the platform to restart it."""
        assert self.mesh is not None
        while not self._stop.is_set():
            await asyncio.sleep(self.settings.health_check_interval_seconds)
            failure = self.mesh.failure()
            if failure is not None and not self._stop.is_set():
                self._stop_by_itself(f"the mesh thread failed ({failure})")
                return

    def _stop_by_itself(self, why: str) -> None:
        """Stops for ``why`` (exit 1, liveness and readiness DOWN with it), to be restarted."""
        self.failure = f"{why}: stopping, to be restarted"
        log.error("%s", self.failure)
        self._stop.set()

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if not self._signalled:  # the first, even when the sidecar is already stopping by itself
            self._signalled = True
            self._stop.set()
            return
        code = 128 + sig.value
        log.warning("%s during the stop: exiting now, without the rest of the grace (exit code %d)", sig.name, code)
        self._remove_socket()
        os._exit(code)

    async def _stop_serving(self, server: GrpcServer, actuator: asyncio.Server, deadline: float) -> None:
        """Stop everything, the shutdown grace ending at ``deadline`` (the loop's clock): one
        budget, spent first on the deliveries in flight, then on the gRPC calls still open."""
        # Nothing waits on a backend past ``finish_by``: one that stopped answering (a Redis
        # frozen mid-stop) holds the exit no longer than the grace and FINISH_SECONDS.
        loop = asyncio.get_running_loop()
        finish_by = deadline + FINISH_SECONDS
        # A configuration subscription's stream never ends on its own and waits on no
        # delivery: ended at once with a status (its client subscribes again elsewhere), it
        # does not hold the gRPC server's stop.
        self.services.configuration.end_subscriptions("the sidecar is shutting down")
        # First, while the gRPC server still answers the calls an app makes while it handles a
        # message: no message is read any more, and the ones in hand are answered by the
        # deadline or stay unacknowledged, not half-delivered.
        try:
            async with asyncio.timeout_at(finish_by):
                await self.services.pubsub.close(deadline)
        except TimeoutError:
            log.warning("stopping: subscriptions still stopping at the end of the grace (a backend not answering?): "
                        "abandoned, their messages in hand stay unacknowledged")  # fmt: skip
        if self.app is not None:
            # Its subscriptions are stopped (or abandoned): this ends its subscription cycle,
            # which must not subscribe again, and its connection; bounded on its own.
            try:
                limit = max(APP_CLOSE_SECONDS[0], min(finish_by - loop.time(), APP_CLOSE_SECONDS[1]))
                async with asyncio.timeout(limit):
                    await self.app.close()
            except TimeoutError:
                log.warning("stopping: the app's connection still closing at the end of the grace: abandoned")
        if self.mesh is not None:
            # The deliveries are done (an app handling one may call through the mesh): the
            # mesh's listeners close now, and its client connections drain while the gRPC
            # server stops, which an open stream holds for the whole grace.
            self.mesh.stop_accepting()
        await server.stop(max(0.0, deadline - loop.time()))
        actuator.close()
        try:
            async with asyncio.timeout_at(finish_by):
                await self.services.invoke.close()
        except TimeoutError:
            log.warning("stopping: invoke clients still closing at the end of the grace: abandoned")
        self.invoker.close()
        if self.mesh is not None:
            # After the gRPC calls (InvokeService goes out through the mesh): its clients'
            # connections, draining since the gRPC server began to stop, get what is left of
            # the grace, and the mesh stops.
            await self.mesh.drain(deadline)
        await self.components.close_all(max(finish_by, loop.time()))
        self._remove_socket()

    def _remove_socket(self) -> None:
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
            self._grpc_port = native.tcp_port() or settings.grpc_port
            return native
        grpcio = build_server(
            services,
            [],
            settings.max_message_bytes,
            stats=self.metrics.calls,
            handshake_timeout_seconds=settings.grpc_handshake_timeout_seconds,
        )
        self._grpc_port = bind(grpcio, self.grpc_addresses())[0]
        await grpcio.start()
        return grpcio

    async def _check_health(self) -> None:
        await self.components.watch_health(self.settings.health_check_interval_seconds)


def claim_socket_path(path: str, source: str, field: str) -> None:
    """Make ``path`` free for the gRPC Unix socket: a socket nobody listens on any more is
    removed; anything else there (a file, a socket another process serves) stops start-up."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(source, field, f"{path!r} cannot be checked: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise StartupError(source, field, f"{path!r} exists and is not a socket: choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a process that is gone
        return
    except OSError as exc:
        raise StartupError(source, field, f"{path!r} cannot be checked: {exc.strerror}") from None
    finally:
        probe.close()
    raise StartupError(source, field, f"{path!r}: another process is serving on this socket")


def serve(settings: Settings, manifests: list[ComponentManifest]) -> int:
    """Serve until stopped; the exit code: 0 after a stop signal, 1 when it stopped by itself."""

    async def main() -> int:
        sidecar = Sidecar(settings, manifests)
        await sidecar.run()
        return 1 if sidecar.failure else 0

    return uvloop.run(main())
