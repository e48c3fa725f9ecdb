"""Type stub for the state block's per-item rules (state_rules.pyx).

``field[index]suffix`` names the item in errors; an ``index`` of -1 names its fields bare.
``prefix``: the store's key prefix (``key_prefixes.key_prefix``), put before the item's key.
"""

from collections.abc import Mapping

from layotto_fast.runtime.state import DeleteOp, Feature, SetOp, StateItem

TTL_KEY: str
MAX_TTL_SECONDS: int

def set_op_for(
    item: StateItem,
    features: frozenset[Feature],
    store_name: str,
    field: str,
    index: int,
    suffix: str = "",
    request_metadata: Mapping[str, str] | None = None,
    prefix: str = "",
) -> SetOp: ...
def delete_op_for(
    item: StateItem,
    features: frozenset[Feature],
    store_name: str,
    field: str,
    index: int,
    suffix: str = "",
    prefix: str = "",
) -> DeleteOp: ...
def ttl_from_metadata(metadata: Mapping[str, str], field: str) -> int | None: ...
