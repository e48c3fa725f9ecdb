"""Typed reads of a manifest's string metadata, failing with the field named."""

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
        raise StartupError(manifest.source, f"spec.metadata.{name}", f"must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise StartupError(manifest.source, f"spec.metadata.{name}", f"must be at least {minimum}, got {value}")
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
    raise StartupError(manifest.source, f"spec.metadata.{name}", f"must be true or false, got {raw!r}")
