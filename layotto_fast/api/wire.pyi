"""Type stub for the compiled codecs of the hottest rpcs (wire.pyx)."""

from layotto_fast.runtime.state import SetOp, StateEntry

class SayHelloFields:
    service_name: str
    name: str
    data: bytes | None

class GetStateFields:
    store_name: str
    key: str
    consistency: int
    metadata: dict[str, str] | None

class SaveStateFields:
    store_name: str
    states: list[SetOp]  # ttl_seconds None: a TTL travels in metadata
    # None: every item has a key and no metadata. Otherwise each item's (None: no entries).
    metadata: list[dict[str, str] | None] | None

def decode_say_hello(data: bytes) -> SayHelloFields: ...
def encode_say_hello(answer: tuple[str, bytes | None]) -> bytes: ...
def decode_get_state(data: bytes) -> GetStateFields: ...
def decode_save_state(data: bytes) -> SaveStateFields: ...
def encode_empty(answer: object) -> bytes: ...
def encode_get_state(entry: StateEntry | None) -> bytes: ...
