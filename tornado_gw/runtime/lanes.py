"""Ordered, bounded lanes of store writes, one per key.

Writes with the same key run one at a time, in the order they were queued (a
``leave`` must not overtake the ``join`` before it); writes with different keys
do not wait for each other, so a hung key stalls only itself. Each lane holds
at most ``depth`` writes and at most ``max_lanes`` lanes exist at once: past
either bound a write is refused at once, and every write that fails, is late
(past ``deadline_s``) or is refused is handed to ``failed`` (the runner reports
it to the reducer as a command). At most ``running`` writes are in the store at
once (a client's connection pool is finite: redis-py's refuses past 100); the
deadline counts the wait for a turn too. A write that can be merged into one
queued before it (``merge``) takes its place instead of queueing behind it: repeated
refreshes cost one store call, not one each. It may reach back past up to
``MERGE_REACH`` writes that it ``commutes`` with (they may run after it), so kinds
that alternate in a storm still merge, each with its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
W = TypeVar("W")
MERGE_REACH = 8  # queued writes a new one may pass to merge: a bounded scan per write


class Lanes(Generic[W]):
    def __init__(self, run: Callable[[W], Awaitable[None]], failed: Callable[[W, str], None],
                 merge: Callable[[W, W], W | None], commutes: Callable[[W, W], bool], depth: int,
                 max_lanes: int, deadline_s: float, running: int) -> None:
        self._run = run
        self._failed = failed
        self._merge = merge
        self._commutes = commutes
        self._depth = depth
        self._max_lanes = max_lanes
        self._deadline_s = deadline_s
        self._turns = asyncio.Semaphore(running)
        self._lanes: dict[Hashable, deque[W]] = {}
        self._workers: set[asyncio.Task[None]] = set()

    def put(self, key: Hashable, write: W) -> None:
        lane = self._lanes.get(key)
        if lane is None:
            if len(self._lanes) >= self._max_lanes:
                self._failed(write, f"over {self._max_lanes} store lanes busy")
                return
            lane = self._lanes[key] = deque()
            lane.append(write)
            task = asyncio.get_running_loop().create_task(self._work(key, lane))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
            return
        if self._merged(lane, write):
            return
        if len(lane) >= self._depth:
            self._failed(write, f"store lane full ({self._depth} writes queued)")
            return
        lane.append(write)

    def _merged(self, lane: deque[W], write: W) -> bool:
        """Merge ``write`` into a waiting write (lane[0] is running) it may reach."""
        for index in range(len(lane) - 1, max(0, len(lane) - 1 - MERGE_REACH), -1):
            queued = lane[index]
            merged = self._merge(queued, write)
            if merged is not None:
                lane[index] = merged
                return True
            if not self._commutes(queued, write):
                return False
        return False

    def busy(self) -> int:
        """Writes queued or running, over all lanes."""
        return sum(len(lane) for lane in self._lanes.values())

    async def drain(self, timeout_s: float) -> None:
        """Wait until every queued write has run (shutdown: sessions saved on the way out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._workers:
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError(f"{self.busy()} store writes still queued")
            await asyncio.wait(set(self._workers), timeout=left)

    def cancel(self) -> None:
        for task in list(self._workers):
            task.cancel()

    async def _in_turn(self, write: W) -> None:
        async with self._turns:
            await self._run(write)

    async def _work(self, key: Hashable, lane: deque[W]) -> None:
        try:
            while lane:
                write = lane[0]
                try:
                    await asyncio.wait_for(self._in_turn(write), self._deadline_s)
                except asyncio.TimeoutError:
                    self._failed(write, f"no answer within {self._deadline_s:g} s")
                except Exception as exc:  # a dependency failed: report, keep serving
                    self._failed(write, str(exc) or type(exc).__name__)
                lane.popleft()
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]
