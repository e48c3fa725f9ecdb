"""Typed reads of a manifest's string metadata, failing with the field named.

A name is looked up whatever its case (the manifest's ``Items``), and a message names the
item as the manifest spells it.
"""

from __future__ import annotations

from layotto_fast.errors import StartupError
from layotto_fast.manifest import ComponentManifest


def text(manifest: ComponentManifest, name: str, default: str) -> str:
    return manifest.metadata.get(name, default)


def integer(manifest: ComponentManifest, name: str, default: int, minimum: int | None = None) -> int:
    raw = manifest.metadata.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"must be at least {minimum}, got {value}")
    return value


def boolean(manifest: ComponentManifest, name: str, default: bool) -> bool:
    raw = manifest.metadata.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise StartupError(manifest.source, manifest.metadata_field(name), f"must be true or false, got {raw!r}")


def required(manifest: ComponentManifest, name: str) -> str:
    raw = manifest.metadata.get(name, "")
    if not raw:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"is required by {manifest.type}")
    return raw


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_EXAMPLES = "a duration such as '500ms', '5s' or '1m'"  # what an error about one says


def duration(manifest: ComponentManifest, name: str, default: float, plain_unit: float = 0.001) -> float:
    """Seconds from a Go-style duration (``500ms``, ``5s``, ``1m``); plain digits count
    ``plain_unit`` seconds each (milliseconds unless the component's own convention differs)."""
    raw = manifest.metadata.get(name, "").strip()
    if not raw:
        return default
    seconds = parse_duration(raw, plain_unit)
    if seconds is None:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"must be {DURATION_EXAMPLES}, got {raw!r}")
    return seconds


def parse_duration(raw: str, plain_unit: float = 0.001) -> float | None:
    """Seconds in ``raw`` (``500ms``, ``1.5s``, ``1m``, ``1h``, or digits of ``plain_unit``
    seconds each); None when it is not a duration, or is negative."""
    if raw.isascii() and raw.isdigit():
        return int(raw) * plain_unit
    for unit in sorted(_UNITS, key=len, reverse=True):
        number = raw.removesuffix(unit)
        if number != raw:
            try:
                value = float(number) * _UNITS[unit]
            except ValueError:
                return None
            return value if value >= 0 else None
    return None


def is_host_port(value: object, *, port_zero: bool = False) -> bool:
    """``host:port`` with a port a connection can be made to (or, with ``port_zero``, a
    listener's "any port"); an IPv6 host in brackets."""
    if not isinstance(value, str):
        return False
    host, sep, port = value.rpartition(":")
    # An unbracketed IPv6 host leaves no way to tell where the port starts.
    bracketed_or_plain = (host.startswith("[") and host.endswith("]")) or ":" not in host
    # isascii: str.isdigit also takes digits such as "²" that int() refuses.
    port_ok = port.isascii() and port.isdigit() and (0 if port_zero else 1) <= int(port) <= 65535
    return bool(sep and host and bracketed_or_plain and port_ok)


def host_port(manifest: ComponentManifest, name: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (or ``host``, with ``default_port``); an IPv6 host goes in brackets."""
    raw = required(manifest, name).strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep or "]" in port_text:
        host, port_text = raw, str(default_port)
    host = host.strip("[]")
    if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"must be host:port, got {raw!r}")
    return host, int(port_text)
