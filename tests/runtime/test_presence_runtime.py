"""The presence path of the runtime, in process: two gateway cores (Dispatcher and
EffectRunner) on one real Redis, each with the real Redis broker and stores, and a
transport that records what each connection would be sent (CONTRACT §3 v2)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.runtime.rig import RoundTrips, Sockets
from tests.support.redis import eventually, repeat_until, run
from tornado_gw import codec
from tornado_gw.adapters.memory import AllowAllMembership
from tornado_gw.adapters.redis_broker import RedisBroker
from tornado_gw.adapters.redis_snapshots import RedisPresence, RedisSessions, RedisTyping
from tornado_gw.adapters.wiring import NoDurableLog
from tornado_gw.core import commands as c
from tornado_gw.core.state import Gateway, Limits
from tornado_gw.runtime import effects
from tornado_gw.runtime.clock import now
from tornado_gw.runtime.dispatcher import Dispatcher
from tornado_gw.runtime.effects import Adapters, EffectRunner
from tornado_gw.runtime.feed import BrokerFeed
from tornado_gw.settings import Settings


class Instance:
    """One gateway's core and runtime, without the web layer."""

    def __init__(self, settings: Settings, limits: Limits, presence: Any = None) -> None:
        self.sockets = Sockets()
        self.dispatcher = Dispatcher(Gateway(limits))
        presence = presence or RedisPresence.from_settings(settings)
        self.adapters = Adapters(RedisBroker(settings), NoDurableLog(), RedisSessions.from_settings(settings),
                                 presence, RedisTyping.from_settings(settings), AllowAllMembership())
        self.runner = EffectRunner(self.adapters, self.sockets, self.dispatcher.submit, codec.encode,
                                   codec.decode_or_none)
        self.dispatcher.attach(self.runner.perform)

    async def start(self) -> None:
        await self.adapters.broker.start(BrokerFeed(self.dispatcher.submit, codec.decode_or_none))

    async def stop(self) -> None:
        await self.runner.stop(5.0)
        adapters = self.adapters
        for closer in (adapters.broker, adapters.sessions, adapters.presence, adapters.typing):
            await closer.close()

    def join(self, conn_id: str, user_id: str, *conversations: str) -> None:
        submit = self.dispatcher.submit
        submit(c.Connect(conn_id, now()))
        submit(c.Authenticate(conn_id, user_id, None, None, None, f"s-{conn_id}", now()))
        submit(c.Subscribe(conn_id, conversations, None, now()))

    def flush(self) -> None:
        self.dispatcher.submit(c.FlushPresence(now()))


@asynccontextmanager
async def instances(settings: Settings, count: int, presence: Any = None,
                    **limits: Any) -> AsyncIterator[list[Instance]]:
    running = [Instance(settings, Limits(**limits), presence) for _ in range(count)]
    for instance in running:
        await instance.start()
    try:
        yield running
    finally:
        for instance in running:
            await instance.stop()


async def _flushing(running: list[Instance], until: Callable[[], bool], what: str) -> None:
    """Flush the presence batches (as the clock would) until ``until()`` holds."""
    async def flush() -> None:
        for instance in running:
            instance.flush()

    await repeat_until(flush, until, what)


def test_runtime_batches_presence_across_instances_with_one_count(redis_host: str,
                                                                 redis_prefix: str) -> None:
    """Joins on B reach A's subscriber as diffs with the cluster-wide count, and a query
    pages through the store."""
    settings = Settings(redis_host=redis_host, prefix=redis_prefix)

    async def scenario() -> None:
        async with instances(settings, 2, presence_batch_ms=100.0) as (a, b):
            a.join("obs", "observer", "c1")
            await _flushing([a, b], lambda: bool(a.sockets.of("obs", "presence.diff")), "the own join")
            for n in range(5):
                b.join(f"k{n}", f"u{n}", "c1")

            def joined() -> list[str]:
                return [uid for diff in a.sockets.of("obs", "presence.diff") for uid in diff["joins"]]

            await _flushing([a, b], lambda: len(joined()) == 6, "five joins on the other instance")
            assert sorted(joined()) == ["observer", "u0", "u1", "u2", "u3", "u4"]
            assert a.sockets.of("obs", "presence.diff")[-1]["count"] == 6
            a.dispatcher.submit(c.PresenceQuery("obs", "c1", "u1", 2, now()))
            await eventually(lambda: bool(a.sockets.of("obs", "presence.state")), "a page")
            assert a.sockets.of("obs", "presence.state") == [
                {"conversation_id": "c1", "user_ids": ["u2", "u3"], "count": 6, "next": "u3"}]

    run(scenario())


def test_runtime_answers_a_presence_query_the_store_cannot_serve_with_unavailable(
        redis_host: str, redis_prefix: str) -> None:
    settings = Settings(redis_host=redis_host, prefix=redis_prefix)
    unreachable = RedisPresence.from_settings(Settings(redis_host="127.0.0.1:1", prefix=redis_prefix))

    async def scenario() -> None:
        async with instances(settings, 1, unreachable) as (a,):
            a.join("obs", "observer", "c1")
            await eventually(lambda: bool(a.sockets.of("obs", "subscribed")), "the subscription")
            a.dispatcher.submit(c.PresenceQuery("obs", "c1", None, 10, now()))
            await eventually(lambda: bool(a.sockets.of("obs", "error")), "the error")
            assert a.sockets.of("obs", "error") == [{"code": "unavailable", "ref_type": "presence.query",
                                                    "message": "try again later: presence could not be read"}]

    run(scenario())


class CountingPresence(RedisPresence):
    """The Redis presence store, counting the join calls that reach it."""

    join_calls = 0

    async def rejoin(self, entries: Sequence[tuple[str, str, str]], expires_at: float) -> None:
        type(self).join_calls += 1
        await super().rejoin(entries, expires_at)


def test_runtime_joins_that_pile_up_reach_the_store_together(redis_host: str, redis_prefix: str) -> None:
    """A join storm: the joins queued behind a running presence write go as one store call
    (not one each), and every one of them is announced with the right count."""
    settings = Settings(redis_host=redis_host, prefix=redis_prefix)
    presence = CountingPresence.from_settings(settings)

    async def scenario() -> None:
        async with instances(settings, 1, presence, presence_batch_ms=50.0) as (a,):
            for n in range(30):
                a.join(f"k{n}", f"u{n:02}", "c1")

            def joined() -> list[str]:
                return [uid for diff in a.sockets.of("k0", "presence.diff") for uid in diff["joins"]]

            await _flushing([a], lambda: len(joined()) == 30, "thirty joins")
            assert sorted(joined()) == [f"u{n:02}" for n in range(30)]
            assert a.sockets.of("k0", "presence.diff")[-1]["count"] == 30
            assert CountingPresence.join_calls <= 3  # the first alone, the others merged behind it

    run(scenario())


def test_runtime_a_storm_of_joins_into_new_rooms_fits_the_presence_lane(
        redis_host: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each connection joins a room of its own: a join, then an announcement of the new room,
    alternate in the one presence lane. Each merges with its own kind past the other (they
    touch other rooms), so the lane stays short; merging only with the last write queued
    kept one store call per write, and at 800 connects a second on Redis most joins were
    refused ("store lane full") and never announced."""
    monkeypatch.setattr(effects, "LANE_DEPTH", 16)
    settings = Settings(redis_host=redis_host, prefix=redis_prefix)
    rooms = [f"r{n}" for n in range(200)]
    slow = RoundTrips(RedisPresence.from_settings(settings), 0.005)  # a store a little farther away

    async def scenario() -> None:
        async with instances(settings, 1, slow) as (a,):
            for n, room in enumerate(rooms):
                a.join(f"k{n}", f"u{n}", room)
            store, counts = a.adapters.presence, []

            async def read_counts() -> None:
                counts[:] = [(await store.page(room, None, 10)).count for room in rooms]

            await repeat_until(read_counts, lambda: counts == [1] * len(rooms), "every join in Redis")
            # nothing refused: a refused announcement leaves its room's count unknown until asked again
            assert [r.getMessage() for r in caplog.records if "failed" in r.getMessage()] == []

    run(scenario())
