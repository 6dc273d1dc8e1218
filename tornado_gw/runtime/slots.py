"""Performs the connection-slot effects (``max_connections_per_user``) and keeps the
slots of this instance's connections alive.

A claim never holds up the connection's ``auth`` (the core goes on meanwhile),
and a store that fails lets the connection in: a cap must not turn a Redis
hiccup into an outage. Claims go to the store in batches (``CLAIM_BATCH``), one
batch at a time: those that arrive within a few milliseconds of the first, or
while a batch is out, leave together. A connection storm so costs a round trip
per batch, and never more sockets than the pool has: one call per claim made a
resume storm open a Redis connection each until the pool refused ("Too many
connections", 9,893 of 10,000 let in unchecked). A slot released while its claim
is still on the way is given back once the claim lands, so no slot leaks; a slot
this instance holds is refreshed every third of the store's TTL until released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from tornado.ioloop import PeriodicCallback

from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.ports import ConnectionSlots
from tornado_gw.runtime.clock import now

log = logging.getLogger(__name__)
SLOT_TIMEOUT_S = 5.0
CLAIM_BATCH = 500  # claims per store call, so one call never blocks Redis for long
# The first claim after a quiet spell waits this long for company. Nothing waits for a
# claim (a refused one closes its connection with 4011 a little later), unlike the write
# lanes: a presence query or a resume right after a write must find it, so those never wait.
CLAIM_LINGER_S = 0.005


class SlotKeeper:
    def __init__(self, slots: ConnectionSlots, submit: Callable[[c.Command], None], ttl_s: float) -> None:
        self._slots = slots
        self._submit = submit
        self._held: dict[str, str] = {}  # slot id -> user id
        self._claiming: set[str] = set()
        self._queued: list[fx.ClaimConnection] = []
        self._claimer: asyncio.Task[None] | None = None
        self._released_early: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher = PeriodicCallback(self._refresh, ttl_s / 3 * 1000)

    def start(self) -> None:
        self._refresher.start()

    async def stop(self, timeout_s: float) -> None:
        """Stop refreshing; let the releases of the connections just closed (a drain) land,
        so their users' reconnections elsewhere are not counted twice until the slots expire."""
        self._refresher.stop()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    def perform(self, effect: fx.ClaimConnection | fx.ReleaseConnection) -> None:
        if isinstance(effect, fx.ClaimConnection):
            self._claiming.add(effect.slot_id)
            self._queued.append(effect)
            if self._claimer is None:
                self._claimer = self._spawn(self._claim_queued())
        elif effect.slot_id in self._claiming:
            self._released_early.add(effect.slot_id)
        elif self._held.pop(effect.slot_id, None) is not None:
            self._spawn(self._release(effect.user_id, effect.slot_id))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _claim_queued(self) -> None:
        """Claim what is queued, a batch per store call, until nothing is; the first batch
        leaves ``CLAIM_LINGER_S`` after the first claim, with what came meanwhile."""
        try:
            await asyncio.sleep(CLAIM_LINGER_S)
            while self._queued:
                batch, self._queued = self._queued[:CLAIM_BATCH], self._queued[CLAIM_BATCH:]
                answers: list[bool | None]
                try:
                    claims = [(e.user_id, e.slot_id, e.limit) for e in batch]
                    claimed = self._slots.claim_many(claims, now())
                    answers = list(await asyncio.wait_for(claimed, SLOT_TIMEOUT_S))
                except Exception as exc:  # fail open: the cap is a limit, not a gate to the service
                    log.warning("! %d connection slots not claimed, letting them in: %s", len(batch),
                                exc or type(exc).__name__)
                    answers = [None] * len(batch)
                for effect, granted in zip(batch, answers, strict=True):
                    self._claimed(effect, granted)
        finally:
            self._claimer = None

    def _claimed(self, effect: fx.ClaimConnection, granted: bool | None) -> None:
        """``granted`` is None when the store failed (the connection is let in)."""
        self._claiming.discard(effect.slot_id)
        if effect.slot_id in self._released_early:  # the connection closed meanwhile
            self._released_early.discard(effect.slot_id)
            if granted:
                self._spawn(self._release(effect.user_id, effect.slot_id))
            return
        if granted:
            self._held[effect.slot_id] = effect.user_id
        self._submit(c.ConnectionClaimed(effect.conn_id, granted is not False, now()))

    async def _release(self, user_id: str, slot_id: str) -> None:
        try:
            await asyncio.wait_for(self._slots.release(user_id, slot_id), SLOT_TIMEOUT_S)
        except Exception as exc:  # the slot expires by itself
            log.warning("! connection slot not released (it expires): %s", exc or type(exc).__name__)

    async def _refresh(self) -> None:
        if not self._held:
            return
        slots = [(user_id, slot_id) for slot_id, user_id in self._held.items()]
        try:
            await asyncio.wait_for(self._slots.refresh(slots, now()), SLOT_TIMEOUT_S)
        except Exception as exc:
            log.warning("! connection slots not refreshed: %s", exc or type(exc).__name__)
