"""Session, presence and typing snapshots in Redis, shared by every instance
(CONTRACT §6; every key is listed in docs/redis.md).

Rules:
1. Presence expires per session (PITFALLS 10): ``{presence}:sessions:{cid}`` is a
   sorted set of ``"user_id|session_id"`` scored by ``expires_at``; ``|`` cannot occur
   in an id. ``{presence}:users:{cid}`` counts each user's sessions there (its size is
   the count); ``{presence}:ids:{cid}`` holds the online user ids at score 0, read in
   pages with ``ZRANGE BYLEX LIMIT``.
2. A transition (first session of a user in, last one out; typing start/stop) happens
   inside one Lua script, which also PUBLISHes its announcement: exactly one caller
   cluster-wide makes it, it is announced exactly once and in order, even when the
   caller times out waiting for the reply (ISSUE 9.5). The frames are built in Lua by
   concatenation: ids are validated (CONTRACT §6: letters, digits, ``-_.:@``) and need
   no JSON escaping.
3. ``{presence}:due`` / ``{typing}:due`` hold each conversation scored by a lower bound
   of its earliest ``expires_at``, so ``expire(now)`` visits only conversations that may
   hold expired entries, never a SCAN.
4. Every key a script touches is passed in KEYS, and the keys of one store share a hash
   tag (``core/ids.py``), so each script runs on one Redis Cluster slot.
5. Work is chunked so no call blocks Redis for long at 100,000 entries (ISSUE 9.4):
   joins and refreshes go ``CHUNK_ENTRIES`` entries per round trip, the sweep
   ``_SWEEP_CONVERSATIONS`` conversations and ``CHUNK_ENTRIES`` entries per call.
6. Whole-key TTLs (``gc_ttl_s``, a day) only collect garbage; expiry itself is
   decided by the scores, which use the callers' clock.
7. Sessions: every snapshot key has an entry in its user's index, written *before* the
   snapshot on the same connection (Redis runs one connection's commands in order), with
   a score (Redis's own clock, the one ``PX`` uses) a little past the snapshot's expiry.
   So an index entry outlives its snapshot, ``delete_user`` finds every snapshot that can
   still be loaded, and a failed save leaves at most an entry without a snapshot (harmless).
   The index script drops its expired entries, so the index never outgrows the user's
   sessions of the last TTL. Each command touches one key (one Cluster slot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import redis.asyncio as aredis
import ujson
from redis.commands.core import AsyncScript

from tornado_gw.adapters.redis_broker import redis_client, unavailable
from tornado_gw.adapters.redis_scripts import ScriptArg, ScriptPipeline
from tornado_gw.core.ids import (
    conv_channel,
    presence_due_key,
    presence_ids_key,
    presence_key,
    presence_users_key,
    session_key,
    typing_due_key,
    typing_key,
    user_sessions_key,
)
from tornado_gw.core.records import PresencePage, SessionSnapshot, snapshot_from_record, snapshot_record
from tornado_gw.settings import Settings

GC_TTL_S = 86400.0
CHUNK_ENTRIES = 500  # presence entries per script call or MULTI: well under a millisecond of Redis
_SWEEP_CONVERSATIONS = 100  # due conversations per sweep call
_INDEX_SLACK_MS = 1000  # an index entry outlives its snapshot by this much (rule 7)

_IDS = """
local function ids(list)
  if #list == 0 then return '[]' end
  return '["' .. table.concat(list, '","') .. '"]'
end
"""

# frames.presence_transition, built in Lua (rule 2).
_TRANSITION = _IDS + """
local function transition(cid, joins, leaves, count, users)
  local extra = ''
  if users then extra = ',"users":' .. ids(users) end
  return '{"type":"presence.transition","payload":{"conversation_id":"' .. cid .. '","joins":' .. ids(joins)
    .. ',"leaves":' .. ids(leaves) .. ',"count":' .. count .. extra .. '}}'
end
"""

# frames.typing, built in Lua (rule 2).
_TYPING_FRAME = """
local function typing(kind, cid, uid)
  return '{"type":"' .. kind .. '","payload":{"conversation_id":"' .. cid .. '","user_id":"' .. uid .. '"}}'
end
"""

# KEYS: due, then (sessions, users, ids) per conversation.
# ARGV: expires_at, gc ms, then per conversation: channel, cid, n, then n (user_id, session_id).
_JOIN = _TRANSITION + """
local expires, gc = ARGV[1], ARGV[2]
local a = 3
for k = 2, #KEYS, 3 do
  local skey, ukey, ikey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local channel, cid, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local joined = {}
  for _ = 1, n do
    local uid = ARGV[a]
    if redis.call('ZADD', skey, expires, uid .. '|' .. ARGV[a + 1]) == 1
        and redis.call('HINCRBY', ukey, uid, 1) == 1 then
      redis.call('ZADD', ikey, 0, uid)
      joined[#joined + 1] = uid
    end
    a = a + 2
  end
  redis.call('ZADD', KEYS[1], 'LT', expires, cid)
  for _, key in ipairs({skey, ukey, ikey}) do redis.call('PEXPIRE', key, gc) end
  if #joined > 0 then
    redis.call('PUBLISH', channel, transition(cid, joined, {}, redis.call('HLEN', ukey)))
  end
end
redis.call('PEXPIRE', KEYS[1], gc)
return 0
"""

# KEYS: sessions, users, ids. ARGV: user_id, session_id, now, channel, cid.
# The user's other sessions already expired by ``now`` go too (a bounded look): "offline"
# is then announced here, and the sweep cannot announce it a second time.
_LEAVE = _TRANSITION + """
local uid = ARGV[1]
local mine = uid .. '|'
local removed = redis.call('ZREM', KEYS[1], mine .. ARGV[2])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, 100)) do
  if string.sub(member, 1, #mine) == mine then removed = removed + redis.call('ZREM', KEYS[1], member) end
end
if removed == 0 or redis.call('HINCRBY', KEYS[2], uid, -removed) > 0 then return 0 end
redis.call('HDEL', KEYS[2], uid)
redis.call('ZREM', KEYS[3], uid)
redis.call('PUBLISH', ARGV[4], transition(ARGV[5], {}, {uid}, redis.call('HLEN', KEYS[2])))
return 1
"""

# KEYS: users, ids. ARGV: channel, cid, list limit (0: the count only).
_ANNOUNCE = _TRANSITION + """
local users = nil
if tonumber(ARGV[3]) > 0 then
  users = redis.call('ZRANGE', KEYS[2], '-', '+', 'BYLEX', 'LIMIT', 0, ARGV[3])
end
redis.call('PUBLISH', ARGV[1], transition(ARGV[2], {}, {}, redis.call('HLEN', KEYS[1]), users))
return 0
"""

# KEYS: due, then (sessions, users, ids) per conversation. ARGV: now, entry budget, then
# (channel, cid) per conversation. Returns 1 when the budget ran out (call again).
_EXPIRE_PRESENCE = _TRANSITION + """
local now, budget = ARGV[1], tonumber(ARGV[2])
local a = 3
for k = 2, #KEYS, 3 do
  local skey, ukey, ikey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local channel, cid = ARGV[a], ARGV[a + 1]
  a = a + 2
  local gone = {}
  if budget > 0 then
    local expired = redis.call('ZRANGEBYSCORE', skey, '-inf', now, 'LIMIT', 0, budget)
    budget = budget - #expired
    for _, member in ipairs(expired) do
      redis.call('ZREM', skey, member)
      local uid = string.match(member, '^(.-)|')
      if redis.call('HINCRBY', ukey, uid, -1) <= 0 then
        redis.call('HDEL', ukey, uid)
        redis.call('ZREM', ikey, uid)
        gone[#gone + 1] = uid
      end
    end
  end
  local first = redis.call('ZRANGE', skey, 0, 0, 'WITHSCORES')
  if #first == 0 then redis.call('ZREM', KEYS[1], cid) else redis.call('ZADD', KEYS[1], first[2], cid) end
  if #gone > 0 then
    redis.call('PUBLISH', channel, transition(cid, {}, gone, redis.call('HLEN', ukey)))
  end
end
if budget <= 0 then return 1 end
return 0
"""

# KEYS: typing set, due. ARGV: user_id, expires_at, gc ms, channel, cid.
_TYPING_START = _TYPING_FRAME + """
local added = redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], 'LT', ARGV[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if added == 1 then redis.call('PUBLISH', ARGV[4], typing('typing.start', ARGV[5], ARGV[1])) end
return added
"""

# KEYS: typing set. ARGV: user_id, channel, cid.
_TYPING_STOP = _TYPING_FRAME + """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then redis.call('PUBLISH', ARGV[2], typing('typing.stop', ARGV[3], ARGV[1])) end
return removed
"""

# KEYS: due, then the typing set per conversation. ARGV: now, entry budget, then (channel,
# cid) per conversation. Returns 1 when the budget ran out (call again).
_EXPIRE_TYPING = _TYPING_FRAME + """
local now, budget = ARGV[1], tonumber(ARGV[2])
for k = 2, #KEYS do
  local channel, cid = ARGV[2 * k - 1], ARGV[2 * k]
  if budget > 0 then
    local expired = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', now, 'LIMIT', 0, budget)
    budget = budget - #expired
    for _, uid in ipairs(expired) do
      redis.call('ZREM', KEYS[k], uid)
      redis.call('PUBLISH', channel, typing('typing.stop', cid, uid))
    end
  end
  local first = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
  if #first == 0 then redis.call('ZREM', KEYS[1], cid) else redis.call('ZADD', KEYS[1], first[2], cid) end
end
if budget <= 0 then return 1 end
return 0
"""


# KEYS: the user's index. ARGV: ttl ms (with the slack), then the session ids being saved.
# Scores are expiry times on Redis's clock (rule 7); expired entries go first.
_INDEX_SESSIONS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local expires = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
return 0
"""


def _snapshot(session_id: str, raw: bytes) -> SessionSnapshot | None:
    """A stored record (``records.snapshot_record``); None for a malformed or newer one."""
    try:
        data = ujson.loads(raw)
    except ValueError:
        return None
    return snapshot_from_record(session_id, data)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _chunks(entries: Sequence[tuple[str, str, str]]) -> list[Sequence[tuple[str, str, str]]]:
    return [entries[i:i + CHUNK_ENTRIES] for i in range(0, len(entries), CHUNK_ENTRIES)]


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

    def _channel(self, conversation_id: str) -> str:
        return self._prefix + conv_channel(conversation_id)


_Store = TypeVar("_Store", bound=_RedisStore)


class _ExpiringStore(_RedisStore):
    """Sorted sets by ``expires_at`` plus a due index, drained by an expire script."""

    async def _sweep(self, script: AsyncScript, due_key: str, keys_of: Callable[[str], list[str]],
                     now: float) -> None:
        """Run ``script`` over the due conversations, a bounded chunk per call, until none is
        left (rule 5). The due list is read first; the script decides again atomically."""
        while True:
            with unavailable("expire"):
                due = await self._redis.zrangebyscore(due_key, "-inf", repr(now), start=0,
                                                      num=_SWEEP_CONVERSATIONS)
            if not due:
                return
            keys: list[str] = [due_key]
            args: list[ScriptArg] = [repr(now), CHUNK_ENTRIES]
            for raw in due:
                cid = raw.decode() if isinstance(raw, bytes) else str(raw)
                keys += keys_of(cid)
                args += [self._channel(cid), cid]
            with unavailable("expire"):
                more = await script(keys=keys, args=args)
            if not more and len(due) < _SWEEP_CONVERSATIONS:
                return


class RedisSessions(_RedisStore):
    """``session:{session_id}`` strings holding the snapshot as versioned JSON
    (``records.snapshot_record``), with a PX TTL, and ``user-sessions:{user_id}``: the
    user's session ids, for ``delete_user`` (rule 7)."""

    def __init__(self, client: aredis.Redis, prefix: str, gc_ttl_s: float = GC_TTL_S) -> None:
        super().__init__(client, prefix, gc_ttl_s)
        self._index = client.register_script(_INDEX_SESSIONS)

    async def save(self, snapshots: Sequence[SessionSnapshot], ttl_s: float) -> None:
        """One round trip: per user, the index script, then the snapshots (rule 7)."""
        by_user: dict[str, list[SessionSnapshot]] = {}
        for snapshot in snapshots:
            by_user.setdefault(snapshot.user_id, []).append(snapshot)
        ttl_ms = _ms(ttl_s)
        batch = ScriptPipeline(self._redis)
        for user_id, mine in by_user.items():
            args: list[ScriptArg] = [ttl_ms + _INDEX_SLACK_MS, *(s.session_id for s in mine)]
            batch.script(self._index, [user_sessions_key(self._prefix, user_id)], args)
            for snapshot in mine:
                value = ujson.dumps(snapshot_record(snapshot))
                batch.pipe.set(session_key(self._prefix, snapshot.session_id), value, px=ttl_ms)
        with unavailable("save session"):
            await batch.execute()

    async def load(self, session_id: str) -> SessionSnapshot | None:
        return (await self.load_many([session_id]))[0]

    async def load_many(self, session_ids: Sequence[str]) -> list[SessionSnapshot | None]:
        """One GET per snapshot, pipelined (one command per key: one Cluster slot each)."""
        if not session_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.get(session_key(self._prefix, session_id))
        with unavailable("load sessions"):
            raws = await pipe.execute()
        return [None if raw is None else _snapshot(session_id, raw)
                for session_id, raw in zip(session_ids, raws, strict=True)]

    async def delete(self, session_id: str) -> None:
        """The index keeps the id until its score passes: deleting a missing key is harmless."""
        with unavailable("delete session"):
            await self._redis.delete(session_key(self._prefix, session_id))

    async def delete_user(self, user_id: str) -> None:
        """Read the index, then delete those snapshots and index entries, in chunks of one
        round trip each. The index only holds sessions saved within their TTL, so it is small."""
        index = user_sessions_key(self._prefix, user_id)
        with unavailable("delete the user's sessions"):
            members = await self._redis.zrange(index, 0, -1)
        session_ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        for start in range(0, len(session_ids), CHUNK_ENTRIES):
            chunk = session_ids[start:start + CHUNK_ENTRIES]
            pipe = self._redis.pipeline(transaction=False)
            pipe.delete(*(session_key(self._prefix, session_id) for session_id in chunk))
            pipe.zrem(index, *chunk)
            with unavailable("delete the user's sessions"):
                await pipe.execute()


class RedisPresence(_ExpiringStore):
    """The ``PresenceStore`` port; see the module rules."""

    def __init__(self, client: aredis.Redis, prefix: str, gc_ttl_s: float = GC_TTL_S) -> None:
        super().__init__(client, prefix, gc_ttl_s)
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)
        self._announce = client.register_script(_ANNOUNCE)
        self._expire = client.register_script(_EXPIRE_PRESENCE)

    async def join(self, conversation_id: str, user_id: str, session_id: str, expires_at: float) -> None:
        await self.rejoin([(conversation_id, user_id, session_id)], expires_at)

    async def rejoin(self, entries: Sequence[tuple[str, str, str]], expires_at: float) -> None:
        """The join script, one chunk of entries per call; re-creates what expired while Redis
        was away."""
        for chunk in _chunks(entries):
            by_conversation: dict[str, list[str]] = {}
            for conversation_id, user_id, session_id in chunk:
                by_conversation.setdefault(conversation_id, []).extend((user_id, session_id))
            keys = [presence_due_key(self._prefix)]
            args: list[ScriptArg] = [repr(expires_at), self._gc_ms]
            for conversation_id, pairs in by_conversation.items():
                keys += self._keys(conversation_id)
                args += [self._channel(conversation_id), conversation_id, len(pairs) // 2, *pairs]
            with unavailable("presence join"):
                await self._join(keys=keys, args=args)

    async def leave(self, conversation_id: str, user_id: str, session_id: str, now: float) -> None:
        args: list[ScriptArg] = [user_id, session_id, repr(now), self._channel(conversation_id),
                                 conversation_id]
        with unavailable("presence leave"):
            await self._leave(keys=self._keys(conversation_id), args=args)

    async def refresh(self, entries: Sequence[tuple[str, str, str]], expires_at: float) -> None:
        """Set the expiry, earlier or later (a disconnect pulls it in to the grace period).

        ZADD XX never re-creates a session that left or expired; the due index takes the
        new score only when lower, in the same MULTI, so it stays a lower bound."""
        due = presence_due_key(self._prefix)
        for chunk in _chunks(entries):
            pipe = self._redis.pipeline(transaction=True)
            for conversation_id, user_id, session_id in chunk:
                pipe.zadd(self._zset(conversation_id), {f"{user_id}|{session_id}": expires_at}, xx=True)
                pipe.zadd(due, {conversation_id: expires_at}, lt=True)
            with unavailable("presence refresh"):
                await pipe.execute()

    async def page(self, conversation_id: str, after: str | None, limit: int) -> PresencePage:
        """One MULTI: a ``ZRANGE BYLEX LIMIT`` page and the count (rule 1)."""
        pipe = self._redis.pipeline(transaction=True)
        start = "-" if after is None else f"({after}"
        pipe.zrange(presence_ids_key(self._prefix, conversation_id), start, "+", bylex=True,
                    offset=0, num=limit)
        pipe.hlen(presence_users_key(self._prefix, conversation_id))
        with unavailable("presence query"):
            members, count = await pipe.execute()
        return PresencePage(tuple(member.decode() for member in members), int(count))

    async def announce(self, conversation_id: str, list_limit: int) -> None:
        await self.announce_many([(conversation_id, list_limit)])

    async def announce_many(self, asked: Sequence[tuple[str, int]]) -> None:
        """One pipeline of announce scripts (each on its conversation's keys: one Cluster slot)."""
        batch = ScriptPipeline(self._redis)
        for conversation_id, list_limit in asked:
            batch.script(self._announce, self._keys(conversation_id)[1:],
                         [self._channel(conversation_id), conversation_id, list_limit])
        with unavailable("presence announce"):
            await batch.execute()

    async def expire(self, now: float) -> None:
        await self._sweep(self._expire, presence_due_key(self._prefix), self._keys, now)

    def _keys(self, conversation_id: str) -> list[str]:
        """sessions, users, ids: the keys of one conversation's presence (rule 1)."""
        return [self._zset(conversation_id), presence_users_key(self._prefix, conversation_id),
                presence_ids_key(self._prefix, conversation_id)]

    def _zset(self, conversation_id: str) -> str:
        return presence_key(self._prefix, conversation_id)


class RedisTyping(_ExpiringStore):
    """``{typing}:{cid}`` sorted sets of user ids scored by ``expires_at``."""

    def __init__(self, client: aredis.Redis, prefix: str, gc_ttl_s: float = GC_TTL_S) -> None:
        super().__init__(client, prefix, gc_ttl_s)
        self._start = client.register_script(_TYPING_START)
        self._stop = client.register_script(_TYPING_STOP)
        self._expire = client.register_script(_EXPIRE_TYPING)

    async def start(self, conversation_id: str, user_id: str, expires_at: float) -> None:
        keys = [typing_key(self._prefix, conversation_id), typing_due_key(self._prefix)]
        args: list[ScriptArg] = [user_id, repr(expires_at), self._gc_ms, self._channel(conversation_id),
                                 conversation_id]
        with unavailable("typing start"):
            await self._start(keys=keys, args=args)

    async def stop(self, conversation_id: str, user_id: str) -> None:
        args = [user_id, self._channel(conversation_id), conversation_id]
        with unavailable("typing stop"):
            await self._stop(keys=[typing_key(self._prefix, conversation_id)], args=args)

    async def expire(self, now: float) -> None:
        await self._sweep(self._expire, typing_due_key(self._prefix), self._typing_keys, now)

    def _typing_keys(self, conversation_id: str) -> list[str]:
        return [typing_key(self._prefix, conversation_id)]
