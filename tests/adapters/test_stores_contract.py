"""Contract suites of the snapshot stores (sessions, presence, typing) and the
in-process event log, run against every implementation.

Where a guarantee is cluster-wide ("each transition reported to exactly one
caller"), the scenario uses two handles: two independent clients for Redis,
the one shared object for memory (the embedded default is one instance).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import ujson

from tests.support.redis import RecordingSink, eventually, run
from tornado_gw.adapters.memory import (
    AllowAllMembership,
    MemoryBroker,
    MemoryLog,
    MemoryPresence,
    MemorySessions,
    MemoryTyping,
)
from tornado_gw.adapters.redis_broker import redis_client
from tornado_gw.adapters.redis_snapshots import RedisPresence, RedisSessions, RedisTyping
from tornado_gw.core.records import SessionSnapshot
from tornado_gw.settings import Settings

Handles = tuple[Any, Any]
OpenStores = Callable[[str], AbstractAsyncContextManager[Handles]]


@asynccontextmanager
async def _memory(kind: str) -> AsyncIterator[Handles]:
    store = {"sessions": MemorySessions, "presence": MemoryPresence, "typing": MemoryTyping}[kind]()
    yield store, store


_REDIS_STORES = {"sessions": RedisSessions, "presence": RedisPresence, "typing": RedisTyping}


@pytest.fixture(params=["memory", "redis"])
def open_stores(request: pytest.FixtureRequest) -> OpenStores:
    """``open_stores(kind)`` -> async context of two handles on one store."""
    if request.param == "memory":
        return _memory
    settings = Settings(redis_host=request.getfixturevalue("redis_host"),
                        prefix=request.getfixturevalue("redis_prefix"))

    @asynccontextmanager
    async def _redis(kind: str) -> AsyncIterator[Handles]:
        first = _REDIS_STORES[kind].from_settings(settings)
        second = _REDIS_STORES[kind].from_settings(settings)
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()

    return _redis


# --- sessions -------------------------------------------------------------------------------


def test_sessions_save_load_replace_delete(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("sessions") as (sessions, other):
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


def test_sessions_expire_after_ttl(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("sessions") as (sessions, _):
            await sessions.save([SessionSnapshot("s-short", "u", ("c",))], 0.2)
            await sessions.save([SessionSnapshot("s-long", "u", ("c",))], 60)
            assert await sessions.load("s-short") is not None
            loaded: list[SessionSnapshot | None] = [None]

            async def poll() -> None:
                loaded[0] = await sessions.load("s-short")

            await _until(poll, lambda: loaded[0] is None, "the short session to expire")
            assert await sessions.load("s-long") is not None

    run(scenario())


async def _until(step: Callable[[], Any], done: Callable[[], bool], what: str) -> None:
    """Repeat the async ``step`` until ``done()`` (bounded by ``eventually``)."""
    async def stepper() -> None:
        while True:
            await step()
            await asyncio.sleep(0.02)

    task = asyncio.ensure_future(stepper())
    try:
        await eventually(done, what)
    finally:
        task.cancel()


# --- presence -------------------------------------------------------------------------------


def test_presence_join_reports_first_session_only(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            assert await presence.join("c1", "alice", "s1", 100.0) is True
            assert await other.join("c1", "alice", "s2", 100.0) is False
            assert await presence.join("c1", "alice", "s1", 120.0) is False  # refresh by join
            assert await presence.join("c1", "bob", "s3", 100.0) is True
            assert await presence.join("c2", "alice", "s1", 100.0) is True  # per conversation
            assert await other.online("c1", 50.0) == ["alice", "bob"]
            assert await other.online("c2", 50.0) == ["alice"]
            assert await other.online("c3", 50.0) == []

    run(scenario())


def test_presence_expires_per_session_not_per_user(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            await presence.join("c1", "alice", "kept", 100.0)
            await presence.join("c1", "alice", "crashed", 100.0)
            await presence.join("c1", "bob", "b1", 100.0)
            await other.refresh([("c1", "alice", "kept"), ("c1", "carol", "never-joined")], 200.0)
            assert await other.expire(150.0) == [("c1", "bob")]
            assert await presence.online("c1", 150.0) == ["alice"]
            assert await presence.expire(150.0) == []
            assert await other.expire(200.0) == [("c1", "alice")]  # expires_at <= now is expired
            assert await presence.online("c1", 200.0) == []
            assert await presence.join("c1", "carol", "c1", 300.0) is True  # refresh did not add her

    run(scenario())


def test_presence_refresh_can_pull_the_expiry_in(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            await presence.join("c1", "alice", "s1", 300.0)
            await other.refresh([("c1", "alice", "s1")], 120.0)  # disconnected: grace period only
            assert await presence.online("c1", 119.0) == ["alice"]
            assert await other.expire(119.0) == []
            assert await presence.expire(120.0) == [("c1", "alice")]
            assert await presence.online("c1", 100.0) == []

    run(scenario())


def test_presence_rejoin_recreates_lost_entries_and_reports_comebacks(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            await presence.join("c1", "alice", "s1", 100.0)
            await presence.join("c1", "bob", "s2", 100.0)
            assert sorted(await other.expire(150.0)) == [("c1", "alice"), ("c1", "bob")]  # e.g. Redis away
            await presence.join("c1", "bob", "s3", 200.0)  # bob came back on his own
            entries = [("c1", "alice", "s1"), ("c1", "bob", "s2"), ("c2", "alice", "s1")]
            assert sorted(await presence.rejoin(entries, 300.0)) == [("c1", "alice"), ("c2", "alice")]
            assert await other.online("c1", 250.0) == ["alice", "bob"]
            assert await other.rejoin(entries, 400.0) == []  # refresh only: nobody new

    run(scenario())


def test_presence_online_hides_expired_sessions_before_expire_runs(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, _):
            await presence.join("c1", "alice", "s1", 100.0)
            await presence.join("c1", "bob", "s2", 300.0)
            assert await presence.online("c1", 100.0) == ["bob"]

    run(scenario())


def test_presence_leave_reports_the_last_session_only(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            await presence.join("c1", "alice", "s1", 100.0)
            await presence.join("c1", "alice", "s2", 100.0)
            assert await other.leave("c1", "alice", "s1", 50.0) is False
            assert await presence.online("c1", 50.0) == ["alice"]
            assert await other.leave("c1", "alice", "s2", 50.0) is True
            assert await other.leave("c1", "alice", "s2", 50.0) is False
            assert await other.leave("c9", "nobody", "s9", 50.0) is False
            assert await presence.online("c1", 50.0) == []
            assert await presence.expire(1000.0) == []

    run(scenario())


def test_presence_leave_counts_expired_sessions_as_gone_and_expire_does_not_repeat(
    open_stores: OpenStores,
) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            await presence.join("c1", "alice", "stale", 100.0)
            await presence.join("c1", "alice", "live", 300.0)
            assert await other.leave("c1", "alice", "live", 150.0) is True
            assert await presence.expire(1000.0) == []
            assert await presence.join("c1", "alice", "new", 400.0) is True

    run(scenario())


def test_presence_expire_reports_each_offline_user_to_one_caller(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            expected = set()
            for n in range(60):
                conversation, user = f"c{n % 6}", f"u{n}"
                await presence.join(conversation, user, "s-a", 100.0 + n % 7)
                await presence.join(conversation, user, "s-b", 100.0)
                expected.add((conversation, user))
            first, second = await asyncio.gather(presence.expire(200.0), other.expire(200.0))
            assert sorted(first + second) == sorted(expected)
            assert await presence.expire(200.0) == []

    run(scenario())


def test_presence_concurrent_leaves_report_offline_once(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            results = []
            for n in range(20):
                user = f"u{n}"
                await presence.join("c1", user, "s1", 100.0)
                await presence.join("c1", user, "s2", 100.0)
                results += await asyncio.gather(
                    presence.leave("c1", user, "s1", 50.0), other.leave("c1", user, "s2", 50.0)
                )
            assert results.count(True) == 20

    run(scenario())


def test_presence_expire_drains_more_conversations_than_one_batch(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("presence") as (presence, other):
            for n in range(1200):
                await presence.join(f"c{n}", "u", "s", 100.0)
            assert len(await other.expire(100.0)) == 1200
            assert await presence.expire(100.0) == []

    run(scenario())


# --- typing ---------------------------------------------------------------------------------


def test_typing_start_refresh_stop(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("typing") as (typing, other):
            assert await typing.start("c1", "alice", 110.0) is True
            assert await other.start("c1", "alice", 115.0) is False
            assert await typing.start("c2", "alice", 110.0) is True
            assert await other.stop("c1", "alice") is True
            assert await typing.stop("c1", "alice") is False
            assert await typing.stop("c1", "nobody") is False
            assert await typing.start("c1", "alice", 120.0) is True

    run(scenario())


def test_typing_expires_after_the_last_refresh(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("typing") as (typing, other):
            await typing.start("c1", "alice", 110.0)
            await typing.start("c1", "bob", 110.0)
            await other.start("c1", "alice", 118.0)
            assert await typing.expire(115.0) == [("c1", "bob")]
            assert await other.expire(117.9) == []
            assert await other.expire(118.0) == [("c1", "alice")]
            assert await typing.stop("c1", "alice") is False

    run(scenario())


def test_typing_expire_reports_each_entry_to_one_caller(open_stores: OpenStores) -> None:
    async def scenario() -> None:
        async with open_stores("typing") as (typing, other):
            expected = {(f"c{n % 5}", f"u{n}") for n in range(50)}
            for conversation, user in expected:
                await typing.start(conversation, user, 100.0)
            first, second = await asyncio.gather(typing.expire(100.0), other.expire(100.0))
            assert sorted(first + second) == sorted(expected)

    run(scenario())


# --- Redis only ----------------------------------------------------------------------------


def test_redis_snapshot_keys_all_carry_a_ttl(redis_host: str, redis_prefix: str) -> None:
    """Garbage collection: no key under the prefix lives forever (docs/redis.md)."""
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
        "presence:c1", "presence_due", "presence_users:c1", "session:s1", "typing:c1", "typing_due"]
    assert all(ttl > 0 for ttl in ttls.values()), ttls


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
