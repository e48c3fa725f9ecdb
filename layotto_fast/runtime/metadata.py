"""Typed reads of a manifest's string metadata, failing with the field named.

A name is looked up whatever its case (the manifest's ``Items``), and a message names the
item as the manifest spells it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from layotto_fast.errors import StartupError
from layotto_fast.manifest import ComponentManifest


def text(manifest: ComponentManifest, name: str, default: str) -> str:
    return manifest.metadata.get(name, default)


def as_integer(raw: str) -> int:
    """``raw`` as an integer, ValueError if it is none: an optional sign and ASCII digits, as
    Go's strconv reads it (Python's int() also takes ' 3 ', '1_000' and other scripts' digits)."""
    digits = raw[1:] if raw[:1] in ("+", "-") else raw
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(raw)
    return int(raw)


def integer(manifest: ComponentManifest, name: str, default: int, minimum: int | None = None) -> int:
    raw = manifest.metadata.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = as_integer(raw)
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


def turned_on(manifest: ComponentManifest, name: str) -> bool:
    """Whether item ``name`` is given a value that asks for something: not empty, false, 0,
    no or off (a manifest copied from Dapr's docs writes ``memoryStorage: "false"``)."""
    return manifest.metadata.get(name, "").strip().lower() not in ("", "false", "0", "no", "off")


def required(manifest: ComponentManifest, name: str) -> str:
    raw = manifest.metadata.get(name, "")
    if not raw:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"is required by {manifest.type}")
    return raw


# Go's duration units in nanoseconds; a microsecond also as the micro sign and the Greek mu.
_UNIT_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# One number and its unit; "ms" tried before "m", and "[0-9]" not "\d", which takes any
# script's digits.
_TERM = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
# More digits than a duration in int64 nanoseconds can have (19): int() of a very long
# string raises, and digits of a fraction past these are below a nanosecond.
_DIGITS = 20
DURATION_EXAMPLES = "a duration such as '500ms', '5s' or '1m30s'"  # what an error about one says


def duration(manifest: ComponentManifest, name: str, default: float, plain_unit: float = 0.001) -> float:
    """Seconds from a Go duration (``500ms``, ``5s``, ``1m30s``: ``parse_duration``); plain
    digits count ``plain_unit`` seconds each (milliseconds unless the component's own
    convention differs). A negative one is refused: every one of these is a length of time."""
    raw = manifest.metadata.get(name, "").strip()
    if not raw:
        return default
    seconds = parse_duration(raw, plain_unit)
    if seconds is None:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"must be {DURATION_EXAMPLES}, got {raw!r}")
    if seconds < 0:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"must not be negative, got {raw!r}")
    return seconds


def parse_duration(raw: str, plain_unit: float = 0.001) -> float | None:
    """Seconds in ``raw`` as Go's time.ParseDuration reads it (Dapr and Layotto read these
    fields with it): an optional sign, then numbers each with its unit (``ns``, ``us`` or
    ``µs``, ``ms``, ``s``, ``m``, ``h``), as in ``1m30s``, ``1.5h``, ``-250us``; ``0`` alone;
    or, not Go's, plain digits of ``plain_unit`` seconds each. Cut to whole nanoseconds, as
    Go's is. None when it is none of these or is past Go's range (about 292 years); a
    negative one is returned negative, for the caller to refuse."""
    if raw.isascii() and raw.isdigit():
        return int(raw) * plain_unit if len(raw.lstrip("0")) <= _DIGITS else None
    negative = raw.startswith("-")
    rest = raw[1:] if raw.startswith(("-", "+")) else raw
    if rest == "0":
        return 0.0
    if not rest:
        return None
    nanoseconds = 0
    position = 0
    while position < len(rest):
        term = _TERM.match(rest, position)
        if term is None:
            return None
        whole, fraction, unit = term.groups()
        if not whole and not fraction:  # ".s": a unit needs a number
            return None
        whole = whole.lstrip("0")
        if len(whole) > _DIGITS:
            return None
        scale = _UNIT_NANOSECONDS[unit]
        nanoseconds += int(whole or "0") * scale
        if fraction:
            digits = fraction[:_DIGITS]
            nanoseconds += int(digits) * scale // 10 ** len(digits)
        position = term.end()
    if nanoseconds > (2**63 if negative else 2**63 - 1):  # Go's int64 of nanoseconds
        return None
    seconds = nanoseconds / 1e9
    return -seconds if negative and nanoseconds else seconds


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
    if "," in raw:  # Dapr's list of seed nodes: one is all a client needs to find the rest
        raise StartupError(
            manifest.source,
            manifest.metadata_field(name),
            f"must be one host:port (a cluster's other nodes are found from it), got {raw!r}",
        )
    host, sep, port_text = raw.rpartition(":")
    if not sep or "]" in port_text:
        host, port_text = raw, str(default_port)
    host = host.strip("[]")
    if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise StartupError(manifest.source, manifest.metadata_field(name), f"must be host:port, got {raw!r}")
    return host, int(port_text)


def without_credentials(value: str) -> str:
    """The address list with any ``user:password@`` of its URLs left out, for messages and
    readiness reasons (served to anyone who can reach the actuator)."""
    parts = []
    for part in value.split(","):
        part = part.strip()
        if "@" in part:
            split = urlsplit(part if "//" in part else "//" + part)
            host = split.netloc.rpartition("@")[2]
            part = f"{split.scheme}://{host}" if split.scheme else host
        parts.append(part)
    return ",".join(parts)
