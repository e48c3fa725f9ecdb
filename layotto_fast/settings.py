"""The sidecar's own settings: defaults, overridden by ``--config`` YAML, overridden by flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layotto_fast.components.invoke import config as invoke_config
from layotto_fast.components.invoke.config import InvokeSettings
from layotto_fast.errors import StartupError
from layotto_fast.manifest import load_yaml, unreadable_yaml
from layotto_fast.mesh import config as mesh_config
from layotto_fast.mesh.config import MeshSettings

FileStamp = tuple[int, int, int, int]  # a file's mtime, ctime, inode and size

# Python's names, and daprd's warn and fatal (which Python's logging takes as well)
LOG_LEVELS = ("debug", "info", "warning", "warn", "error", "fatal")
TRANSPORTS = ("native", "grpcio")
MAX_MESSAGE_BYTES = 2**31 - 1  # grpc's message size settings are C ints


@dataclass(frozen=True)
class Settings:
    app_id: str = "layotto-fast"
    listen_address: str = "127.0.0.1"
    # The actuator's own ("": listen_address): a platform's probes may need it on the pod's
    # network while the API stays on loopback.
    actuator_listen_address: str = ""
    grpc_port: int = 34904
    actuator_port: int = 34999
    app_port: int = 9999  # the app's AppCallback gRPC server; 0: never dialled
    app_host: str = "127.0.0.1"
    # PING the app's connection this often; one unanswered as long closes it (0: never).
    app_keepalive_seconds: float = 10.0
    # The least time between two PINGs on a connection whose calls the app leaves silent:
    # gRPC servers take one PING per 5 minutes without data (grpc-go, grpc core), and close a
    # connection PINGed more often (GOAWAY too_many_pings).
    app_ping_spacing_seconds: float = 300.0
    grpc_uds: str = ""
    grpc_transport: str = "native"
    resources_path: str = ""
    log_level: str = "info"
    shutdown_grace_seconds: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024  # each request and answer message, both transports
    grpc_handshake_timeout_seconds: float = 10.0  # to send the HTTP/2 preface and SETTINGS
    health_check_interval_seconds: float = 2.0
    component_init_timeout_seconds: float = 10.0
    # Only from the file: the mesh's listeners, routes and clusters; and the file, to reload it.
    mesh: MeshSettings | None = None
    invoke: InvokeSettings | None = None
    config_file: str = ""
    # The file as it was just before it was read: a change after that is a change to reload.
    config_stamp: FileStamp | None = None
    flags: frozenset[str] = frozenset()  # the settings given as flags, which win over the file

    def origin(self, name: str) -> tuple[str, str]:
        """Where setting ``name`` came from, as a StartupError names it: its flag on the
        command line, or its key in the file (or the command line when there is no file)."""
        if name in self.flags:
            return COMMAND_LINE, flag(name)
        return self.config_file or COMMAND_LINE, name

    def components_folders(self) -> list[Path]:
        """The manifests folders, in order: those given (comma-separated, as daprd reads
        ``--resources-path``), else ./components, else none (the embedded set)."""
        if self.resources_path:
            # In the file, relative to the file (resolved here, not joined into the text: the
            # file's own folder may hold a comma).
            base = Path(self.config_file).parent if self.config_file and "resources_path" not in self.flags else None
            return [base / folder if base else Path(folder) for folder in _folders(self.resources_path)]
        local = Path("components")
        return [local] if local.is_dir() else []


def _folders(paths: str) -> list[str]:
    return [folder.strip() for folder in paths.split(",") if folder.strip()]


# What no file or flag sets: the file's own sections and what the loading records of them.
_NOT_SETTINGS = ("mesh", "invoke", "config_file", "config_stamp", "flags")
_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name not in _NOT_SETTINGS}
_PORTS = ("grpc_port", "actuator_port", "app_port")
# Durations that must be more than 0: at 0 every component init would time out, or health
# checks would never run.
_POSITIVE = ("grpc_handshake_timeout_seconds", "component_init_timeout_seconds", "health_check_interval_seconds")
COMMAND_LINE = "command line"


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def file_stamp(path: str) -> FileStamp | None:
    """What tells one version of the file at ``path`` from another; None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    # ctime and inode too: a copy that keeps the old mtime (cp -p, rsync -t) and size, or an
    # editor's rename over the file, still changes them
    return (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_size)


def load(config_file: str | None, overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {}
    source = config_file or COMMAND_LINE
    mesh = invoke = None
    stamp = file_stamp(config_file) if config_file else None
    if config_file:
        for name, value in _read_config(Path(config_file)).items():
            values[name] = value if name in ("mesh", "invoke") else _check(name, value, config_file)
        mesh = values.pop("mesh", None)
        invoke = values.pop("invoke", None)
    flags = frozenset(name for name, value in overrides.items() if value is not None)
    for name in flags:  # a flag is named as one, not blamed on the file
        values[name] = _check(name, overrides[name], COMMAND_LINE, flag(name))
    settings = Settings(
        **values, mesh=mesh, invoke=invoke, config_file=config_file or "", config_stamp=stamp, flags=flags
    )
    _check_together(settings, source)
    return settings


def _check_together(settings: Settings, source: str) -> None:
    """What no single setting shows: an address that cannot be bound, ports that collide."""
    addresses = {"listen_address": settings.listen_address}
    if settings.actuator_listen_address:  # empty: the listen address
        addresses["actuator_listen_address"] = settings.actuator_listen_address
    for name, address in addresses.items():
        if address == "localhost":
            continue
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problem = f"{address!r} is not an IP address (such as 127.0.0.1 or ::1)"
            raise StartupError(*settings.origin(name), problem) from None
    if settings.grpc_uds and not Path(settings.grpc_uds).parent.is_dir():
        problem = f"the folder of {settings.grpc_uds!r} does not exist: create it or choose another path"
        raise StartupError(*settings.origin("grpc_uds"), problem)
    listeners = {"grpc_port": settings.grpc_port, "actuator_port": settings.actuator_port}
    seen: dict[int, str] = {}
    for name, port in listeners.items():
        if port and port in seen:
            first = seen[port]
            # blamed on the one given as a flag if only one was: the other may be a default
            blamed, other = (first, name) if first in settings.flags and name not in settings.flags else (name, first)
            problem = f"{port} is also the {settings.origin(other)[1]}: each listener needs its own port"
            raise StartupError(*settings.origin(blamed), problem)
        seen[port] = name
    for i, listener in enumerate(settings.mesh.listeners if settings.mesh else ()):
        port = int(listener.address.rpartition(":")[2])
        if port and port in seen:
            problem = f"{port} is also the {seen[port]}: each listener needs its own port"
            raise StartupError(source, f"mesh.listeners[{i}].address", problem)
        seen[port] = f"mesh listener {listener.name!r}"
    own_hosts = {"127.0.0.1", "localhost", "::1", settings.listen_address, settings.actuator_listen_address}
    if settings.app_port and settings.app_port in seen and settings.app_host in own_hosts:
        # as daprd refuses an app port that is its own gRPC port: the sidecar would dial itself
        other = seen[settings.app_port]
        other = settings.origin(other)[1] if other in listeners else other
        problem = f"{settings.app_port} is also the {other}: the sidecar would take itself for the app"
        raise StartupError(*settings.origin("app_port"), problem)
    check_invoke_clusters(settings.mesh, settings.invoke, source)


def check_invoke_clusters(mesh: MeshSettings | None, invoke: InvokeSettings | None, source: str) -> None:
    """Every cluster an InvokeService target names is one of ``mesh``'s, of the target's
    channel: at start-up, and for a reloaded mesh section against the running targets."""
    clusters = {c.name: c.protocol for c in mesh.clusters} if mesh else {}
    for i, target in enumerate(invoke.targets if invoke else ()):
        if target.cluster is not None and clusters.get(target.cluster) != target.channel:
            known = ", ".join(f"{name} ({protocol})" for name, protocol in sorted(clusters.items())) or "none"
            problem = f"{target.cluster!r} is not a {target.channel} cluster of the mesh section (known: {known})"
            raise StartupError(source, f"invoke.targets[{i}].cluster", problem)


def read_mesh(config_file: str) -> MeshSettings | None:
    """The ``mesh`` section of ``config_file`` as it is now (a reload reads it again). The
    file's other settings are checked one by one as start-up checks them: a reload must not
    take a file the next start would refuse. (Not against one another: flags may have
    overridden some of them.)"""
    values = _read_config(Path(config_file))
    for name, value in values.items():
        if name not in ("mesh", "invoke"):
            _check(name, value, config_file)
    mesh: MeshSettings | None = values.get("mesh")
    return mesh


def _read_config(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        document = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StartupError(source, "file", f"cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise StartupError(source, "file", f"is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise StartupError(source, "yaml", f"not valid YAML: {exc}") from exc
    except ValueError as exc:  # PyYAML's reading of an unquoted date or time that is no real one
        raise StartupError(source, "yaml", unreadable_yaml(exc)) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise StartupError(source, "(document)", "must be a mapping of setting: value")
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in document.items():
        name = str(key).replace("-", "_")
        if name in spelled:  # app-id and app_id: one setting given twice, the first lost
            raise StartupError(source, str(key), f"is {spelled[name]!r} again: give each setting once")
        spelled[name] = str(key)
        if name == "mesh":
            values["mesh"] = mesh_config.parse(value, source)
            continue
        if name == "invoke":
            values["invoke"] = invoke_config.parse(value, source)
            continue
        if name not in _FIELDS:
            known = ", ".join(sorted([*_FIELDS, "invoke", "mesh"]))
            raise StartupError(source, str(key), f"unknown setting (known: {known})")
        values[name] = value
    # Relative paths in the file are relative to the file, not to where it was started from.
    if isinstance(values.get("grpc_uds"), str) and values["grpc_uds"] and not os.path.isabs(values["grpc_uds"]):
        values["grpc_uds"] = str(path.parent / values["grpc_uds"])
    return values


def _check(name: str, value: Any, source: str, field: str = "") -> Any:
    """``value`` of setting ``name`` if it is valid; else a StartupError naming ``field``
    (the setting's name unless given: a flag is named as a flag)."""
    try:
        return _checked(name, value, source)
    except StartupError as error:
        if field:
            raise StartupError(source, field, error.problem) from None
        raise


def _checked(name: str, value: Any, source: str) -> Any:
    expected = _FIELDS[name].type
    if expected == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise StartupError(source, name, f"must be an integer, got {value!r}")
        if name in _PORTS and not 0 <= value <= 65535:
            raise StartupError(source, name, f"must be a port number 0-65535, got {value}")
        if name == "max_message_bytes" and not 1024 <= value <= MAX_MESSAGE_BYTES:
            raise StartupError(source, name, f"must be from 1024 to {MAX_MESSAGE_BYTES}, got {value}")
    elif expected == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise StartupError(source, name, f"must be a non-negative number of seconds, got {value!r}")
        value = float(value)
        if name in _POSITIVE and value == 0:
            raise StartupError(source, name, "must be more than 0")
    elif not isinstance(value, str):
        raise StartupError(source, name, f"must be a string, got {value!r}")
    if name == "log_level" and value.lower() not in LOG_LEVELS:
        raise StartupError(source, name, f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    if name == "grpc_transport" and value not in TRANSPORTS:
        raise StartupError(source, name, f"must be one of {', '.join(TRANSPORTS)}, got {value!r}")
    if name == "app_id" and not value:
        raise StartupError(source, name, "must not be empty")
    return value
