"""The mesh's life on the sidecar: start with the configuration, reload on SIGHUP or a
changed file, stop with the sidecar; report listeners, routes and clusters."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from layotto_fast_native import MeshProxy

from layotto_fast import settings as settings_module
from layotto_fast.components.invoke.config import InvokeSettings
from layotto_fast.errors import StartupError
from layotto_fast.mesh.config import MeshSettings, Route

if TYPE_CHECKING:
    from layotto_fast_native import MeshStats

log = logging.getLogger("layotto_fast.mesh")

# How often the config file's modification time is looked at.
WATCH_INTERVAL_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.01  # how often a shutdown looks whether the mesh owes answers still


class Mesh:
    def __init__(
        self,
        mesh: MeshSettings,
        config_file: str = "",
        invoke: InvokeSettings | None = None,
        read_as: settings_module.FileStamp | None = None,
    ) -> None:
        """``read_as``: the file's stamp from before ``mesh`` was read from it (a change made
        since is reloaded); without it, the file as it is now."""
        self.settings = mesh
        self._config_file = config_file
        self._invoke = invoke  # the running InvokeService targets: a reload must keep their clusters
        self._proxy: MeshProxy | None = None
        self._watching: asyncio.Task[None] | None = None
        self._seen = read_as if read_as is not None else self._stamp()
        self.reloads = 0
        self.refused_reloads = 0

    def start(self) -> None:
        """Binds every listener (an OSError names the one that cannot) and starts forwarding."""
        self._proxy = MeshProxy(self.settings.to_native())
        for name, host, port in self._proxy.addresses():
            log.info("mesh listener %s on %s:%d", name, host, port)

    def watch(self) -> None:
        """Reload when the config file changes; the caller wires SIGHUP to ``reload``."""
        if self._config_file:
            self._watching = asyncio.get_running_loop().create_task(self._watch())

    @property
    def proxy(self) -> MeshProxy | None:
        """The running proxy (None before start and after stop)."""
        return self._proxy

    def reload(self) -> bool:
        """Reads the config file again and swaps in its routes and clusters; a file that is
        bad, or that changes the listeners, is refused with the reason logged and the running
        configuration kept."""
        if self._proxy is None:  # stopped (a SIGHUP while the sidecar shuts down): nothing to reload
            return False
        self._seen = self._stamp()
        try:
            new = settings_module.read_mesh(self._config_file) if self._config_file else None
            new = new or MeshSettings()
            settings_module.check_invoke_clusters(new, self._invoke, self._config_file)
        except StartupError as exc:
            return self._refuse(str(exc))
        if _listener_keys(new) != _listener_keys(self.settings):
            return self._refuse(
                "the listeners (name, protocol, address, max_connections, max_incomplete_bytes, max_frame_size, "
                "max_buffered, idle_timeout_ms) changed: restart to change them"
            )
        assert self._proxy is not None
        self._proxy.reload(new.to_native())
        self.settings = new
        self.reloads += 1
        log.info("mesh configuration reloaded from %s", self._config_file)
        return True

    def _refuse(self, reason: str, *, exc_info: bool = False) -> bool:
        self.refused_reloads += 1
        log.error("mesh reload refused, the running configuration stays: %s", reason, exc_info=exc_info)
        return False

    def failure(self) -> str | None:
        """What the mesh thread failed with, once it has: no listener is served any more and
        every invocation is refused. None while it runs, and before start and after stop."""
        return self._proxy.failure() if self._proxy else None

    def stats(self) -> MeshStats:
        return self._proxy.stats() if self._proxy else {"listeners": [], "routes": [], "clusters": [], "direct": []}

    def info(self) -> dict[str, Any]:
        """Listeners, routes and clusters with their health, for /actuator/info."""
        stats = self.stats()
        hosts = {c["name"]: c["hosts"] for c in stats["clusters"]}
        return {
            "listeners": [
                {
                    "name": listener.name,
                    "protocol": listener.protocol,
                    "address": listener.address,
                    "routes": [
                        {"name": r.name, "match": _match_text(r), "clusters": [name for name, _ in r.clusters]}
                        for r in listener.routes
                    ],
                }
                for listener in self.settings.listeners
            ],
            "clusters": [
                {"name": c.name, "protocol": c.protocol, "balancing": c.balancing, "hosts": hosts.get(c.name, [])}
                for c in self.settings.clusters
            ],
        }

    def stop_accepting(self) -> None:
        """The listening sockets close (new connections are refused, and go to another
        instance), and each client connection is told so when its protocol can (Dubbo's
        read-only event), has its new requests refused as overloaded, and closes once what
        it asked before is answered and written."""
        if self._proxy is not None:
            self._proxy.stop_accepting()

    async def drain(self, deadline: float) -> None:
        """Stops accepting, waits until every client connection has closed or the loop's
        clock reaches ``deadline``, then stops: what is still owed then is cut."""
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        while self._proxy is not None and self._proxy.open_connections() and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        still_open = self._proxy.open_connections() if self._proxy is not None else 0
        if still_open:
            log.warning("mesh: %d client connections still open at the end of the shutdown grace: cut", still_open)
        self.stop()

    def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def _stamp(self) -> settings_module.FileStamp | None:
        return settings_module.file_stamp(self._config_file) if self._config_file else None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            stamp = self._stamp()
            if stamp is not None and stamp != self._seen:
                try:
                    self.reload()
                except Exception as exc:
                    # One failed reload must not end the watch. reload() refuses what it
                    # expects (StartupError, changed listeners); anything else, such as a
                    # file that breaks the YAML reader, is refused here. The routes stay:
                    # reload() swaps them in last.
                    self._refuse(f"{type(exc).__name__}: {exc}", exc_info=True)


def _listener_keys(mesh: MeshSettings) -> list[tuple[str, str, str, int, int, int, int, int]]:
    """What a running listener cannot change: its socket, and the limits it was made with."""
    return [
        (li.name, li.protocol, li.address, li.max_connections, li.max_incomplete_bytes, li.max_frame_size,
         li.max_buffered, li.idle_timeout_ms)
        for li in mesh.listeners
    ]  # fmt: skip


def _match_text(route: Route) -> str:
    m = route.match
    parts = [
        f"service={m.service}" if m.service else "",
        f"service_prefix={m.service_prefix}" if m.service_prefix else "",
        f"version={m.version}" if m.version is not None else "",
        *(f"header {k}={v}" for k, v in m.headers),
    ]
    return ", ".join(p for p in parts if p) or "(any)"
