"""The keys a state store is given: Layotto's (and Dapr's) ``keyPrefix`` strategy.

A state key is stored as ``<prefix>||<key>``, the prefix chosen by the store manifest's
``keyPrefix`` metadata: ``none`` (the default, as in Layotto: the key as it is),
``appid`` (the sidecar's app id, so that apps sharing a store do not share keys: Dapr's
default), ``name`` (the store's name), or any other text without ``||``, lower-cased as
both runtimes do. Keys stored by Layotto sidecars over the same backend are the same keys,
and by Dapr sidecars with ``keyPrefix: appid``.

The lock block puts the same strategy behind its own text, with ``appid`` its default
(``lock_keys``).
"""

from __future__ import annotations

from layotto_fast.errors import InvalidArgument, StartupError
from layotto_fast.manifest import ComponentManifest

SEPARATOR = "||"
KEY_PREFIX = "keyPrefix"
STATE_DEFAULT = "none"  # Layotto's runtime/state/compatibility.go; Dapr's is "appid"


def key_prefix(manifest: ComponentManifest, app_id: str) -> str:
    """What goes before every key of ``manifest``'s state store ("" for none)."""
    return strategy_prefix(manifest, app_id, STATE_DEFAULT)


def strategy_prefix(manifest: ComponentManifest, app_id: str, default: str) -> str:
    """``<prefix>||`` for the store's ``keyPrefix`` strategy (``default`` when unset), or "".

    StartupError (naming the manifest and ``spec.metadata.keyPrefix``) when a prefix of the
    operator's own contains ``||``.
    """
    strategy = manifest.metadata.get(KEY_PREFIX, "").strip() or default
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
    return f"{chosen}{SEPARATOR}"


def check_key(key: str, field: str) -> None:
    """A key with the prefix separator is refused, whatever the store's strategy, as Layotto
    and Dapr refuse it: it would read as prefixed (twice) under another strategy."""
    if SEPARATOR in key:
        raise InvalidArgument(f"{field} {key!r} contains {SEPARATOR!r}, which separates the store's key prefix")
