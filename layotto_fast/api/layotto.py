"""Handlers of Layotto's ``spec.proto.runtime.v1.Runtime`` service.

A handler takes a request message and returns a response message (or an async
iterator of them for streams) and raises domain errors; the transport owns status
codes. SayHello, GetState and SaveState take and give the plain types of their ``codecs``.
Handlers translate only: the behaviour lives in the runtime and components.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import ClassVar

from google.protobuf import empty_pb2

from layotto_fast._proto import runtime_pb2 as pb
from layotto_fast.api.codecs import Decode, Encode
from layotto_fast.api.wire import (
    GetStateFields,
    SaveStateFields,
    SayHelloFields,
    decode_get_state,
    decode_save_state,
    decode_say_hello,
    encode_empty,
    encode_get_state,
    encode_say_hello,
)
from layotto_fast.errors import InvalidArgument, Unavailable, require
from layotto_fast.runtime.configuration import ConfigItem, ConfigQuery, ConfigurationStore
from layotto_fast.runtime.hello import HelloService
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.lock import LockStore
from layotto_fast.runtime.secrets import SecretStore
from layotto_fast.runtime.sequencer import Sequencer
from layotto_fast.runtime.state import DeleteOp, SetOp, StateEntry, StateStore, ttl_from_metadata

log = logging.getLogger(__name__)

EMPTY = empty_pb2.Empty()
FIRST_WRITE = pb.StateOptions.CONCURRENCY_FIRST_WRITE
SUBSCRIBER_QUEUE_LIMIT = 10_000


class LayottoRuntime:
    """The rpcs of ``spec.proto.runtime.v1.Runtime``; rpcs not defined here are UNIMPLEMENTED."""

    service_name = "spec.proto.runtime.v1.Runtime"
    # The rpcs most calls go through skip protobuf's message classes (wire explains why).
    codecs: ClassVar[dict[str, tuple[Decode | None, Encode | None]]] = {
        "GetState": (decode_get_state, encode_get_state),
        "SaveState": (decode_save_state, encode_empty),
        "SayHello": (decode_say_hello, encode_say_hello),
    }

    def __init__(self, components: Components, app_id: str) -> None:
        self._components = components
        self._app_id = app_id
        # Resolved once: the hot path is a dict lookup, not a call into the lifecycle.
        self._states: dict[str, StateStore] = components.of("state")
        self.active_subscriptions = 0

    # -- hello -------------------------------------------------------------
    async def SayHello(self, request: SayHelloFields) -> tuple[str, bytes | None]:
        """The greeting, and the request's ``data`` echoed back (see codecs)."""
        service: HelloService = self._components.lookup("hello", request.service_name, "service_name")
        return service.greet(request.name), request.data

    # -- state -------------------------------------------------------------
    def _state(self, name: str, field: str = "store_name") -> StateStore:
        store = self._states.get(name)
        if store is None:
            fallback: StateStore = self._components.lookup("state", name, field)  # raises with the reason
            return fallback
        return store

    async def GetState(self, request: GetStateFields) -> StateEntry | None:
        # _state() inlined: this is the most called rpc. The entry is encoded by
        # wire.encode_get_state (see codecs).
        key = request.key
        store = self._states.get(request.store_name)
        if store is None:
            store = self._state(request.store_name)
        if not key:
            raise InvalidArgument("key is empty: a state key is required")
        return await store.get(key)

    async def GetBulkState(self, request: pb.GetBulkStateRequest) -> pb.GetBulkStateResponse:
        store = self._state(request.store_name)
        keys = list(request.keys)
        for index, key in enumerate(keys):
            require(key, f"keys[{index}]")
        entries = await store.bulk_get(keys)
        items = [
            pb.BulkStateItem(key=key) if e is None else pb.BulkStateItem(key=key, data=e.value, etag=e.etag)
            for key, e in zip(keys, entries, strict=True)
        ]
        return pb.GetBulkStateResponse(items=items)

    async def SaveState(self, request: SaveStateFields) -> None:
        store = self._states.get(request.store_name)  # _state() inlined, as in GetState
        if store is None:
            store = self._state(request.store_name)
        ops = request.states  # already SetOps: the common request goes as it is
        if request.metadata is not None:  # a key missing or a TTL to read
            ops = [
                _checked_set_op(op, metadata, "states", index)
                for index, (op, metadata) in enumerate(zip(ops, request.metadata, strict=True))
            ]
        await store.set(ops)

    async def DeleteState(self, request: pb.DeleteStateRequest) -> empty_pb2.Empty:
        store = self._state(request.store_name)
        require(request.key, "key")
        op = DeleteOp(
            request.key,
            request.etag.value if request.HasField("etag") else None,
            request.options.concurrency == FIRST_WRITE,
        )
        await store.delete([op])
        return EMPTY

    async def DeleteBulkState(self, request: pb.DeleteBulkStateRequest) -> empty_pb2.Empty:
        store = self._state(request.store_name)
        await store.delete([_delete_op(item, "states", i) for i, item in enumerate(request.states)])
        return EMPTY

    async def ExecuteStateTransaction(self, request: pb.ExecuteStateTransactionRequest) -> empty_pb2.Empty:
        store = self._state(request.storeName, "storeName")
        ops: list[SetOp | DeleteOp] = []
        for index, operation in enumerate(request.operations):
            kind = operation.operationType.lower()
            if kind == "upsert":
                ops.append(_set_op(operation.request, "operations", index, ".request"))
            elif kind == "delete":
                ops.append(_delete_op(operation.request, "operations", index, ".request"))
            else:
                raise InvalidArgument(
                    f"operations[{index}].operationType is {operation.operationType!r}: must be 'upsert' or 'delete'"
                )
        await store.transact(ops)
        return EMPTY

    # -- locks ---------------------------------------------------------------
    def _lock(self, request: pb.TryLockRequest | pb.UnlockRequest | pb.LockKeepAliveRequest) -> LockStore:
        store: LockStore = self._components.lookup("lock", request.store_name, "store_name")
        require(request.resource_id, "resource_id")
        require(request.lock_owner, "lock_owner")
        return store

    async def TryLock(self, request: pb.TryLockRequest) -> pb.TryLockResponse:
        store = self._lock(request)
        _positive_expire(request.expire)
        return pb.TryLockResponse(success=await store.try_lock(request.resource_id, request.lock_owner, request.expire))

    async def Unlock(self, request: pb.UnlockRequest) -> pb.UnlockResponse:
        store = self._lock(request)
        status = await store.unlock(request.resource_id, request.lock_owner)
        return pb.UnlockResponse(status=int(status))  # type: ignore[arg-type]

    async def LockKeepAlive(self, request: pb.LockKeepAliveRequest) -> pb.LockKeepAliveResponse:
        store = self._lock(request)
        _positive_expire(request.expire)
        status = await store.keep_alive(request.resource_id, request.lock_owner, request.expire)
        return pb.LockKeepAliveResponse(status=int(status))  # type: ignore[arg-type]

    # -- sequencer -----------------------------------------------------------
    async def GetNextId(self, request: pb.GetNextIdRequest) -> pb.GetNextIdResponse:
        sequencer: Sequencer = self._components.lookup("sequencer", request.store_name, "store_name")
        require(request.key, "key")
        return pb.GetNextIdResponse(next_id=await sequencer.next_id(request.key))

    # -- secrets -------------------------------------------------------------
    async def GetSecret(self, request: pb.GetSecretRequest) -> pb.GetSecretResponse:
        store: SecretStore = self._components.lookup("secretstores", request.store_name, "store_name")
        require(request.key, "key")
        return pb.GetSecretResponse(data=await store.get(request.key))

    async def GetBulkSecret(self, request: pb.GetBulkSecretRequest) -> pb.GetBulkSecretResponse:
        store: SecretStore = self._components.lookup("secretstores", request.store_name, "store_name")
        secrets = await store.bulk_get()
        return pb.GetBulkSecretResponse(data={k: pb.SecretResponse(secrets=v) for k, v in secrets.items()})

    # -- configuration -------------------------------------------------------
    def _configuration(self, name: str) -> ConfigurationStore:
        store: ConfigurationStore = self._components.lookup("configuration", name, "store_name")
        return store

    async def GetConfiguration(self, request: pb.GetConfigurationRequest) -> pb.GetConfigurationResponse:
        store = self._configuration(request.store_name)
        items = await store.get(self._query(request))
        return pb.GetConfigurationResponse(items=[_item_message(item) for item in items])

    async def SaveConfiguration(self, request: pb.SaveConfigurationRequest) -> empty_pb2.Empty:
        store = self._configuration(request.store_name)
        app_id = request.app_id or self._app_id
        items = []
        for index, item in enumerate(request.items):
            require(item.key, f"items[{index}].key")
            items.append(
                ConfigItem(
                    app_id=app_id,
                    key=item.key,
                    content=item.content,
                    group=item.group,
                    label=item.label,
                    tags=dict(item.tags),
                    metadata=dict(item.metadata) or dict(request.metadata),
                )
            )
        await store.save(items)
        return EMPTY

    async def DeleteConfiguration(self, request: pb.DeleteConfigurationRequest) -> empty_pb2.Empty:
        store = self._configuration(request.store_name)
        if not request.keys:
            raise InvalidArgument("keys is empty: name the configuration keys to delete")
        await store.delete(self._query(request))
        return EMPTY

    def _query(
        self,
        request: pb.GetConfigurationRequest | pb.DeleteConfigurationRequest | pb.SubscribeConfigurationRequest,
    ) -> ConfigQuery:
        for index, key in enumerate(request.keys):
            require(key, f"keys[{index}]")
        return ConfigQuery(
            app_id=request.app_id or self._app_id,
            keys=tuple(request.keys),
            group=request.group,
            label=request.label,
        )

    async def SubscribeConfiguration(
        self, requests: AsyncIterator[pb.SubscribeConfigurationRequest]
    ) -> AsyncIterator[pb.SubscribeConfigurationResponse]:
        """Each request adds a watch; every later matching change is pushed.

        The stream ends when the client half-closes after its last request and has
        nothing left to watch, or goes away; every watch is removed either way.
        """
        # Unbounded on purpose, with the limit checked by hand, so that the overflow
        # error itself can always be queued behind the pushes already waiting.
        pushes: asyncio.Queue[pb.SubscribeConfigurationResponse | BaseException | None] = asyncio.Queue()
        cancels: list[Callable[[], None]] = []

        def listener_for(store_name: str, app_id: str) -> Callable[[list[ConfigItem]], None]:
            def push(items: list[ConfigItem]) -> None:
                message = pb.SubscribeConfigurationResponse(
                    store_name=store_name, app_id=app_id, items=[_item_message(i) for i in items]
                )
                if not cancels:
                    return  # already overflowed
                if pushes.qsize() >= SUBSCRIBER_QUEUE_LIMIT:
                    for cancel in cancels:
                        cancel()
                    cancels.clear()
                    pushes.put_nowait(Unavailable("subscriber is too slow: its push queue is full"))
                    return
                pushes.put_nowait(message)

            return push

        async def read_requests() -> None:
            try:
                async for request in requests:
                    store = self._configuration(request.store_name)
                    query = self._query(request)
                    if not query.keys:
                        raise InvalidArgument("keys is empty: name the configuration keys to subscribe to")
                    cancels.append(store.watch(query, listener_for(request.store_name, query.app_id)))
            except BaseException as exc:  # surfaces on the response stream
                await pushes.put(exc)
                return
            if not cancels:
                await pushes.put(None)

        reader = asyncio.get_running_loop().create_task(read_requests())
        self.active_subscriptions += 1
        try:
            while True:
                item = await pushes.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        return
                    raise item
                yield item
        finally:
            self.active_subscriptions -= 1
            reader.cancel()
            for cancel in cancels:
                cancel()


def _positive_expire(expire: int) -> None:
    if expire <= 0:
        raise InvalidArgument(f"expire is {expire}: must be a positive number of seconds")


# The item's place in the request (``states[2]``) is formatted only for an error
# message: transactions run these once per operation.
def _checked_set_op(op: SetOp, metadata: Mapping[str, str] | None, field: str, index: int, suffix: str = "") -> SetOp:
    if not op.key:
        raise InvalidArgument(f"{field}[{index}]{suffix}.key is empty: a state key is required")
    if not metadata:
        return op
    return op._replace(ttl_seconds=ttl_from_metadata(metadata, f"{field}[{index}]{suffix}.metadata"))


def _set_op(item: pb.StateItem, field: str, index: int, suffix: str = "") -> SetOp:
    etag = item.etag.value if item.HasField("etag") else None
    op = SetOp(item.key, item.value, etag, item.options.concurrency == FIRST_WRITE)
    return _checked_set_op(op, item.metadata, field, index, suffix)


def _delete_op(item: pb.StateItem, field: str, index: int, suffix: str = "") -> DeleteOp:
    key = item.key
    if not key:
        raise InvalidArgument(f"{field}[{index}]{suffix}.key is empty: a state key is required")
    return DeleteOp(
        key,
        item.etag.value if item.HasField("etag") else None,
        item.options.concurrency == FIRST_WRITE,
    )


def _item_message(item: ConfigItem) -> pb.ConfigurationItem:
    return pb.ConfigurationItem(
        key=item.key,
        content=item.content,
        group=item.group,
        label=item.label,
        tags=item.tags,
        metadata=item.metadata,
    )
