"""``sequencer.redis``: id sequences in Redis (``redisType: node`` or ``cluster``).

Layout, as Layotto's Redis sequencer keeps it: one integer string per sequence, its key
the one the sequencer service gives with nothing put before it
(``sequencer|||<prefix>||<key>``, the prefix chosen by the manifest's ``keyPrefix``:
``runtime/key_prefixes.py``), holding the last id handed out. Layotto takes the next id
with ``INCR`` (and a block of ids with ``INCRBY``), and so do we: a Redis a Layotto sidecar
counted in goes on from its value, and a Layotto sidecar goes on from ours. Every call is
one Lua script on that one key (so on a cluster it runs on the node owning the key's slot,
no hash tag needed) that:

1. raises the stored value to ``biggerThan`` when it is missing or below it (so the
   first id is ``biggerThan + 1``, and a floor raised in a later manifest holds);
2. answers "exhausted" without changing anything when the value is already MAX_ID
   (2^63 - 1, the last int64), which the caller gets as SequenceExhausted;
3. INCRs the value and answers it as a string: Redis' Lua numbers are doubles, so
   an integer reply above 2^53 would come back rounded.

The counter lives in Redis, so ids keep increasing across sidecar restarts and across
sidecars sharing the Redis; a Redis without persistence forgets them on its restart.
The calls made in one loop pass go out as one pipeline (``components/redis_pipeline.py``), in call order.
"""

from __future__ import annotations

from typing import Self

from layotto_fast.components.redis_client import REDIS_ERRORS, RedisConfig, failure
from layotto_fast.components.redis_pipeline import PipelinedRedis, Script
from layotto_fast.components.sequencer import SequencerConfig
from layotto_fast.errors import FailedPrecondition
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.sequencer import MAX_ID, SequenceExhausted

# KEYS[1]: the sequence. ARGV[1]: biggerThan, ARGV[2]: MAX_ID, both canonical decimals.
# Numbers are compared as strings (length, then digits): Lua's doubles cannot hold them.
NEXT_ID = Script(
    """
local current = redis.call("GET", KEYS[1])
if current == ARGV[2] then return false end
if current and not string.find(current, "^%-?%d+$") then
  return redis.error_reply("ERR value is not an integer or out of range")
end
local floor = ARGV[1]
if not current or string.sub(current, 1, 1) == "-"
    or #current < #floor or (#current == #floor and current < floor) then
  redis.call("SET", KEYS[1], floor)
end
redis.call("INCR", KEYS[1])
return redis.call("GET", KEYS[1])
"""
)


class RedisSequencer(PipelinedRedis):
    """Its ``key`` is the Redis key: the config's ``key_prefix`` (``keyPrefix``) is the
    sequencer service's strategy, not text put before the key."""

    def __init__(self, config: RedisConfig, bigger_than: int = 0) -> None:
        super().__init__(config)
        self._args = (str(bigger_than), str(MAX_ID))

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(RedisConfig.from_manifest(manifest), SequencerConfig.from_manifest(manifest).bigger_than)

    async def next_id(self, key: str) -> int:
        assert self._pipeline is not None, "init() first"
        try:
            reply = await self._pipeline.script(NEXT_ID, [key], self._args)
        except REDIS_ERRORS as exc:
            error = failure(self._config, exc)
            if isinstance(error, FailedPrecondition):
                if "overflow" in str(exc):
                    raise SequenceExhausted(key) from None
                # Someone wrote a value INCR cannot read (not an integer) under the key.
                error = FailedPrecondition(f"sequence at redis key {key!r}: {error}")
            raise error from None
        if reply is None:
            raise SequenceExhausted(key)
        return int(reply)
