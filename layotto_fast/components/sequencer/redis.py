"""``sequencer.redis``: id sequences in Redis (``redisType: node`` or ``cluster``).

Layout: one integer string per sequence at ``{keyPrefix}sequencer|{key}``, holding
the last id handed out. Every call is one Lua script on that one key (so on a
cluster it runs on the node owning the key's slot, no hash tag needed) that:

1. raises the stored value to ``biggerThan`` when it is missing or below it (so the
   first id is ``biggerThan + 1``, and a floor raised in a later manifest holds);
2. answers "exhausted" without changing anything when the value is already MAX_ID
   (2^63 - 1, the last int64), which the caller gets as ResourceExhausted;
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
from layotto_fast.components.sequencer import SequencerConfig, exhausted
from layotto_fast.errors import FailedPrecondition
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime.sequencer import MAX_ID

# KEYS[1]: the sequence. ARGV[1]: biggerThan, ARGV[2]: MAX_ID, both canonical decimals.
# Numbers are compared as strings (length, then digits): Lua's doubles cannot hold them.
NEXT_ID = Script(
    """
local current = redis.call("GET", KEYS[1])
if current == ARGV[2] then return false end
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
    def __init__(self, config: RedisConfig, bigger_than: int = 0) -> None:
        super().__init__(config)
        self._prefix = f"{config.key_prefix}sequencer|"
        self._args = (str(bigger_than), str(MAX_ID))

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(RedisConfig.from_manifest(manifest), SequencerConfig.from_manifest(manifest).bigger_than)

    def key(self, key: str) -> str:
        """The Redis key of sequence ``key``."""
        return self._prefix + key

    async def next_id(self, key: str) -> int:
        assert self._pipeline is not None, "init() first"
        try:
            reply = await self._pipeline.script(NEXT_ID, [self.key(key)], self._args)
        except REDIS_ERRORS as exc:
            error = failure(self._config, exc)
            if isinstance(error, FailedPrecondition):
                if "overflow" in str(exc):
                    raise exhausted(key) from None
                # Someone wrote a value INCR cannot read (not an integer) under the key.
                error = FailedPrecondition(f"sequence {key!r} at redis key {self.key(key)!r}: {error}")
            raise error from None
        if reply is None:
            raise exhausted(key)
        return int(reply)
