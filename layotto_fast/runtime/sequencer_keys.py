"""The key a sequencer store is given for a sequence: Layotto's sequencer ``keyPrefix`` strategy.

The sequencer service hands a store ``sequencer|||<prefix>||<key>``. ``<prefix>||`` comes
from the store manifest's ``keyPrefix`` metadata, read as for locks (``lock_keys``) with the
same default: ``appid`` (the sidecar's app id; nothing when it is empty), ``name`` (the
store's name), ``none`` (nothing), or any other text without ``||``, lower-cased. This is
the key Layotto's runtime hands its sequencer components, so a Redis or etcd that Layotto
sidecars counted in is counted on from where they left it, and the other way round.

A key containing ``||`` is refused whatever the strategy, as Layotto refuses it.
"""

from __future__ import annotations

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.state_keys import strategy_prefix

SEQUENCER_PREFIX = "sequencer|||"
SEQUENCER_DEFAULT = "appid"  # Layotto's runtime/sequencer/sequencer_config.go


def sequencer_key_prefix(manifest: ComponentManifest, app_id: str) -> str:
    """What goes before every key of ``manifest``'s sequencer store."""
    return SEQUENCER_PREFIX + strategy_prefix(manifest, app_id, SEQUENCER_DEFAULT)
