"""The state service: every rule of the state block, whatever front calls it.

Store lookup and health gating, keys required and their prefix (``key_prefixes``),
concurrency and consistency options, ``ttlInSeconds`` and features are decided here (per item in ``state_rules.pyx``); a
front only translates its wire format into these calls, and a store only applies the
``SetOp``/``DeleteOp`` records it is given. A store's ``KeyConflict`` names the key as
stored; the service says it again about the key the app sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence

from layotto_fast.errors import InvalidArgument, Unimplemented
from layotto_fast.runtime.key_prefixes import SEPARATOR, check_key, key_prefix
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.state import (
    BulkStateEntry,
    Consistency,
    DeleteOp,
    Feature,
    KeyConflict,
    KeyUnreadable,
    SetOp,
    StateEntry,
    StateItem,
    StateStore,
    TransactionOperation,
)
from layotto_fast.runtime.state_rules import delete_op_for as _delete_op
from layotto_fast.runtime.state_rules import set_op_for as _set_op

log = logging.getLogger("layotto_fast.state")

STRONG = Consistency.STRONG


class StateService:
    def __init__(self, components: Components, app_id: str) -> None:
        self._components = components
        # Only the stores that are UP, kept current by the lifecycle: the hot path is one dict lookup.
        self._ready: dict[str, StateStore] = components.ready("state")
        # Each store's key prefix ("": none); a bad keyPrefix stops start-up, naming its file.
        self._prefixes = {name: key_prefix(m, app_id) for name, m in components.manifests("state").items()}

    def store(self, name: str, store_field: str = "store_name") -> StateStore:
        store = self._ready.get(name)
        if store is None:
            found: StateStore = self._components.lookup("state", name, store_field)  # raises with the reason
            return found
        return store

    # get and save check the request now and hand back the store's own awaitable: one
    # coroutine less to create and resume on the two most called rpcs.
    def get(
        self, store_name: str, key: str, consistency: int = 0, metadata: Mapping[str, str] | None = None
    ) -> Awaitable[StateEntry | None]:
        store = self._ready.get(store_name)  # store() inlined: the most called rpc
        if store is None:
            store = self.store(store_name)
        if not key:
            raise InvalidArgument("key is empty: a state key is required")
        if SEPARATOR in key:
            check_key(key, "key")  # raises, whatever the prefix (as Layotto)
        prefix = self._prefixes.get(store_name)
        if prefix:
            key = prefix + key
        return store.get(key, consistency == STRONG, metadata)

    async def bulk_get(
        self, store_name: str, keys: Sequence[str], metadata: Mapping[str, str] | None = None
    ) -> list[BulkStateEntry]:
        store = self.store(store_name)
        for index, key in enumerate(keys):
            if not key:
                raise InvalidArgument(f"keys[{index}] is empty: a state key is required")
        if not keys:
            return []
        for index, key in enumerate(keys):
            check_key(key, f"keys[{index}]")
        prefix = self._prefixes.get(store_name)
        entries = await store.bulk_get([prefix + key for key in keys] if prefix else list(keys), metadata)
        return [
            BulkStateEntry(key, None, entry.reason) if isinstance(entry, KeyUnreadable) else BulkStateEntry(key, entry)
            for key, entry in zip(keys, entries, strict=True)
        ]

    def save(self, store_name: str, items: Sequence[StateItem]) -> Awaitable[None]:
        store = self._ready.get(store_name)
        if store is None:
            store = self.store(store_name)
        features, prefix = store.features, self._prefixes.get(store_name, "")
        if len(items) == 1:  # the common request, without a comprehension's frame
            # positional: a keyword costs a dict on every call into the compiled rules
            op = _set_op(items[0], features, store_name, "states", 0, "", None, prefix)
            if prefix and (op.etag is not None or op.first_write):  # only such a write can conflict
                return _naming_app_keys(store.set([op]), prefix)
            return store.set([op])
        write = store.set(
            [_set_op(item, features, store_name, "states", i, "", None, prefix) for i, item in enumerate(items)]
        )
        return _naming_app_keys(write, prefix) if prefix else write

    async def delete(self, store_name: str, items: Sequence[StateItem]) -> None:
        store = self.store(store_name)
        features, prefix = store.features, self._prefixes.get(store_name, "")
        await _naming_app_keys(
            store.delete(
                [_delete_op(item, features, store_name, "states", i, prefix=prefix) for i, item in enumerate(items)]
            ),
            prefix,
        )

    async def delete_one(self, store_name: str, item: StateItem) -> None:
        """Delete the one item of a request whose own fields are the item's (DeleteState):
        an error names ``key`` or ``etag``, not a place in a list."""
        store = self.store(store_name)
        prefix = self._prefixes.get(store_name, "")
        await _naming_app_keys(
            store.delete([_delete_op(item, store.features, store_name, "", -1, prefix=prefix)]), prefix
        )

    async def transact(
        self,
        store_name: str,
        operations: Sequence[TransactionOperation],
        metadata: Mapping[str, str] | None = None,
        store_field: str = "storeName",
    ) -> None:
        """Apply ``operations`` all or none."""
        store = self.store(store_name, store_field)
        features, prefix = store.features, self._prefixes.get(store_name, "")
        if Feature.TRANSACTIONAL not in features:
            raise Unimplemented(f"state store {store_name!r} does not support transactions (feature TRANSACTIONAL)")
        ops: list[SetOp | DeleteOp] = []
        for index, (kind, item) in enumerate(operations):
            if item is None:  # skipped, as Layotto skips it ("tolerant npe"), not failing the rest
                log.warning("state store %r: transaction operations[%d] has no request: skipped", store_name, index)
                continue
            lowered = kind.lower()
            if lowered == "upsert":
                ops.append(_set_op(item, features, store_name, "operations", index, ".request", metadata, prefix))
            elif lowered == "delete":
                ops.append(_delete_op(item, features, store_name, "operations", index, ".request", prefix))
            else:  # UNIMPLEMENTED, as Layotto and Dapr answer an operation type they do not support
                raise Unimplemented(
                    f"operations[{index}].operationType is {kind!r}: not supported; it must be 'upsert' or 'delete'"
                )
        await _naming_app_keys(store.transact(ops, metadata), prefix)


async def _naming_app_keys(write: Awaitable[None], prefix: str) -> None:
    """Await ``write``; a conflict about a key stored behind ``prefix`` names the key the app sent."""
    try:
        await write
    except KeyConflict as exc:
        if not prefix or not exc.key.startswith(prefix):
            raise
        raise exc.naming(exc.key[len(prefix) :]) from None
