"""Contract suite of ``ports.ConnectionSlots`` (``max_connections_per_user``), run against the
in-process slots and Redis. For Redis, two clients stand for two instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from tests.support.redis import run
from tornado_gw.adapters.memory_slots import MemorySlots
from tornado_gw.adapters.redis_slots import RedisSlots
from tornado_gw.core.ids import connections_key
from tornado_gw.settings import Settings

TTL_S = 30.0
NOW = 1_700_000_000.0
OpenSlots = Callable[[], AbstractAsyncContextManager[tuple[Any, Any]]]


@pytest.fixture(params=["memory", "redis"])
def open_slots(request: pytest.FixtureRequest) -> OpenSlots:
    if request.param == "memory":
        @asynccontextmanager
        async def memory() -> AsyncIterator[tuple[Any, Any]]:
            slots = MemorySlots(TTL_S)
            yield slots, slots

        return memory
    settings = Settings(redis_host=request.getfixturevalue("redis_host"),
                        prefix=request.getfixturevalue("redis_prefix"), presence_ttl_s=TTL_S)

    @asynccontextmanager
    async def redis() -> AsyncIterator[tuple[Any, Any]]:
        first, second = RedisSlots.from_settings(settings), RedisSlots.from_settings(settings)
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()

    return redis


def test_claims_up_to_the_limit_across_instances_then_refuses(open_slots: OpenSlots) -> None:
    async def scenario() -> None:
        async with open_slots() as (one, two):
            assert await one.claim("alice", "s1", 2, NOW)
            assert await two.claim("alice", "s2", 2, NOW)
            assert not await one.claim("alice", "s3", 2, NOW)
            assert await two.claim("alice", "s2", 2, NOW)  # a slot already held is kept
            assert await one.claim("bob", "s4", 2, NOW)  # per user

    run(scenario())


def test_claim_many_answers_each_claim_in_order_and_the_limit_holds_within_one_call(
        open_slots: OpenSlots) -> None:
    async def scenario() -> None:
        async with open_slots() as (one, two):
            assert await one.claim("alice", "s0", 3, NOW)
            asked = [("alice", "s1", 3), ("bob", "s4", 1), ("alice", "s2", 3), ("alice", "s0", 3),
                     ("alice", "s3", 3), ("bob", "s5", 1)]
            assert await two.claim_many(asked, NOW) == [True, True, True, True, False, False]
            assert await two.claim_many([], NOW) == []

    run(scenario())


def test_a_released_slot_frees_room_and_release_is_idempotent(open_slots: OpenSlots) -> None:
    async def scenario() -> None:
        async with open_slots() as (one, two):
            assert await one.claim("alice", "s1", 1, NOW)
            await two.release("alice", "s1")
            await two.release("alice", "s1")
            await two.release("nobody", "s9")
            assert await two.claim("alice", "s2", 1, NOW)

    run(scenario())


def test_slots_expire_unless_refreshed_so_a_dead_instance_stops_counting(open_slots: OpenSlots) -> None:
    async def scenario() -> None:
        async with open_slots() as (live, dead):
            assert await live.claim("alice", "kept", 2, NOW)
            assert await dead.claim("alice", "lost", 2, NOW)
            later = NOW + TTL_S * 0.9
            await live.refresh([("alice", "kept"), ("alice", "released-meanwhile")], later)
            assert not await live.claim("alice", "new", 2, later)
            after = NOW + TTL_S + 1  # "lost" was never refreshed: it no longer counts
            assert await live.claim("alice", "new", 2, after)
            assert not await live.claim("alice", "third", 2, after)  # "kept" still does

    run(scenario())


def test_redis_keys_carry_a_ttl_and_refresh_adds_no_slot(redis_host: str, redis_prefix: str) -> None:
    settings = Settings(redis_host=redis_host, prefix=redis_prefix, presence_ttl_s=TTL_S)

    async def scenario() -> None:
        slots = RedisSlots.from_settings(settings)
        client = slots._redis
        try:
            await slots.refresh([("carol", "never-claimed")], NOW)
            assert await client.exists(connections_key(redis_prefix, "carol")) == 0
            assert await slots.claim("alice", "s1", 5, NOW)
            ttl_ms = await client.pttl(connections_key(redis_prefix, "alice"))
            assert 0 < ttl_ms <= TTL_S * 1000
        finally:
            await slots.close()

    run(scenario())


def test_concurrent_claims_never_pass_the_limit(open_slots: OpenSlots) -> None:
    async def scenario() -> None:
        async with open_slots() as (one, two):
            handles = [one, two] * 10
            taken = await asyncio.gather(*(h.claim("alice", f"s{n}", 3, NOW) for n, h in enumerate(handles)))
            assert sum(taken) == 3

    run(scenario())


def test_a_batch_of_claims_answers_each_in_order_like_single_claims(open_slots: OpenSlots) -> None:
    async def scenario() -> None:
        async with open_slots() as (one, two):
            assert await two.claim("alice", "s0", 2, NOW)
            taken = await one.claim_many([("alice", "s1", 2), ("bob", "s2", 1), ("alice", "s3", 2),
                                          ("bob", "s2", 1), ("bob", "s4", 1)], NOW)
            assert taken == [True, True, False, True, False]  # s0 and s1 fill alice's two slots
            assert await one.claim_many([], NOW) == []

    run(scenario())
