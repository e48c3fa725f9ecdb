"""Which functions turn an rpc's request bytes into a handler's argument, and its answer into bytes.

Protobuf's message classes, unless the handler object lists its own in ``codecs``:
rpc name -> (decode, encode), either None to keep protobuf's. Both transports ask
here, so a handler receives and returns the same types whichever one serves it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

Decode = Callable[[bytes], Any]
Encode = Callable[[Any], bytes]


def codec_of(handlers: object, rpc: MethodDescriptor) -> tuple[Decode, Encode]:
    declared: dict[str, tuple[Decode | None, Encode | None]] = getattr(handlers, "codecs", {})
    decode, encode = declared.get(rpc.name, (None, None))
    if decode is None:
        decode = message_factory.GetMessageClass(rpc.input_type).FromString
    if encode is None:
        encode = message_factory.GetMessageClass(rpc.output_type).SerializeToString
    return decode, encode
