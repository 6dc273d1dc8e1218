"""Connections per user counted in Redis, for every instance (``ports.ConnectionSlots``).

Rules:
1. ``connections:{user_id}`` is a sorted set of slot ids (one per connection,
   unique cluster-wide) scored by expiry time. A claim drops the expired slots,
   counts the rest and adds its own in one script, so two instances cannot
   both take the last slot.
2. The count heals itself: an instance refreshes its slots every third of the
   TTL; the slots of an instance that was killed stop counting at their expiry,
   and the key itself expires with its last slot.
3. Scores use the callers' clock, like the presence sets (redis_snapshots.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import redis.asyncio as aredis

from tornado_gw.adapters.redis_broker import redis_client, unavailable
from tornado_gw.adapters.redis_scripts import ScriptPipeline
from tornado_gw.core.ids import connections_key
from tornado_gw.settings import Settings

_REFRESH_BATCH = 500  # slots per script call, so one call never blocks Redis for long

# KEYS: the user's set. ARGV: slot id, limit, now, expires_at, key ttl ms. Returns 1 when taken.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: one set per slot. ARGV: expires_at, key ttl ms, then the slot ids in KEYS' order.
_REFRESH = """
for i = 1, #KEYS do
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', ARGV[1], ARGV[i + 2]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return 0
"""


class RedisSlots:
    def __init__(self, client: aredis.Redis, prefix: str, ttl_s: float) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._key_ttl_ms = math.ceil(ttl_s * 1000)
        self._claim = client.register_script(_CLAIM)
        self._refresh = client.register_script(_REFRESH)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisSlots:
        """Slots live ``presence_ttl_s``: how long a dead instance's traces last."""
        return cls(redis_client(settings), settings.prefix, settings.presence_ttl_s)

    async def claim(self, user_id: str, slot_id: str, limit: int, now: float) -> bool:
        return (await self.claim_many([(user_id, slot_id, limit)], now))[0]

    async def claim_many(self, claims: Sequence[tuple[str, str, int]], now: float) -> list[bool]:
        """One pipeline of claim scripts (each on its user's key, so each on one Cluster slot)."""
        if not claims:
            return []
        expires_at = repr(now + self._ttl_s)
        batch = ScriptPipeline(self._redis)
        for user_id, slot_id, limit in claims:
            batch.script(self._claim, [connections_key(self._prefix, user_id)],
                         [slot_id, limit, repr(now), expires_at, self._key_ttl_ms])
        with unavailable("claim connection slots"):
            taken = await batch.execute()
        return [bool(t) for t in taken]

    async def release(self, user_id: str, slot_id: str) -> None:
        with unavailable("release a connection slot"):
            await self._redis.zrem(connections_key(self._prefix, user_id), slot_id)

    async def refresh(self, slots: Sequence[tuple[str, str]], now: float) -> None:
        for start in range(0, len(slots), _REFRESH_BATCH):
            batch = slots[start:start + _REFRESH_BATCH]
            with unavailable("refresh connection slots"):
                await self._refresh(keys=[connections_key(self._prefix, user_id) for user_id, _ in batch],
                                    args=[repr(now + self._ttl_s), self._key_ttl_ms, *(s for _, s in batch)])

    async def close(self) -> None:
        await self._redis.aclose()
