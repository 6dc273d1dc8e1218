"""Performs the reducer's effects; results come back as commands.

Three kinds of work, none of which can stall another:

- **Socket effects** (frames, closes, broker subscriptions) run at once, in order.
- **Writes** (sessions, presence, typing) go to ordered lanes
  (``runtime/lanes.py``): one for session snapshots and the lanes of
  ``runtime/presence_writes.py`` (the stores announce their own transitions). Each lane is bounded
  and each write has a deadline; refreshes that pile up merge and go in chunks.
- **Reads** (session loads, presence queries, membership, replays, gap fills) run
  concurrently, off the ordered lanes, each within its deadline; at most
  ``MAX_READS`` waiting and ``READS_PER_STORE`` in each store at once. Session
  loads and membership checks that wait for a turn go together when one gets it
  (up to ``READ_BATCH`` in one store call): in a resume storm the turns, not the
  stores, were the limit (32 reads per turn of a busy event loop, 10,000 waiting).

Whatever fails, is late or finds its lane full comes back to the reducer as
``EffectFailed``, which answers what waited for it, so every request gets a
reply while Redis or Postgres hang (CONTRACT §4 v2).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tornado_gw import metrics
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.records import SessionSnapshot
from tornado_gw.ports import Broker, EventLog, Membership, PresenceStore, SessionStore, TypingStore
from tornado_gw.runtime import presence_writes, reads
from tornado_gw.runtime.clock import now
from tornado_gw.runtime.gap_fill import fill_gap
from tornado_gw.runtime.lanes import Lanes
from tornado_gw.runtime.slots import SlotKeeper

log = logging.getLogger(__name__)
READ_DEADLINE_S = 4.0  # a read an operation's reply waits for answers within this, or it failed
REPLAY_DEADLINE_S = 10.0  # a replay or gap page (they follow the reply; a storm queues them)
WRITE_DEADLINE_S = 10.0
MAX_READS = 20_000  # reads in flight (a resume storm has two per client); past this a read fails at once
READS_PER_STORE = 32  # reads in one store at once (its client's pool is finite: redis-py refuses past 100)
WRITES_AT_ONCE = 32  # writes in the stores at once, over all lanes
LANE_DEPTH = 1_000  # writes queued per lane
MAX_LANES = 100_000
SESSION_CHUNK = 1_000  # snapshots per store call
READ_BATCH = 1_000  # session loads or membership checks answered by one store call



@dataclass(slots=True)
class SessionSaves:
    """Session saves queued behind a running write, merged in place (the newest snapshot
    of each session wins). Rebuilding one ``SaveSession`` per merge made 10,000 saves
    queued in a resume storm cost 50 million dict updates on the event loop."""

    ttl_s: float
    latest: dict[str, SessionSnapshot]

    def effect(self) -> fx.SaveSession:
        return fx.SaveSession(tuple(self.latest.values()), self.ttl_s)


Write = fx.SaveSession | SessionSaves | fx.DeleteSession | presence_writes.PresenceWrite
SESSION_WRITES = (fx.SaveSession, SessionSaves, fx.DeleteSession)  # one ordered lane: _lane_of
Read = reads.Read | fx.LoadGap
READS = (fx.LoadSession, fx.QueryPresence, fx.CheckMembership, fx.LoadReplay, fx.LoadGap)


class Transport(Protocol):
    """The sockets, as the web layer exposes them to the runtime."""

    def send(self, conn_id: str, data: bytes) -> None: ...

    def send_many(self, conn_ids: Sequence[str], data: bytes) -> None: ...

    def send_paced(self, conn_id: str, payloads: Sequence[bytes]) -> None: ...

    def close(self, conn_id: str, code: int, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Adapters:
    broker: Broker
    log: EventLog
    sessions: SessionStore
    presence: PresenceStore
    typing: TypingStore
    membership: Membership


class EffectRunner:
    def __init__(self, adapters: Adapters, transport: Transport, submit: Callable[[c.Command], None],
                 encode: Callable[[Any], bytes], decode: Callable[[bytes], Any],
                 slots: SlotKeeper | None = None) -> None:
        self._adapters = adapters
        self._slots = slots
        self._transport = transport
        self._submit = submit
        self._encode = encode
        self._decode = decode
        self._presence = presence_writes.PresenceWriter(adapters.presence, adapters.typing)
        self._failures = FailureLog()
        self._writes: Lanes[Write] = Lanes(self._write, self._failed, _merge, _commutes, LANE_DEPTH,
                                           MAX_LANES, WRITE_DEADLINE_S, WRITES_AT_ONCE)
        self._reads: set[asyncio.Task[None]] = set()
        self._read_turns = {kind: asyncio.Semaphore(READS_PER_STORE)
                            for kind in ("sessions", "presence", "membership", "log")}
        self._batches: dict[type, deque[tuple[reads.Batchable, asyncio.Future[c.Command]]]] = {
            kind: deque() for kind in reads.BATCHABLE}

    async def stop(self, timeout_s: float) -> None:
        """Finish the queued writes (sessions saved on shutdown), then stop."""
        try:
            await self._writes.drain(timeout_s)
        finally:
            self._writes.cancel()
            for task in list(self._reads):
                task.cancel()

    def perform(self, effects: Sequence[fx.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, fx.Deliver):
                self._transport.send_many(effect.conn_ids, effect.data)
                metrics.count_frames_out(metrics.frame_type_label(effect.frame_type), len(effect.conn_ids))
            elif isinstance(effect, fx.SendFrame):
                self._transport.send(effect.conn_id, self._encode(effect.frame))
                metrics.count_frames_out(metrics.frame_type_label(effect.frame["type"]))
            elif isinstance(effect, fx.SendReplay):
                self._transport.send_paced(effect.conn_id, effect.frames)
                metrics.count_frames_out("replay", len(effect.frames))
            elif isinstance(effect, fx.CloseConnection):
                self._transport.close(effect.conn_id, int(effect.code), effect.reason)
            elif isinstance(effect, fx.SubscribeChannel):
                self._adapters.broker.subscribe(effect.channel)
            elif isinstance(effect, fx.UnsubscribeChannel):
                self._adapters.broker.unsubscribe(effect.channel)
            elif isinstance(effect, READS):
                self._read(effect)
            elif isinstance(effect, fx.ACCESS):
                if self._slots is not None:
                    self._slots.perform(effect)
            elif isinstance(effect, fx.ForgetGrant):  # at once: before any later membership check
                self._adapters.membership.forget(effect.user_id, effect.conversation_id)
            else:
                self._writes.put(_lane_of(effect), effect)

    # --- writes ----------------------------------------------------------------------

    async def _write(self, effect: Write) -> None:
        if isinstance(effect, SessionSaves):
            effect = effect.effect()
        if isinstance(effect, fx.SaveSession):
            for i in range(0, len(effect.snapshots), SESSION_CHUNK):
                await self._adapters.sessions.save(effect.snapshots[i:i + SESSION_CHUNK], effect.ttl_s)
        elif isinstance(effect, fx.DeleteSession):
            await self._adapters.sessions.delete(effect.session_id)
        else:
            await self._presence.run(effect)

    def _failed(self, effect: fx.Effect | Write, reason: str) -> None:
        if isinstance(effect, SessionSaves):
            effect = effect.effect()
        self._failures.warn(type(effect).__name__, reason)
        for one in presence_writes.parts(effect) if isinstance(effect, presence_writes.MERGED) else (effect,):
            self._submit(c.EffectFailed(one, reason, now()))

    # --- reads -----------------------------------------------------------------------

    def _read(self, effect: Read) -> None:
        if len(self._reads) >= MAX_READS:
            self._failed(effect, f"over {MAX_READS} reads in flight")
            return
        task = asyncio.get_running_loop().create_task(self._bounded_read(effect))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _bounded_read(self, effect: Read) -> None:
        if isinstance(effect, fx.LoadGap):  # pages, each read bounded; answers every outcome itself
            await fill_gap(self._adapters.log, effect, self._decode, self._submit, REPLAY_DEADLINE_S)
            return
        deadline_s = REPLAY_DEADLINE_S if isinstance(effect, fx.LoadReplay) else READ_DEADLINE_S
        try:
            answer = await asyncio.wait_for(self._in_turn(effect), deadline_s)
        except asyncio.TimeoutError:
            self._failed(effect, f"no answer within {deadline_s:g} s")
        except Exception as exc:  # a dependency failed: the reducer answers for it
            self._failed(effect, str(exc) or type(exc).__name__)
        else:
            self._submit(answer)

    async def _in_turn(self, effect: reads.Read) -> c.Command:
        turn = self._read_turns[reads.STORE_OF[type(effect)]]
        if not isinstance(effect, reads.BATCHABLE):
            async with turn:
                return await reads.answer(self._adapters, effect)
        batch = self._batches[type(effect)]
        answer: asyncio.Future[c.Command] = asyncio.get_running_loop().create_future()
        batch.append((effect, answer))
        try:
            async with turn:
                if batch:  # this turn answers the reads waiting, its own unless a turn before took it
                    await self._answer_batch(batch, answer)
            return await answer
        finally:
            answer.cancel()  # past its deadline: no later batch asks for it (a no-op once answered)

    async def _answer_batch(self, batch: deque[tuple[reads.Batchable, asyncio.Future[c.Command]]],
                            mine: asyncio.Future[c.Command]) -> None:
        taken = [batch.popleft() for _ in range(min(len(batch), READ_BATCH))]
        taken = [(effect, answer) for effect, answer in taken if not answer.done()]  # not past their deadline
        try:
            commands = await reads.answer_many(self._adapters, [effect for effect, _ in taken])
        except asyncio.CancelledError:  # this read's deadline: the others of its batch were as late
            for _, answer in taken:
                if answer is not mine and not answer.done():
                    answer.set_exception(asyncio.TimeoutError("its batch was not answered in time"))
            raise
        except Exception as exc:  # a dependency failed: each read of the batch reports it
            for _, answer in taken:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (_, answer), command in zip(taken, commands, strict=True):
            if not answer.done():
                answer.set_result(command)


class FailureLog:
    """At most one warning a second per kind of effect, with the count of those it kept
    quiet meanwhile: the 30,000 failure warnings of an overloaded resume storm cost the
    event loop more than a tenth of its time, and told nothing the first one did not."""

    def __init__(self, every_s: float = 1.0) -> None:
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warn(self, kind: str, reason: str) -> None:
        at = time.monotonic()
        if at - self._last.get(kind, -math.inf) < self._every_s:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        self._last[kind] = at
        quiet = self._quiet.pop(kind, 0)
        log.warning("! %s failed: %s%s", kind, reason,
                    f" (and {quiet} more since the last warning of its kind)" if quiet else "")


def _lane_of(effect: Write) -> Hashable:
    if isinstance(effect, SESSION_WRITES):
        # One lane: the periodic snapshot of every live session must not overwrite a
        # newer snapshot of one of them (an unsubscribe) queued after it, nor bring
        # back a session deleted after it (POST /disconnect).
        return "sessions"
    return presence_writes.lane_of(effect)


def _merge(queued: Write, new: Write) -> Write | None:
    if isinstance(queued, (fx.SaveSession, SessionSaves)) and isinstance(new, fx.SaveSession):
        if queued.ttl_s != new.ttl_s:
            return None
        saves = queued if isinstance(queued, SessionSaves) else SessionSaves(
            queued.ttl_s, {s.session_id: s for s in queued.snapshots})
        saves.latest.update((s.session_id, s) for s in new.snapshots)
        return saves
    if isinstance(queued, SESSION_WRITES) or isinstance(new, SESSION_WRITES):
        return None
    return presence_writes.merge(queued, new)


def _commutes(queued: Write, new: Write) -> bool:
    if isinstance(queued, SESSION_WRITES) or isinstance(new, SESSION_WRITES):
        return False  # the sessions lane keeps its order (see _lane_of)
    return presence_writes.commutes(queued, new)

