"""Type stub for the compiled state codecs (state_wire.pyx)."""

from layotto_fast.runtime.state import StateEntry

class GetStateFields:
    store_name: str
    key: str
    consistency: int
    metadata: dict[str, str] | None

class StateItemFields:
    key: str
    value: bytes
    etag: str | None
    first_write: bool
    metadata: dict[str, str] | None

class SaveStateFields:
    store_name: str
    states: list[StateItemFields]

def decode_get_state(data: bytes) -> GetStateFields: ...
def decode_save_state(data: bytes) -> SaveStateFields: ...
def encode_get_state(entry: StateEntry | None) -> bytes: ...
