"""The key a store of a keyed block is given: Layotto's ``keyPrefix`` strategy, per block.

A store's manifest names its strategy in ``keyPrefix``: ``appid`` (the sidecar's app id;
nothing when it is empty), ``name`` (the store's name), ``none`` (nothing), or any other
text without ``||``, lower-cased as Layotto and Dapr do. The key a store is given is the
block's own text, then ``<prefix>||`` for the strategy, then the key the app sent, as
Layotto's runtime hands them to its components:

- state: ``<prefix>||<key>``, by default ``none`` (the key as it is; Dapr's default is
  ``appid``: with ``keyPrefix: appid`` the keys are Dapr's too);
- lock: ``lock|||<prefix>||<resource_id>``, by default ``appid`` (Dapr's runtime puts
  ``lock||`` first: its locks are other keys);
- sequencer: ``sequencer|||<prefix>||<key>``, by default ``appid``.

So keys written by Layotto sidecars over the same backend are the same keys. A key with
``||`` is refused whatever the strategy, as Layotto refuses it; a custom prefix with
``||`` stops start-up, naming the manifest and field.
"""

from __future__ import annotations

from layotto_fast.errors import InvalidArgument, StartupError
from layotto_fast.manifest import ComponentManifest

SEPARATOR = "||"
KEY_PREFIX = "keyPrefix"
# block -> (its own text before the strategy's prefix, the default strategy), from Layotto's
# runtime/state/compatibility.go, runtime/lock/lock_config.go, runtime/sequencer/sequencer_config.go
_LAYOUTS = {"state": ("", "none"), "lock": ("lock|||", "appid"), "sequencer": ("sequencer|||", "appid")}
KEYED_BLOCKS = frozenset(_LAYOUTS)


def key_prefix(manifest: ComponentManifest, app_id: str) -> str:
    """What goes before every key of ``manifest``'s store (its block is one of KEYED_BLOCKS).

    StartupError (naming the manifest and ``spec.metadata.keyPrefix``) when a prefix of the
    operator's own contains ``||``.
    """
    text, default = _LAYOUTS[manifest.block]
    if KEY_PREFIX in manifest.secret_refs:
        # The services choose the prefix before any secret store runs: it would be ignored.
        ref = manifest.secret_refs[KEY_PREFIX]
        raise StartupError(manifest.source, ref.field, "keyPrefix cannot come from a secret: give it as a value")
    return text + _strategy_prefix(manifest, app_id, default)


def _strategy_prefix(manifest: ComponentManifest, app_id: str, default: str) -> str:
    """``<prefix>||`` for the store's ``keyPrefix`` strategy (``default`` when unset), or ""."""
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
            manifest.metadata_field(KEY_PREFIX),
            f"{strategy!r} contains {SEPARATOR!r}: give appid, name, none or a prefix without it",
        )
    return f"{chosen}{SEPARATOR}"


def check_key(key: str, field: str) -> None:
    """A key with the prefix separator is refused, whatever the store's strategy, as Layotto
    and Dapr refuse it: it would read as prefixed (twice) under another strategy."""
    if SEPARATOR in key:
        raise InvalidArgument(f"{field} {key!r} contains {SEPARATOR!r}, which separates the store's key prefix")
