"""Type stub for the compiled codecs of the hottest rpcs (wire.pyx)."""

from layotto_fast.runtime.state import StateEntry, StateItem

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
    states: list[StateItem]

class PublishEventFields:
    pubsub_name: str
    topic: str
    data: bytes
    data_content_type: str
    metadata: dict[str, str]

def decode_say_hello(data: bytes) -> SayHelloFields: ...
def encode_say_hello(answer: tuple[str, bytes | None]) -> bytes: ...
def decode_get_state(data: bytes) -> GetStateFields: ...
def decode_save_state(data: bytes) -> SaveStateFields: ...
def encode_empty(answer: object) -> bytes: ...
def encode_get_state(entry: StateEntry | None) -> bytes: ...
def decode_publish_event(data: bytes) -> PublishEventFields: ...
def encode_publish_event(message_id: str) -> bytes: ...
