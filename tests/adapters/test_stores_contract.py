"""Contract suites of the snapshot stores (sessions, presence, typing) and the
in-process event log, run against every implementation.

Where a guarantee is cluster-wide ("each transition announced exactly once"),
the scenario uses two handles: two independent clients for Redis, the one
shared object for memory (the embedded default is one instance). What the
stores announce is heard on the broker channels (``Heard``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import ujson

from tests.support.redis import RecordingSink, eventually, repeat_until, run
from tests.support.tcp_proxy import TcpProxy
from tornado_gw.adapters.memory import (
    AllowAllMembership,
    MemoryBroker,
    MemoryLog,
    MemoryPresence,
    MemorySessions,
    MemoryTyping,
)
from tornado_gw.adapters.redis_broker import redis_client
from tornado_gw.adapters.redis_snapshots import CHUNK_ENTRIES, RedisPresence, RedisSessions, RedisTyping
from tornado_gw.core.records import PresencePage, SessionSnapshot
from tornado_gw.settings import Settings


class Heard:
    """What the stores announced, decoded, in order (presence transitions, typing frames)."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def announce(self, channel: str, data: bytes) -> None:
        frame = ujson.loads(data)
        assert channel == "conv:" + frame["payload"]["conversation_id"]
        self.frames.append(frame)

    async def sync(self) -> None:
        """Return once every announcement made so far has been heard."""

    def take(self) -> list[tuple[Any, ...]]:
        """(cid, joins, leaves, count[, users]) per presence transition, (type, cid, user)
        per typing frame, since the last ``take``."""
        frames, self.frames = self.frames, []
        return [_summary(frame) for frame in frames]


def _summary(frame: dict[str, Any]) -> tuple[Any, ...]:
    p = frame["payload"]
    if frame["type"] == "presence.transition":
        users = (p["users"],) if "users" in p else ()
        return (p["conversation_id"], p["joins"], p["leaves"], p["count"], *users)
    return (frame["type"], p["conversation_id"], p["user_id"])


class _RedisHeard(Heard):
    """Listens on ``{prefix}conv:*``; ``sync`` publishes a marker and waits for it (Redis
    delivers in execution order, so everything published before it arrived first)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._prefix = settings.prefix
        self._client = redis_client(settings)
        self._pubsub = self._client.pubsub()
        self._marks = 0
        self._heard_marks = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._pubsub.psubscribe(self._prefix + "conv:*")
        self._task = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] != "pmessage":
                continue
            channel = message["channel"].decode()[len(self._prefix):]
            if channel == "conv:-sync":
                self._heard_marks += 1
            else:
                self.announce(channel, message["data"])

    async def sync(self) -> None:
        self._marks += 1
        await self._client.publish(self._prefix + "conv:-sync", b"")
        await eventually(lambda: self._heard_marks >= self._marks, "the store announcements")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._pubsub.aclose()
        await self._client.aclose()


Handles = tuple[Any, Any, Heard]
OpenStores = Callable[[str], AbstractAsyncContextManager[Handles]]
_MEMORY_STORES: dict[str, Callable[[Any], Any]] = {"presence": MemoryPresence, "typing": MemoryTyping}
_REDIS_STORES = {"sessions": RedisSessions, "presence": RedisPresence, "typing": RedisTyping}


@asynccontextmanager
async def _memory(kind: str) -> AsyncIterator[Handles]:
    heard = Heard()
    store = MemorySessions() if kind == "sessions" else _MEMORY_STORES[kind](heard.announce)
    yield store, store, heard


@pytest.fixture(params=["memory", "redis"])
def open_stores(request: pytest.FixtureRequest) -> OpenStores:
    """``open_stores(kind)`` -> async context of two handles on one store, and what it announced."""
    if request.param == "memory":
        return _memory
    settings = Settings(redis_host=request.getfixturevalue("redis_host"),
                        prefix=request.getfixturevalue("redis_prefix"))

    @asynccontextmanager
    async def _redis(kind: str) -> AsyncIterator[Handles]:
        first = _REDIS_STORES[kind].from_settings(settings)
        second = _REDIS_STORES[kind].from_settings(settings)
        heard = _RedisHeard(settings)
        await heard.start()
        try:
            yield first, second, heard
        finally:
            await heard.close()
            await first.close()
            await second.close()

    return _redis


# --- sessions -------------------------------------------------------------------------------


def test_sessions_save_load_replace_delete(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("sessions") as (sessions, other, _):
            snapshot = SessionSnapshot("s-1", "u-1", ("c1", "c:2"))
            await sessions.save([snapshot], 60)
            assert await other.load("s-1") == snapshot
            assert await other.load("s-unknown") is None
            replaced = SessionSnapshot("s-1", "u-1", ())
            await sessions.save([replaced], 60)
            assert await other.load("s-1") == replaced
            await other.delete("s-1")
            assert await sessions.load("s-1") is None
            await sessions.delete("s-1")  # deleting twice is fine

    run(scenario())


def test_sessions_load_many_answers_each_id_in_order(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("sessions") as (sessions, other, _):
            snapshots = [SessionSnapshot(f"s-{n}", f"u-{n % 3}", (f"c{n}",)) for n in range(5)]
            await sessions.save(snapshots, 60)
            asked = ["s-3", "s-unknown", "s-0", "s-3", "s-4"]
            expected = [snapshots[3], None, snapshots[0], snapshots[3], snapshots[4]]
            assert await other.load_many(asked) == expected
            assert await other.load_many([]) == []

    run(scenario())


def test_sessions_expire_after_ttl(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("sessions") as (sessions, _, _):
            await sessions.save([SessionSnapshot("s-short", "u", ("c",))], 0.2)
            await sessions.save([SessionSnapshot("s-long", "u", ("c",))], 60)
            assert await sessions.load("s-short") is not None
            loaded: list[SessionSnapshot | None] = [None]

            async def poll() -> None:
                loaded[0] = await sessions.load("s-short")

            await repeat_until(poll, lambda: loaded[0] is None, "the short session to expire")
            assert await sessions.load("s-long") is not None

    run(scenario())


def test_sessions_delete_user_ends_every_session_of_the_user_only(open_stores: OpenStores) -> None:
    """CONTRACT §2 ``POST /disconnect``: no session of the user can be resumed afterwards,
    whichever handle saved it and however it was saved; other users keep theirs."""
    async def scenario() -> None:
        async with open_stores("sessions") as (sessions, other, _):
            closed = SessionSnapshot("s-closed", "alice", ("c1",))
            await sessions.save([closed], 60)  # a connection that closed earlier
            await other.save([SessionSnapshot("s-live", "alice", ("c2",)),
                              SessionSnapshot("s-bob", "bob", ("c1",))], 120)  # a periodic batch
            await other.save([SessionSnapshot("s-closed", "alice", ())], 30)  # saved again, shorter
            await sessions.delete("s-live")
            await other.delete_user("alice")
            assert [await sessions.load(s) for s in ("s-closed", "s-live")] == [None, None]
            assert await sessions.load("s-bob") == SessionSnapshot("s-bob", "bob", ("c1",))
            await sessions.delete_user("alice")  # twice is fine
            await sessions.delete_user("nobody")
            await sessions.save([closed], 60)  # a new session after it is resumable again
            assert await other.load("s-closed") == closed

    run(scenario())


# --- presence -------------------------------------------------------------------------------


def test_presence_join_announces_first_session_only(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            await presence.join("c1", "alice", "s1", 100.0)
            await other.join("c1", "alice", "s2", 100.0)
            await presence.join("c1", "alice", "s1", 120.0)  # refresh by join
            await presence.join("c1", "bob", "s3", 100.0)
            await presence.join("c2", "alice", "s1", 100.0)  # per conversation
            await heard.sync()
            assert heard.take() == [("c1", ["alice"], [], 1), ("c1", ["bob"], [], 2),
                                    ("c2", ["alice"], [], 1)]
            assert await other.page("c1", None, 10) == PresencePage(("alice", "bob"), 2)
            assert await other.page("c2", None, 10) == PresencePage(("alice",), 1)
            assert await other.page("c3", None, 10) == PresencePage((), 0)

    run(scenario())


def test_presence_pages_by_id_in_code_point_order(open_stores: OpenStores) -> None:
    """CONTRACT §3: sorted by id, at most ``limit``, after ``after``; each page one call."""
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, _):
            users = ["b", "B", "a-1", "a", "a:2", "z@x", "0"]
            await presence.rejoin([("c1", user, "s") for user in users], 100.0)
            assert await other.page("c1", None, 3) == PresencePage(("0", "B", "a"), 7)
            assert await other.page("c1", "a", 3) == PresencePage(("a-1", "a:2", "b"), 7)
            assert await other.page("c1", "b", 3) == PresencePage(("z@x",), 7)
            assert await other.page("c1", "z@x", 3) == PresencePage((), 7)
            assert await other.page("c1", "a0", 1) == PresencePage(("a:2",), 7)  # any id works as after

    run(scenario())


def test_presence_announce_gives_the_count_in_order_and_the_list_when_asked(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            await other.announce("c1", 0)
            await presence.rejoin([("c1", "bob", "s1"), ("c1", "alice", "s2"), ("c1", "carol", "s3")], 100.0)
            await other.announce("c1", 0)
            await other.announce("c1", 2)
            await heard.sync()
            assert heard.take() == [("c1", [], [], 0), ("c1", ["bob", "alice", "carol"], [], 3),
                                    ("c1", [], [], 3), ("c1", [], [], 3, ["alice", "bob"])]

    run(scenario())


def test_presence_expires_per_session_not_per_user(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            await presence.join("c1", "alice", "kept", 100.0)
            await presence.join("c1", "alice", "crashed", 100.0)
            await presence.join("c1", "bob", "b1", 100.0)
            await other.refresh([("c1", "alice", "kept"), ("c1", "carol", "never-joined")], 200.0)
            await heard.sync()
            heard.take()
            await other.expire(150.0)
            await presence.expire(150.0)
            await heard.sync()
            assert heard.take() == [("c1", [], ["bob"], 1)]
            assert (await presence.page("c1", None, 10)).user_ids == ("alice",)
            await other.expire(200.0)  # expires_at <= now is expired
            await presence.join("c1", "carol", "c1", 300.0)  # refresh did not add her
            await heard.sync()
            assert heard.take() == [("c1", [], ["alice"], 0), ("c1", ["carol"], [], 1)]

    run(scenario())


def test_presence_refresh_can_pull_the_expiry_in(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            await presence.join("c1", "alice", "s1", 300.0)
            await other.refresh([("c1", "alice", "s1")], 120.0)  # disconnected: grace period only
            await other.expire(119.0)
            await heard.sync()
            assert heard.take() == [("c1", ["alice"], [], 1)]
            await presence.expire(120.0)
            await heard.sync()
            assert heard.take() == [("c1", [], ["alice"], 0)]
            assert await presence.page("c1", None, 10) == PresencePage((), 0)

    run(scenario())


def test_presence_rejoin_recreates_lost_entries_and_announces_comebacks(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            await presence.join("c1", "alice", "s1", 100.0)
            await presence.join("c1", "bob", "s2", 100.0)
            await other.expire(150.0)  # e.g. Redis away
            await presence.join("c1", "bob", "s3", 200.0)  # bob came back on his own
            await heard.sync()
            heard.take()
            entries = [("c1", "alice", "s1"), ("c1", "bob", "s2"), ("c2", "alice", "s1")]
            await presence.rejoin(entries, 300.0)
            await heard.sync()
            assert heard.take() == [("c1", ["alice"], [], 2), ("c2", ["alice"], [], 1)]
            await other.rejoin(entries, 400.0)  # refresh only: nobody new
            await heard.sync()
            assert heard.take() == []

    run(scenario())


def test_presence_rejoin_and_expire_go_in_bounded_chunks(open_stores: OpenStores) -> None:
    """ISSUE 9.4: thousands of entries, one conversation or many, every one announced once."""
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            entries = [("c1", f"u{n:04}", "s") for n in range(1200)]
            entries += [(f"c-{n}", "u", "s") for n in range(700)]
            await presence.rejoin(entries, 100.0)
            await heard.sync()
            joins = heard.take()
            assert sorted(uid for cid, j, _, _ in joins if cid == "c1" for uid in j) == [
                uid for _, uid, _ in entries[:1200]]
            assert len([t for t in joins if t[0] != "c1"]) == 700
            assert joins[-1][3] == 1 and max(t[3] for t in joins if t[0] == "c1") == 1200
            await other.expire(100.0)
            await heard.sync()
            leaves = heard.take()
            assert sorted(uid for cid, _, left, _ in leaves if cid == "c1" for uid in left) == [
                uid for _, uid, _ in entries[:1200]]
            assert len([t for t in leaves if t[0] != "c1"]) == 700
            assert await presence.page("c1", None, 10) == PresencePage((), 0)

    run(scenario())


def test_presence_leave_announces_the_last_session_only(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            await presence.join("c1", "alice", "s1", 100.0)
            await presence.join("c1", "alice", "s2", 100.0)
            await other.leave("c1", "alice", "s1", 50.0)
            assert (await presence.page("c1", None, 10)).user_ids == ("alice",)
            await other.leave("c1", "alice", "s2", 50.0)
            await other.leave("c1", "alice", "s2", 50.0)
            await other.leave("c9", "nobody", "s9", 50.0)
            await presence.expire(1000.0)
            await heard.sync()
            assert heard.take() == [("c1", ["alice"], [], 1), ("c1", [], ["alice"], 0)]

    run(scenario())


def test_presence_leave_counts_expired_sessions_as_gone_and_expire_does_not_repeat(
    open_stores: OpenStores,
) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            await presence.join("c1", "alice", "stale", 100.0)
            await presence.join("c1", "alice", "live", 300.0)
            await other.leave("c1", "alice", "live", 150.0)
            await presence.expire(1000.0)
            await presence.join("c1", "alice", "new", 400.0)
            await heard.sync()
            assert heard.take() == [("c1", ["alice"], [], 1), ("c1", [], ["alice"], 0),
                                    ("c1", ["alice"], [], 1)]

    run(scenario())


def test_presence_expire_announces_each_offline_user_once(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            expected = set()
            for n in range(60):
                conversation, user = f"c{n % 6}", f"u{n}"
                await presence.join(conversation, user, "s-a", 100.0 + n % 7)
                await presence.join(conversation, user, "s-b", 100.0)
                expected.add((conversation, user))
            await heard.sync()
            heard.take()
            await asyncio.gather(presence.expire(200.0), other.expire(200.0))
            await presence.expire(200.0)
            await heard.sync()
            left = [(cid, uid) for cid, _, leaves, _ in heard.take() for uid in leaves]
            assert sorted(left) == sorted(expected)

    run(scenario())


def test_presence_concurrent_leaves_announce_offline_once(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other, heard):
            for n in range(20):
                user = f"u{n}"
                await presence.join("c1", user, "s1", 100.0)
                await presence.join("c1", user, "s2", 100.0)
                await asyncio.gather(presence.leave("c1", user, "s1", 50.0),
                                     other.leave("c1", user, "s2", 50.0))
            await heard.sync()
            transitions = heard.take()
            assert [t[2] for t in transitions if t[2]] == [[f"u{n}"] for n in range(20)]
            assert [t[3] for t in transitions] == [1, 0] * 20  # the count after each, in order

    run(scenario())


# --- typing ---------------------------------------------------------------------------------


def test_typing_start_refresh_stop(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("typing") as (typing, other, heard):
            await typing.start("c1", "alice", 110.0)
            await other.start("c1", "alice", 115.0)
            await typing.start("c2", "alice", 110.0)
            await other.stop("c1", "alice")
            await typing.stop("c1", "alice")
            await typing.stop("c1", "nobody")
            await typing.start("c1", "alice", 120.0)
            await heard.sync()
            assert heard.take() == [("typing.start", "c1", "alice"), ("typing.start", "c2", "alice"),
                                    ("typing.stop", "c1", "alice"), ("typing.start", "c1", "alice")]

    run(scenario())


def test_typing_expires_after_the_last_refresh(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("typing") as (typing, other, heard):
            await typing.start("c1", "alice", 110.0)
            await typing.start("c1", "bob", 110.0)
            await other.start("c1", "alice", 118.0)
            await heard.sync()
            heard.take()
            await typing.expire(115.0)
            await other.expire(117.9)
            await heard.sync()
            assert heard.take() == [("typing.stop", "c1", "bob")]
            await other.expire(118.0)
            await typing.stop("c1", "alice")
            await heard.sync()
            assert heard.take() == [("typing.stop", "c1", "alice")]

    run(scenario())


def test_typing_expire_announces_each_entry_once(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("typing") as (typing, other, heard):
            expected = {(f"c{n % 5}", f"u{n}") for n in range(50)}
            for conversation, user in expected:
                await typing.start(conversation, user, 100.0)
            await heard.sync()
            heard.take()
            await asyncio.gather(typing.expire(100.0), other.expire(100.0))
            await heard.sync()
            assert sorted((cid, uid) for _, cid, uid in heard.take()) == sorted(expected)

    run(scenario())


# --- Redis only ----------------------------------------------------------------------------


def test_redis_snapshot_keys_all_carry_a_ttl_and_one_hash_tag_per_store(redis_host: str,
                                                                         redis_prefix: str) -> None:
    """Garbage collection: no key under the prefix lives forever (docs/redis.md); the keys
    of one store share a hash tag, so each script touches one Cluster slot (ISSUE 9.11)."""
    settings = Settings(redis_host=redis_host, prefix=redis_prefix)

    async def scenario() -> dict[bytes, int]:
        client = redis_client(settings)
        stores = [RedisSessions(client, redis_prefix), RedisPresence(client, redis_prefix),
                  RedisTyping(client, redis_prefix)]
        sessions, presence, typing = stores
        try:
            await sessions.save([SessionSnapshot("s1", "u1", ("c1",))], 120)
            await presence.join("c1", "u1", "s1", 100.0)
            await presence.refresh([("c1", "u1", "s1")], 200.0)
            await typing.start("c1", "u1", 100.0)
            return {key: await client.pttl(key) async for key in client.scan_iter(match=redis_prefix + "*")}
        finally:
            await client.aclose()

    ttls = run(scenario())
    assert sorted(key.decode()[len(redis_prefix):] for key in ttls) == [
        "session:s1", "user-sessions:u1", "{presence}:due", "{presence}:ids:c1", "{presence}:sessions:c1",
        "{presence}:users:c1", "{typing}:c1", "{typing}:due"]
    assert all(ttl > 0 for ttl in ttls.values()), ttls


def test_redis_user_session_index_drops_expired_ids_and_expires_with_the_last_snapshot(
        redis_host: str, redis_prefix: str) -> None:
    """Issue 9 (nothing grows for ever): a user who is always online keeps saving, so the
    index must shed the ids of sessions that expired rather than wait for a key TTL."""
    settings = Settings(redis_host=redis_host, prefix=redis_prefix)
    index = redis_prefix + "user-sessions:alice"

    async def scenario() -> tuple[list[bytes], int, int]:
        client = redis_client(settings)
        sessions = RedisSessions(client, redis_prefix)
        try:
            await sessions.save([SessionSnapshot(f"s{n}", "alice", ()) for n in range(50)], 0.1)
            await asyncio.sleep(1.3)  # past their expiry and the index's slack
            await sessions.save([SessionSnapshot("s-new", "alice", ())], 5)
            members = await client.zrange(index, 0, -1)
            snapshot_ttl = await client.pttl(redis_prefix + "session:s-new")
            return members, await client.pttl(index), snapshot_ttl
        finally:
            await client.aclose()

    members, index_ttl, snapshot_ttl = run(scenario())
    assert members == [b"s-new"]
    assert snapshot_ttl <= index_ttl <= snapshot_ttl + 1100  # the entry outlives its snapshot, briefly


def test_redis_sessions_read_the_snapshots_of_the_previous_version(redis_host: str,
                                                                   redis_prefix: str) -> None:
    """A rolling upgrade: snapshots written before issue 10 (no ``v``) still resume; this
    version writes ``v``; one from a newer version, or malformed, gives a new session."""
    settings = Settings(redis_host=redis_host, prefix=redis_prefix)

    async def scenario() -> tuple[Any, ...]:
        client = redis_client(settings)
        sessions = RedisSessions(client, redis_prefix)
        try:
            old = {"user_id": "u1", "conversation_ids": ["c1", "c2"], "presence_id": "p-old"}
            await client.set(f"{redis_prefix}session:s-old", ujson.dumps(old), px=60_000)
            await client.set(f"{redis_prefix}session:s-new", ujson.dumps({**old, "v": 99}), px=60_000)
            await client.set(f"{redis_prefix}session:s-bad", b'{"user_id": 5}', px=60_000)
            await sessions.save([SessionSnapshot("s-now", "u2", ("c3",), "p-now")], 60)
            written = ujson.loads(await client.get(f"{redis_prefix}session:s-now"))
            return (await sessions.load("s-old"), await sessions.load("s-new"), await sessions.load("s-bad"),
                    written, await sessions.load("s-now"))
        finally:
            await client.aclose()

    old, newer, bad, written, now = run(scenario())
    assert old == SessionSnapshot("s-old", "u1", ("c1", "c2"), "p-old")
    assert newer is None and bad is None
    assert written == {"v": 2, "user_id": "u2", "conversation_ids": ["c3"], "presence_id": "p-now"}
    assert now == SessionSnapshot("s-now", "u2", ("c3",), "p-now")


def test_redis_presence_work_is_split_into_bounded_script_calls(redis_host: str, redis_prefix: str) -> None:
    """ISSUE 9.4: no script call handles more than ``CHUNK_ENTRIES`` entries, so the refresh
    and the sweep never block Redis for long, however many entries there are."""
    settings = Settings(redis_host=redis_host, prefix=redis_prefix)
    sizes: dict[str, list[int]] = {"join": [], "expire": []}

    async def scenario() -> None:
        presence = RedisPresence.from_settings(settings)
        join, expire = presence._join, presence._expire

        async def counted_join(keys: list[str], args: list[object]) -> Any:
            conversations = (len(keys) - 1) // 3  # ARGV: 2, then 3 per conversation and 2 per entry
            sizes["join"].append((len(args) - 2 - 3 * conversations) // 2)
            return await join(keys=keys, args=args)

        async def counted_expire(keys: list[str], args: list[object]) -> Any:
            sizes["expire"].append(int(args[1]))  # the entry budget of the call
            return await expire(keys=keys, args=args)

        presence._join, presence._expire = counted_join, counted_expire  # type: ignore[assignment]
        try:
            entries = [("c1", f"u{n:04}", "s") for n in range(1100)]
            await presence.rejoin(entries, 100.0)
            await presence.expire(100.0)
            assert await presence.page("c1", None, 10) == PresencePage((), 0)
        finally:
            await presence.close()

    run(scenario())
    assert sizes["join"] == [CHUNK_ENTRIES, CHUNK_ENTRIES, 1100 - 2 * CHUNK_ENTRIES]
    assert sizes["expire"] == [CHUNK_ENTRIES] * 3  # one conversation: three calls drain it


def test_redis_transition_whose_reply_is_lost_is_still_announced_once(redis_host: str,
                                                                       redis_prefix: str) -> None:
    """ISSUE 9.5: the script ran but the caller timed out waiting for its reply; the
    announcement went out with the script, and the caller's retry adds none."""
    async def scenario() -> None:
        async with TcpProxy(redis_host) as proxy:
            settings = Settings(redis_host=redis_host, prefix=redis_prefix)
            heard = _RedisHeard(settings)
            await heard.start()
            proxied = Settings(redis_host=proxy.address, prefix=redis_prefix)
            presence, typing = RedisPresence.from_settings(proxied), RedisTyping.from_settings(proxied)
            try:
                await presence.join("c1", "alice", "s1", 100.0)
                await typing.start("c1", "alice", 100.0)
                lost = (lambda: presence.join("c1", "bob", "s2", 100.0),
                        lambda: presence.leave("c1", "alice", "s1", 50.0), lambda: typing.stop("c1", "alice"))
                for call in lost:
                    await presence.page("c1", None, 1)  # both clients connected: the call goes out
                    await typing.stop("c1", "nobody")
                    await proxy.mute_replies()
                    with pytest.raises(asyncio.TimeoutError):
                        await asyncio.wait_for(call(), 0.3)
                    await proxy.restore()
                await heard.sync()  # announced by the scripts whose replies never came back
                assert heard.take() == [("c1", ["alice"], [], 1), ("typing.start", "c1", "alice"),
                                        ("c1", ["bob"], [], 2), ("c1", [], ["alice"], 1),
                                        ("typing.stop", "c1", "alice")]
                await presence.join("c1", "bob", "s2", 100.0)  # the caller retries: idempotent
                await presence.leave("c1", "alice", "s1", 50.0)
                await typing.stop("c1", "alice")
                await heard.sync()
                assert heard.take() == []
            finally:
                await heard.close()
                await presence.close()
                await typing.close()

    run(scenario())


# --- the in-process event log (embedded default) ----------------------------------------------


def test_memory_log_numbers_publishes_and_replays_by_channel() -> None:
    async def scenario() -> None:
        broker, sink = MemoryBroker(), RecordingSink()
        await broker.start(sink)
        log = MemoryLog(broker, max_events=100)
        broker.subscribe("conv:1")
        assert await log.publish("conv:1", "message.new", {"text": "hé/llo"}) == {"seq": 1}
        assert await log.publish("conv:2", "message.new", {}) == {"seq": 2}
        assert await log.publish("conv:1", "x", None) == {"seq": 3}
        await eventually(lambda: len(sink.messages("conv:1")) == 2, "both conv:1 frames")
        assert ujson.loads(sink.messages("conv:1")[0]) == {
            "type": "message.new", "payload": {"text": "hé/llo"}, "seq": 1}
        assert b" " not in sink.messages("conv:1")[1]  # compact
        events = await log.read_after(["conv:1", "user:9"], 0, 10)
        assert [(e.seq, e.channel) for e in events] == [(1, "conv:1"), (3, "conv:1")]
        assert events[1].data == sink.messages("conv:1")[1]
        assert [e.seq for e in await log.read_after(["conv:1", "conv:2"], 1, 10)] == [2, 3]
        assert await log.read_after(["conv:1"], 3, 10) == []
        assert await log.read_after(["conv:1"], 99, 10) == []  # a last_seq from the future

    run(scenario())


def test_allow_all_membership_grants_every_conversation() -> None:
    granted = run(AllowAllMembership().allowed("u", ["c1", "c2", "c1"]))
    assert granted == {"c1", "c2"}
