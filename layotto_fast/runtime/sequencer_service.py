"""The sequencer service: validation, store lookup and the stored key for GetNextId.

A store is handed ``sequencer|||<prefix>||<key>``, the prefix chosen by the store's
``keyPrefix`` (``key_prefixes``), never the key as the app sent it: sequences counted
through Layotto sidecars over the same backend are the same sequences. A store's
SequenceExhausted names the key it was given; the service says it again about the app's.
"""

from __future__ import annotations

from layotto_fast.errors import require
from layotto_fast.runtime.key_prefixes import check_key, key_prefix
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.sequencer import SequenceExhausted, Sequencer


class SequencerService:
    def __init__(self, components: Components, app_id: str) -> None:
        self._components = components
        # Each store's prefix of the keys it is given; a bad keyPrefix stops start-up, naming its file.
        self._prefixes = {name: key_prefix(m, app_id) for name, m in components.manifests("sequencer").items()}

    async def next_id(self, store_name: str, key: str) -> int:
        sequencer: Sequencer = self._components.lookup("sequencer", store_name, "store_name")
        require(key, "key")
        check_key(key, "key")
        try:
            return await sequencer.next_id(self._prefixes[store_name] + key)
        except SequenceExhausted as exc:
            raise exc.naming(key) from None
