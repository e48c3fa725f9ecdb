"""Implementations of the sequencer building block, one module each, and what they all
read the same way: ``biggerThan``.

Every implementation counts under the key the sequencer service gives it
(``sequencer|||<prefix>||<key>``: ``runtime/key_prefixes.py``), and raises
``SequenceExhausted`` (``runtime/sequencer.py``) about that key once MAX_ID is handed out.
"""

from __future__ import annotations

from dataclasses import dataclass

from layotto_fast.errors import StartupError
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.sequencer import MAX_ID


@dataclass(frozen=True)
class SequencerConfig:
    """``biggerThan`` (default 0): every id is bigger, the first of a key is ``biggerThan + 1``."""

    bigger_than: int = 0

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> SequencerConfig:
        value = metadata.integer(manifest, "biggerThan", 0, minimum=0)
        # MAX_ID itself would leave a sequence that is exhausted before its first id.
        if value >= MAX_ID:
            raise StartupError(
                manifest.source, manifest.metadata_field("biggerThan"), f"must be at most {MAX_ID - 1}, got {value}"
            )
        return cls(bigger_than=value)
