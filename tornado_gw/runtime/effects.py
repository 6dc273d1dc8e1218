"""Performs the reducer's effects; results come back as commands.

Three kinds of work, none of which can stall another:

- **Socket effects** (frames, closes, broker subscriptions) run at once, in order.
- **Writes** (sessions, presence, typing) go to ordered lanes
  (``runtime/lanes.py``): one for session snapshots and the lanes of
  ``runtime/presence_writes.py`` (the stores announce their own transitions). Each lane is bounded
  and each write has a deadline; refreshes that pile up merge and go in chunks.
- **Reads** (session loads, presence queries, membership, replays, gap fills) run
  concurrently, off the ordered lanes, each within its deadline; at most
  ``MAX_READS`` waiting and ``READS_PER_STORE`` in each store at once.

Whatever fails, is late or finds its lane full comes back to the reducer as
``EffectFailed``, which answers what waited for it, so every request gets a
reply while Redis or Postgres hang (CONTRACT §4 v2).
"""

from __future__ import annotations

import asyncio
import logging
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



@dataclass(slots=True)
class Saves:
    """Consecutive ``SaveSession`` writes of one TTL merged in the sessions lane, the newest
    snapshot of each session winning. Grows in place while it waits, so merging stays
    linear in a storm (rebuilding the batch per merge was quadratic)."""

    latest: dict[str, SessionSnapshot]
    ttl_s: float

    @classmethod
    def of(cls, save: fx.SaveSession) -> Saves:
        return cls({s.session_id: s for s in save.snapshots}, save.ttl_s)

    def effect(self) -> fx.SaveSession:
        return fx.SaveSession(tuple(self.latest.values()), self.ttl_s)


Write = fx.SaveSession | Saves | fx.DeleteSession | presence_writes.PresenceWrite
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
        self._writes: Lanes[Write] = Lanes(self._write, self._failed, _merge, LANE_DEPTH, MAX_LANES,
                                           WRITE_DEADLINE_S, WRITES_AT_ONCE)
        self._reads: set[asyncio.Task[None]] = set()
        self._read_turns = {kind: asyncio.Semaphore(READS_PER_STORE)
                            for kind in ("sessions", "presence", "membership", "log")}

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
                metrics.FRAMES_OUT.labels(metrics.frame_type_label(effect.frame_type)).inc(len(effect.conn_ids))
            elif isinstance(effect, fx.SendFrame):
                self._transport.send(effect.conn_id, self._encode(effect.frame))
                metrics.FRAMES_OUT.labels(metrics.frame_type_label(effect.frame["type"])).inc()
            elif isinstance(effect, fx.SendReplay):
                self._transport.send_paced(effect.conn_id, effect.frames)
                metrics.FRAMES_OUT.labels("replay").inc(len(effect.frames))
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
        if isinstance(effect, (fx.SaveSession, Saves)):
            save = effect.effect() if isinstance(effect, Saves) else effect
            for i in range(0, len(save.snapshots), SESSION_CHUNK):
                await self._adapters.sessions.save(save.snapshots[i:i + SESSION_CHUNK], save.ttl_s)
        elif isinstance(effect, fx.DeleteSession):
            await self._adapters.sessions.delete(effect.session_id)
        else:
            await self._presence.run(effect)

    def _failed(self, effect: fx.Effect | Saves | presence_writes.Joins, reason: str) -> None:
        log.warning("! %s failed: %s", type(effect).__name__, reason)
        if isinstance(effect, Saves):
            effect = effect.effect()
        for one in effect.joins if isinstance(effect, presence_writes.Joins) else (effect,):
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
        async with self._read_turns[reads.STORE_OF[type(effect)]]:
            return await reads.answer(self._adapters, effect)


def _lane_of(effect: Write) -> Hashable:
    if isinstance(effect, (fx.SaveSession, Saves, fx.DeleteSession)):
        # One lane: the periodic snapshot of every live session must not overwrite a
        # newer snapshot of one of them (an unsubscribe) queued after it, nor bring
        # back a session deleted after it (POST /disconnect).
        return "sessions"
    return presence_writes.lane_of(effect)


def _merge(queued: Write, new: Write) -> Write | None:
    if isinstance(queued, (fx.SaveSession, Saves)) and isinstance(new, fx.SaveSession):
        if queued.ttl_s != new.ttl_s:
            return None
        saves = Saves.of(queued) if isinstance(queued, fx.SaveSession) else queued
        saves.latest.update((s.session_id, s) for s in new.snapshots)
        return saves
    sessions = (fx.SaveSession, Saves, fx.DeleteSession)
    if isinstance(queued, sessions) or isinstance(new, sessions):
        return None
    return presence_writes.merge(queued, new)

