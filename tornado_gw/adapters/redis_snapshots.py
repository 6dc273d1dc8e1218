"""Session, presence and typing snapshots in Redis, shared by every instance
(CONTRACT §6; every key is listed in docs/redis.md).

Rules:
1. Presence expires per session (PITFALLS 10): ``presence:{cid}`` is a sorted
   set of ``"user_id|session_id"`` scored by ``expires_at``; ``|`` cannot occur
   in an id. ``presence_users:{cid}`` counts each user's sessions in that set.
2. A transition (first session of a user in, last one out; typing start/stop)
   happens inside one Lua script or one MULTI, so exactly one caller
   cluster-wide sees it.
3. ``presence_due`` / ``typing_due`` hold each conversation scored by a lower
   bound of its earliest ``expires_at``, so ``expire(now)`` visits only
   conversations that may hold expired entries, never a SCAN.
4. Whole-key TTLs (``gc_ttl_s``, a day) only collect garbage; expiry itself is
   decided by the scores, which use the callers' clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import redis.asyncio as aredis
import ujson

from tornado_gw.adapters.redis_broker import redis_client, unavailable
from tornado_gw.core.ids import presence_key, session_key, typing_key
from tornado_gw.core.records import SessionSnapshot
from tornado_gw.settings import Settings

GC_TTL_S = 86400.0
_EXPIRE_BATCH = 500  # conversations per script call, so one call never blocks Redis for long


def presence_users_key(prefix: str, conversation_id: str) -> str:
    return f"{prefix}presence_users:{conversation_id}"


def presence_due_key(prefix: str) -> str:
    return f"{prefix}presence_due"


def typing_due_key(prefix: str) -> str:
    return f"{prefix}typing_due"


# KEYS: due index, then (presence zset, user counts) per entry.
# ARGV: expires_at, gc ms, then (user_id, session_id, cid) per entry.
# Returns {cid1, uid1, ...}: the users that had no entry there before (now online).
# One call for many entries: a refresh of thousands costs one round trip.
_JOIN = """
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local zkey, ukey = KEYS[2 * i], KEYS[2 * i + 1]
  local uid, sid, cid = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local added = redis.call('ZADD', zkey, ARGV[1], uid .. '|' .. sid)
  redis.call('ZADD', KEYS[1], 'LT', ARGV[1], cid)
  if added == 1 and redis.call('HINCRBY', ukey, uid, 1) == 1 then
    out[#out + 1] = cid; out[#out + 1] = uid
  end
  redis.call('PEXPIRE', zkey, ARGV[2]); redis.call('PEXPIRE', ukey, ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return out
"""

# KEYS: presence zset, user counts. ARGV: user_id, session_id, now.
# The user's other sessions already expired by ``now`` go too: "offline" is then
# announced here, and expire() cannot announce it a second time.
_LEAVE = """
local mine = ARGV[1] .. '|'
local removed = redis.call('ZREM', KEYS[1], mine .. ARGV[2])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])) do
  if string.sub(member, 1, #mine) == mine then removed = removed + redis.call('ZREM', KEYS[1], member) end
end
if removed == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -removed) > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: due index. ARGV: now, zset key prefix, user-count key prefix ('' for typing), batch.
# Returns {more, cid1, uid1, cid2, uid2, ...}: the users whose last entry expired.
_EXPIRE = """
local now, zpre, cpre, batch = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch)
local out = {#due == batch and 1 or 0}
for _, cid in ipairs(due) do
  local zkey = zpre .. cid
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', zkey, '-inf', now)) do
    local uid = member
    if cpre ~= '' then
      uid = string.match(member, '^(.-)|')
      if redis.call('HINCRBY', cpre .. cid, uid, -1) > 0 then
        uid = nil
      else
        redis.call('HDEL', cpre .. cid, uid)
      end
    end
    if uid then out[#out + 1] = cid; out[#out + 1] = uid end
  end
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
  local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if #first == 0 then redis.call('ZREM', KEYS[1], cid) else redis.call('ZADD', KEYS[1], first[2], cid) end
end
return out
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class _RedisStore:
    """Owns one pooled client; ``close()`` releases it."""

    def __init__(self, client: aredis.Redis, prefix: str, gc_ttl_s: float = GC_TTL_S) -> None:
        self._redis = client
        self._prefix = prefix
        self._gc_ms = _ms(gc_ttl_s)

    @classmethod
    def from_settings(cls: type[_Store], settings: Settings) -> _Store:
        """A store with its own client (``redis_host``, password, database) and ``prefix``."""
        return cls(redis_client(settings), settings.prefix)

    async def close(self) -> None:
        await self._redis.aclose()


_Store = TypeVar("_Store", bound=_RedisStore)


class _ExpiringStore(_RedisStore):
    """Sorted sets by ``expires_at`` plus a due index, drained by the expire script."""

    def __init__(self, client: aredis.Redis, prefix: str, gc_ttl_s: float = GC_TTL_S) -> None:
        super().__init__(client, prefix, gc_ttl_s)
        self._expire_script = client.register_script(_EXPIRE)

    async def _expire(
        self, due_key: str, zset_prefix: str, counts_prefix: str, now: float
    ) -> list[tuple[str, str]]:
        """Run the expire script until no due conversation is left (each call is atomic)."""
        gone: list[tuple[str, str]] = []
        more = 1
        while more:
            with unavailable("expire"):
                reply = await self._expire_script(
                    keys=[due_key], args=[repr(now), zset_prefix, counts_prefix, _EXPIRE_BATCH]
                )
            more, pairs = int(reply[0]), reply[1:]
            gone += [(pairs[i].decode(), pairs[i + 1].decode()) for i in range(0, len(pairs), 2)]
        return gone


class RedisSessions(_RedisStore):
    """``session:{session_id}`` strings holding the snapshot as JSON, with a PX TTL."""

    async def save(self, snapshots: Sequence[SessionSnapshot], ttl_s: float) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for snapshot in snapshots:
            value = ujson.dumps({"user_id": snapshot.user_id, "conversation_ids": snapshot.conversation_ids,
                                 "presence_id": snapshot.presence_id})
            pipe.set(session_key(self._prefix, snapshot.session_id), value, px=_ms(ttl_s))
        with unavailable("save session"):
            await pipe.execute()

    async def load(self, session_id: str) -> SessionSnapshot | None:
        with unavailable("load session"):
            raw = await self._redis.get(session_key(self._prefix, session_id))
        if raw is None:
            return None
        data = ujson.loads(raw)
        return SessionSnapshot(session_id, data["user_id"], tuple(data["conversation_ids"]),
                               data.get("presence_id"))

    async def delete(self, session_id: str) -> None:
        with unavailable("delete session"):
            await self._redis.delete(session_key(self._prefix, session_id))


class RedisPresence(_ExpiringStore):
    """The ``PresenceStore`` port; see the module rules."""

    def __init__(self, client: aredis.Redis, prefix: str, gc_ttl_s: float = GC_TTL_S) -> None:
        super().__init__(client, prefix, gc_ttl_s)
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)

    async def join(self, conversation_id: str, user_id: str, session_id: str, expires_at: float) -> bool:
        return bool(await self.rejoin([(conversation_id, user_id, session_id)], expires_at))

    async def rejoin(self, entries: Sequence[tuple[str, str, str]],
                     expires_at: float) -> list[tuple[str, str]]:
        """The join script over every entry at once; re-creates what expired while Redis was away."""
        keys = [presence_due_key(self._prefix)]
        args: list[object] = [repr(expires_at), self._gc_ms]
        for conversation_id, user_id, session_id in entries:
            keys += [self._zset(conversation_id), self._users(conversation_id)]
            args += [user_id, session_id, conversation_id]
        with unavailable("presence join"):
            found = await self._join(keys=keys, args=args) if entries else []
        return [(found[i].decode(), found[i + 1].decode()) for i in range(0, len(found), 2)]

    async def leave(self, conversation_id: str, user_id: str, session_id: str, now: float) -> bool:
        keys = [self._zset(conversation_id), self._users(conversation_id)]
        with unavailable("presence leave"):
            return bool(await self._leave(keys=keys, args=[user_id, session_id, repr(now)]))

    async def refresh(self, entries: Sequence[tuple[str, str, str]], expires_at: float) -> None:
        """Set the expiry, earlier or later (a disconnect pulls it in to the grace period).

        ZADD XX never re-creates a session that left or expired; the due index
        takes the new score only when lower, so it stays a lower bound."""
        if not entries:
            return
        pipe = self._redis.pipeline(transaction=False)
        due = presence_due_key(self._prefix)
        for conversation_id, user_id, session_id in entries:
            pipe.zadd(self._zset(conversation_id), {f"{user_id}|{session_id}": expires_at}, xx=True)
            pipe.zadd(due, {conversation_id: expires_at}, lt=True)
            pipe.pexpire(self._zset(conversation_id), self._gc_ms)
            pipe.pexpire(self._users(conversation_id), self._gc_ms)
        pipe.pexpire(due, self._gc_ms)
        with unavailable("presence refresh"):
            await pipe.execute()

    async def online(self, conversation_id: str, now: float) -> list[str]:
        with unavailable("presence query"):
            members = await self._redis.zrangebyscore(self._zset(conversation_id), f"({now!r}", "+inf")
        return sorted({member.decode().partition("|")[0] for member in members})

    async def expire(self, now: float) -> list[tuple[str, str]]:
        return await self._expire(
            presence_due_key(self._prefix), self._zset(""), presence_users_key(self._prefix, ""), now
        )

    def _zset(self, conversation_id: str) -> str:
        return presence_key(self._prefix, conversation_id)

    def _users(self, conversation_id: str) -> str:
        return presence_users_key(self._prefix, conversation_id)


class RedisTyping(_ExpiringStore):
    """``typing:{cid}`` sorted sets of user ids scored by ``expires_at``."""

    async def start(self, conversation_id: str, user_id: str, expires_at: float) -> bool:
        key, due = typing_key(self._prefix, conversation_id), typing_due_key(self._prefix)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(key, {user_id: expires_at})
        pipe.zadd(due, {conversation_id: expires_at}, lt=True)
        pipe.pexpire(key, self._gc_ms)
        pipe.pexpire(due, self._gc_ms)
        with unavailable("typing start"):
            added, *_ = await pipe.execute()
        return bool(added)

    async def stop(self, conversation_id: str, user_id: str) -> bool:
        with unavailable("typing stop"):
            return bool(await self._redis.zrem(typing_key(self._prefix, conversation_id), user_id))

    async def expire(self, now: float) -> list[tuple[str, str]]:
        return await self._expire(typing_due_key(self._prefix), typing_key(self._prefix, ""), "", now)
