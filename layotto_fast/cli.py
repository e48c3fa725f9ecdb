"""``layotto-fast``: the command line. ``--app-id``, ``--app-port``, ``--resources-path`` and
``--log-level`` are daprd's flags; the others are this sidecar's own."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from layotto_fast import __version__
from layotto_fast.errors import StartupError

if TYPE_CHECKING:
    from layotto_fast.manifest import ComponentManifest

EXIT_BAD_CONFIG = 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="layotto-fast",
        description="An application-runtime sidecar serving Layotto's runtime API over gRPC.",
    )
    top.add_argument("--version", action="version", version=f"layotto-fast {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="start the sidecar",
        description=(
            "Start the sidecar. Settings come from defaults, then --config, then these flags. "
            "Exit code 2 means a bad flag, config file or component manifest; the message names "
            "the file and the field."
        ),
    )
    check = commands.add_parser("check", help="validate the config and component manifests, then exit")
    for command in (serve, check):
        _add_flags(command)
    return top


def _add_flags(command: argparse.ArgumentParser) -> None:
    # Every default is None so that a flag overrides --config only when given.
    add = command.add_argument
    add("--app-id", help="the application's id (default layotto-fast)")
    add("--grpc-port", type=int, help="gRPC API port (default 34904)")
    add("--actuator-port", type=int, help="actuator HTTP port: health, info, metrics (default 34999)")
    add(
        "--app-port",
        type=int,
        help="the application's AppCallback gRPC port, dialled for pub/sub (default 9999; 0: not dialled)",
    )
    add(
        "--app-keepalive-seconds",
        type=float,
        help="PING the app's connection this often; one unanswered as long closes it and the sidecar "
        "dials again (default 10; 0: never)",
    )
    add(
        "--app-ping-spacing-seconds",
        type=float,
        help="the least time between two PINGs while the app's calls stay silent (default 300: "
        "gRPC servers refuse PINGs more often than every 5 minutes without data)",
    )
    add(
        "--listen-address",
        help="address the gRPC API and the actuator bind (default 127.0.0.1; a mesh listener has its own)",
    )
    add(
        "--actuator-listen-address",
        help="address the actuator binds instead (default: --listen-address), e.g. the pod's for its probes",
    )
    add("--grpc-uds", metavar="PATH", help="also serve the gRPC API on this Unix domain socket")
    add(
        "--grpc-transport",
        choices=("native", "grpcio"),
        help="native (default): HTTP/2 in Rust driven from the event loop; grpcio: grpc.aio",
    )
    add(
        "--resources-path",
        metavar="DIR",
        action="append",
        help="folder of Dapr-format component manifests; given again (or comma-separated), every one, "
        "in order, as daprd (default ./components when it exists, otherwise the embedded in-memory set)",
    )
    add("--config", metavar="FILE", help="YAML file of settings (keys as the flags, with _ or -)")
    # settings.LOG_LEVELS (not imported here: the parser is built before anything heavy is)
    add("--log-level", choices=("debug", "info", "warning", "warn", "error", "fatal"), help="default info")
    add(
        "--shutdown-grace-seconds",
        type=float,
        help="how long SIGTERM lets work in flight finish, deliveries to the app first, then gRPC calls (default 5)",
    )
    add(
        "--max-message-bytes",
        type=int,
        help="largest gRPC message taken or sent, either transport (default 4194304); "
        "a call over it ends RESOURCE_EXHAUSTED",
    )
    add(
        "--grpc-handshake-timeout-seconds",
        type=float,
        help="a gRPC connection that has not sent the HTTP/2 preface and SETTINGS by then is closed (default 10)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return EXIT_BAD_CONFIG
    from layotto_fast import settings as settings_module

    overrides = {
        name: getattr(args, name)
        for name in (
            "app_id",
            "grpc_port",
            "actuator_port",
            "app_port",
            "app_keepalive_seconds",
            "app_ping_spacing_seconds",
            "listen_address",
            "actuator_listen_address",
            "grpc_uds",
            "grpc_transport",
            "resources_path",
            "log_level",
            "shutdown_grace_seconds",
            "max_message_bytes",
            "grpc_handshake_timeout_seconds",
        )
    }
    if overrides["resources_path"] is not None:  # given again: every folder, comma-separated as daprd takes them
        overrides["resources_path"] = ",".join(overrides["resources_path"])
    try:
        settings = settings_module.load(args.config, overrides)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        from layotto_fast import server

        manifests = server.load_manifests(settings)
        if args.command == "check":
            _check(manifests, settings.app_id)
            print(_summary(manifests, settings.app_id))
            return 0
        return server.serve(settings, manifests)
    except StartupError as exc:
        print(f"layotto-fast: bad configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except OSError as exc:
        print(f"layotto-fast: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _summary(manifests: list[ComponentManifest], app_id: str) -> str:
    """``ok: N components``, N those ``serve`` with this app id would load; the manifests
    scoped to other app ids were checked too, and are counted apart."""
    loaded = sum(m.loaded_by(app_id) for m in manifests)
    others = len(manifests) - loaded
    scoped = f" ({others} more scoped to other app ids: checked, not loaded)" if others else ""
    return f"ok: {loaded} components{scoped}"


def _check(manifests: list[ComponentManifest], app_id: str) -> None:
    """Every validation ``serve`` makes before it answers, without starting any backend client.

    The components ``app_id`` loads are built as ``serve`` builds them, then the others, so
    that every manifest's config is checked whatever its scopes; then the secret stores start
    (the local file and environment stores only read a file or the environment) and the loaded
    ones' secret references are read as ``serve`` reads them. A required store that does not
    start is reported too: ``serve`` would run with it DOWN, and readiness DOWN.
    """
    import asyncio

    from layotto_fast.runtime.key_prefixes import KEYED_BLOCKS, key_prefix
    from layotto_fast.runtime.lifecycle import Components, Health

    components = Components(manifests, app_id=app_id, check_out_of_scope=True)
    for manifest in manifests:  # runtime rules on the manifests: serve checks them too
        if manifest.block in KEYED_BLOCKS:
            key_prefix(manifest, app_id)

    async def resolve() -> None:
        try:
            await components.start_secret_stores()
            for slot in components.slots:
                if slot.manifest.block == "secretstores" and slot.required and slot.health != Health.UP:
                    raise StartupError(
                        slot.manifest.source, "spec.metadata", f"the secret store does not start: {slot.reason}"
                    )
        finally:
            await components.close_all()

    asyncio.run(resolve())
