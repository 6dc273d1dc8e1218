"""``runtime/slots.py`` in-process with the real in-process slots: claims answered as commands,
held slots refreshed, a slot released while its claim was out given back, a failing store
letting connections in."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tornado_gw.adapters.memory_slots import MemorySlots
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.runtime.clock import now
from tornado_gw.runtime.slots import CLAIM_BATCH, CLAIM_LINGER_S, SlotKeeper


class SlowSlots(MemorySlots):
    """The in-process slots behind a gate: a claim waits until the test opens it."""

    def __init__(self, ttl_s: float) -> None:
        super().__init__(ttl_s)
        self.gate = asyncio.Event()

    async def claim(self, user_id: str, slot_id: str, limit: int, now: float) -> bool:
        await self.gate.wait()
        return await super().claim(user_id, slot_id, limit, now)


class BatchedSlots(SlowSlots):
    """Records the size of every batch the keeper hands the store."""

    def __init__(self, ttl_s: float) -> None:
        super().__init__(ttl_s)
        self.batches: list[int] = []

    async def claim_many(self, claims: Sequence[tuple[str, str, int]], now: float) -> list[bool]:
        self.batches.append(len(claims))
        return await super().claim_many(claims, now)


class BrokenSlots(MemorySlots):
    async def claim(self, user_id: str, slot_id: str, limit: int, now: float) -> bool:
        raise ConnectionError("store unreachable")


def _keeper(slots: MemorySlots, ttl_s: float = 30.0) -> tuple[SlotKeeper, list[c.Command]]:
    answers: list[c.Command] = []
    return SlotKeeper(slots, answers.append, ttl_s), answers


def claims(answers: list[c.Command]) -> list[tuple[str, bool]]:
    return [(a.conn_id, a.granted) for a in answers if isinstance(a, c.ConnectionClaimed)]


async def _settle() -> None:
    """Long enough for a batch of claims to leave (they wait ``CLAIM_LINGER_S`` for company)."""
    await asyncio.sleep(CLAIM_LINGER_S + 0.05)


def test_claims_are_answered_and_the_cap_holds() -> None:
    async def scenario() -> None:
        keeper, answers = _keeper(MemorySlots(30.0))
        for n in range(3):
            keeper.perform(fx.ClaimConnection(f"k{n}", "alice", f"s{n}", 2))
        await _settle()
        assert claims(answers) == [("k0", True), ("k1", True), ("k2", False)]

    asyncio.run(scenario())


def test_held_slots_are_refreshed_until_released() -> None:
    async def scenario() -> None:
        slots = MemorySlots(0.3)
        keeper, _ = _keeper(slots, ttl_s=0.3)
        keeper.start()
        try:
            keeper.perform(fx.ClaimConnection("k1", "alice", "s1", 1))
            await asyncio.sleep(0.6)  # twice the TTL: alive only because it was refreshed
            assert not await slots.claim("alice", "s2", 1, now())
            keeper.perform(fx.ReleaseConnection("alice", "s1"))
            await _settle()
            assert await slots.claim("alice", "s2", 1, now())
        finally:
            await keeper.stop(1.0)

    asyncio.run(scenario())


def test_a_slot_released_while_its_claim_is_out_is_given_back() -> None:
    async def scenario() -> None:
        slots = SlowSlots(30.0)
        keeper, answers = _keeper(slots)
        keeper.perform(fx.ClaimConnection("k1", "alice", "s1", 1))
        await _settle()
        keeper.perform(fx.ReleaseConnection("alice", "s1"))  # the connection closed first
        slots.gate.set()
        await _settle()
        assert answers == []  # nobody left to answer
        assert await MemorySlots.claim(slots, "alice", "s2", 1, now())  # no leaked slot

    asyncio.run(scenario())


def test_a_failing_store_lets_the_connection_in() -> None:
    async def scenario() -> None:
        keeper, answers = _keeper(BrokenSlots(30.0))
        keeper.perform(fx.ClaimConnection("k1", "alice", "s1", 1))
        await _settle()
        assert claims(answers) == [("k1", True)]

    asyncio.run(scenario())


def test_a_storm_of_claims_goes_to_the_store_in_a_few_calls_and_each_is_answered() -> None:
    """One call per claim opened a Redis connection each until the pool refused."""
    async def scenario() -> None:
        slots = BatchedSlots(30.0)
        slots.gate.set()
        keeper, answers = _keeper(slots)
        for n in range(2_000):
            keeper.perform(fx.ClaimConnection(f"k{n}", f"u{n % 1000}", f"s{n}", 1))
        for _ in range(100):
            await _settle()
            if len(claims(answers)) == 2_000:
                break
        assert claims(answers) == [(f"k{n}", n < 1000) for n in range(2_000)]
        assert sum(slots.batches) == 2_000
        assert len(slots.batches) == -(-2_000 // CLAIM_BATCH)  # batches of CLAIM_BATCH

    asyncio.run(scenario())


def test_claims_that_arrive_while_a_batch_is_out_go_together_in_the_next() -> None:
    async def scenario() -> None:
        slots = BatchedSlots(30.0)
        keeper, answers = _keeper(slots)
        keeper.perform(fx.ClaimConnection("k0", "alice", "s0", 2))
        await _settle()
        for n in range(1, 4):  # a storm: k1..k3 wait for k0's round trip, then go as one
            keeper.perform(fx.ClaimConnection(f"k{n}", "alice", f"s{n}", 2))
        await _settle()
        assert slots.batches == [1]
        slots.gate.set()
        await _settle()
        assert slots.batches == [1, 3]
        assert claims(answers) == [("k0", True), ("k1", True), ("k2", False), ("k3", False)]

    asyncio.run(scenario())
