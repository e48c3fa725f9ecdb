"""Type stub for the answer size limit (limits.pyx)."""

from layotto_fast.api.codecs import Encode

def limit_size(encode: Encode, max_message_bytes: int) -> Encode: ...
