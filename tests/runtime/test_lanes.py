"""Ordered, bounded store lanes (runtime/lanes.py): order per key, no waiting across
keys, a bound per lane, a deadline per write, merging of piled-up writes, also past
queued writes they commute with."""

from __future__ import annotations

import asyncio

from tornado_gw.runtime.lanes import MERGE_REACH, Lanes


class Store:
    """Records writes as they complete; a write named in ``stuck`` never does."""

    def __init__(self, stuck: frozenset[str] = frozenset()) -> None:
        self.done: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.stuck = stuck

    async def run(self, write: str) -> None:
        await asyncio.sleep(0.001)
        if write in self.stuck:
            await asyncio.Event().wait()
        self.done.append(write)

    def fail(self, write: str, reason: str) -> None:
        self.failed.append((write, reason))


def lanes(store: Store, depth: int = 10, max_lanes: int = 10, deadline_s: float = 5.0) -> Lanes[str]:
    def merge(queued: str, new: str) -> str | None:
        return new if queued.startswith("refresh") and new.startswith("refresh") else None

    def commutes(queued: str, new: str) -> bool:
        return queued.startswith("announce")

    return Lanes(store.run, store.fail, merge, commutes, depth, max_lanes, deadline_s, running=4)


async def test_writes_of_one_key_run_in_order_and_a_stuck_key_holds_up_only_itself() -> None:
    store = Store(stuck=frozenset({"b1"}))
    ordered = lanes(store, deadline_s=0.2)
    for write in ("a1", "b1", "a2", "b2", "a3"):
        ordered.put(write[0], write)
    await asyncio.sleep(0.05)
    assert store.done == ["a1", "a2", "a3"]
    await ordered.drain(1.0)
    assert store.done == ["a1", "a2", "a3", "b2"]
    assert [(w, reason) for w, reason in store.failed] == [("b1", "no answer within 0.2 s")]


async def test_a_full_lane_and_too_many_lanes_refuse_at_once() -> None:
    store = Store(stuck=frozenset({"x0"}))
    bounded = lanes(store, depth=3, max_lanes=2, deadline_s=0.2)
    for n in range(5):
        bounded.put("x", f"x{n}")
    bounded.put("y", "y0")
    bounded.put("z", "z0")  # a third lane
    assert [w for w, _ in store.failed] == ["x3", "x4", "z0"]
    assert "full" in store.failed[0][1] and "lanes busy" in store.failed[2][1]
    await bounded.drain(1.0)
    assert sorted(store.done) == ["x1", "x2", "y0"]


async def test_refreshes_piled_up_behind_a_slow_write_merge_into_the_newest() -> None:
    store = Store()
    merging = lanes(store)
    for write in ("join", "refresh1", "refresh2", "refresh3", "leave", "refresh4"):
        merging.put("p", write)
    await merging.drain(1.0)
    assert store.done == ["join", "refresh3", "leave", "refresh4"]
    assert store.failed == []


async def test_a_write_merges_past_queued_writes_it_commutes_with_but_not_past_others() -> None:
    store = Store()
    merging = lanes(store)
    for write in ("join", "refresh1", "announce-a", "announce-b", "refresh2", "leave", "announce-c",
                  "refresh3"):
        merging.put("p", write)
    await merging.drain(1.0)
    # refresh2 reaches refresh1 past the announcements; refresh3 stops at the leave
    assert store.done == ["join", "refresh2", "announce-a", "announce-b", "leave", "announce-c", "refresh3"]


async def test_a_write_reaches_back_at_most_merge_reach_writes() -> None:
    store = Store()
    merging = lanes(store, depth=50)
    fillers = [f"announce-{n}" for n in range(MERGE_REACH)]
    for write in ("join", "refresh1", *fillers, "refresh2"):
        merging.put("p", write)
    await merging.drain(1.0)
    assert store.done == ["join", "refresh1", *fillers, "refresh2"]  # refresh1 was out of reach
