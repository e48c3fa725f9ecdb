"""The key a lock store is given for a resource id: Layotto's lock ``keyPrefix`` strategy.

The lock service hands a store ``lock|||<prefix>||<resource_id>``. ``<prefix>||`` comes
from the store manifest's ``keyPrefix`` metadata, read as for state (``state_keys``) with
Layotto's lock default: ``appid`` (the default: the sidecar's app id; nothing when it is
empty), ``name`` (the store's name), ``none`` (nothing), or any other text without
``||``, lower-cased. This is
the resource id Layotto's runtime hands its lock components, so a lock taken through a
Layotto sidecar and one taken here over the same backend are the same lock. (Dapr's
runtime puts ``lock||`` first, not ``lock|||``: its locks are other keys.)

A resource id containing ``||`` is refused whatever the strategy, as Layotto and Dapr
refuse it.
"""

from __future__ import annotations

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.state_keys import strategy_prefix

LOCK_PREFIX = "lock|||"
LOCK_DEFAULT = "appid"  # Layotto's runtime/lock/lock_config.go


def lock_key_prefix(manifest: ComponentManifest, app_id: str) -> str:
    """What goes before every resource id of ``manifest``'s lock store."""
    return LOCK_PREFIX + strategy_prefix(manifest, app_id, LOCK_DEFAULT)
