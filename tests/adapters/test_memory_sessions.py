"""The embedded default's session store forgets what expired (issue 9 §7).

One snapshot is saved per closed connection; without a sweep they stayed for the
life of the process. (The behaviour every store shares is in test_stores_contract.)
"""

from __future__ import annotations

import asyncio

from tornado_gw.adapters.memory import MemorySessions
from tornado_gw.core.records import SessionSnapshot


def _snapshot(n: int) -> SessionSnapshot:
    return SessionSnapshot(f"s{n}", f"u{n}", ("c1",))


def test_expired_snapshots_are_dropped_as_new_ones_are_saved() -> None:
    now = [1000.0]
    store = MemorySessions(clock=lambda: now[0])

    async def scenario() -> None:
        for n in range(1000):
            await store.save([_snapshot(n)], ttl_s=120)
        await store.save([_snapshot(0)], ttl_s=300)  # saved again: lives on
        now[0] += 121
        await store.save([_snapshot(1000)], ttl_s=120)
        assert (len(store), store.users()) == (2, 2)
        assert await store.load("s0") == _snapshot(0)
        assert await store.load("s1") is None
        now[0] += 200
        await store.save([], ttl_s=120)
        assert (len(store), store.users()) == (0, 0)  # the per-user index shrinks with them

    asyncio.run(scenario())
