"""The keys a state store is given: Dapr's and Layotto's ``keyPrefix`` strategy.

A state key is stored as ``<prefix>||<key>``, the prefix chosen by the store manifest's
``keyPrefix`` metadata: ``appid`` (the default: the sidecar's app id, so that apps sharing
a store do not share keys), ``name`` (the store's name, to share keys between apps),
``none`` (the key as it is), or any other text without ``||``. Keys stored by Dapr or
Layotto sidecars over the same backend are the same keys.

The lock block puts the same strategy behind its own text (``lock_keys``).
"""

from __future__ import annotations

from layotto_fast.errors import InvalidArgument, StartupError
from layotto_fast.manifest import ComponentManifest

SEPARATOR = "||"
KEY_PREFIX = "keyPrefix"


def key_prefix(manifest: ComponentManifest, app_id: str, *, fold_custom: bool = False) -> str:
    """What goes before every key of ``manifest``'s store ("" for none).

    ``fold_custom``: a prefix of the operator's own is lower-cased first (as Layotto's and
    Dapr's lock keys have it); otherwise it is kept as written.
    """
    strategy = manifest.metadata.get(KEY_PREFIX, "").strip() or "appid"
    chosen = strategy.lower()
    if chosen == "appid":
        return f"{app_id}{SEPARATOR}" if app_id else ""
    if chosen == "name":
        return f"{manifest.name}{SEPARATOR}"
    if chosen == "none":
        return ""
    if SEPARATOR in strategy:
        raise StartupError(
            manifest.source,
            f"spec.metadata.{KEY_PREFIX}",
            f"{strategy!r} contains {SEPARATOR!r}: give appid, name, none or a prefix without it",
        )
    return f"{chosen if fold_custom else strategy}{SEPARATOR}"


def check_key(key: str, field: str) -> None:
    """A key that would read as prefixed twice is refused, as Dapr refuses it."""
    if SEPARATOR in key:
        raise InvalidArgument(f"{field} {key!r} contains {SEPARATOR!r}, which separates the store's key prefix")
