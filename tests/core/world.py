"""A synchronous stand-in for the runtime's scheduling, with no event loop.

What each store effect does is the runtime's own code (``runtime/reads.py`` and
``runtime/presence_writes.py``) on the real in-process adapters: their coroutines
never suspend, so ``_now`` runs them to completion in place. Only when things
happen is the world's: work waits in three queues so a test decides the order
(the real scheduling, with lanes, bounds and deadlines, is tested in
``tests/runtime/``):

- ``loop``: broker callbacks (``ChannelReady``, ``BrokerMessage``) and the
  ``Disconnect`` a closed socket reports, FIFO as ``call_soon`` would run them;
- ``serial``: store and publish effects, one at a time and in order;
- ``slow``: replay, membership and gap reads, which may finish in any order; the
  world's log and members answer them.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import SimpleNamespace
from typing import Any, cast

from tornado_gw.adapters.memory import MemoryPresence, MemorySessions, MemoryTyping
from tornado_gw.adapters.memory_slots import MemorySlots
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.records import LoggedEvent
from tornado_gw.core.reducer import handle
from tornado_gw.core.state import Gateway, Limits
from tornado_gw.runtime import presence_writes, reads

T0 = 1_000.0


def _now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an adapter coroutine that never awaits anything pending."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("an in-process adapter suspended; the test world cannot run it")


def encode(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":")).encode()


class World:
    """The gateway's reducer plus everything around it, stepped by hand."""

    def __init__(self, limits: Limits | None = None, members: dict[str, set[str]] | None = None) -> None:
        self.state = Gateway(limits or Limits())
        self.now = T0
        self.members = members  # user -> conversations they may join; None: anyone anywhere
        self.sessions = MemorySessions(clock=lambda: self.now)
        self.presence = MemoryPresence(self.broadcast)
        self.typing = MemoryTyping(self.broadcast)
        self.writer = presence_writes.PresenceWriter(self.presence, self.typing)
        self.slots = MemorySlots(self.state.limits.presence_ttl_s)
        self.history: list[Any] = []  # every event applied to ``state``, oldest first
        self.log: list[LoggedEvent] = []
        self.log_gap = False  # True: the log cannot fill any replay (trimmed)
        self.channels: set[str] = set()  # what the broker is subscribed to
        self.live: set[str] = set()  # subscriptions confirmed: ChannelReady dispatched
        self.broker_up = True
        self.unready: set[str] = set()  # subscribed while the broker was down
        self.loop: deque[c.Command] = deque()
        self.serial: deque[fx.Effect] = deque()
        self.slow: list[fx.Effect] = []
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.closed: dict[str, int] = {}
        # Observers for the property tests: a command about to run, each effect of it, each
        # frame as a client gets it.
        self.on_command: Callable[[c.Command], None] = lambda cmd: None
        self.on_effect: Callable[[fx.Effect], None] = lambda effect: None
        self.on_frame: Callable[[str, dict[str, Any]], None] = lambda conn_id, frame: None
        self.submit(c.LogHeadKnown(len(self.log), self.now))  # as serve does at start-up

    # --- driving the reducer -----------------------------------------------------------

    def submit(self, cmd: c.Command) -> list[fx.Effect]:
        """Run one command and perform its effects; returns them for assertions."""
        self.on_command(cmd)
        events, effects = handle(self.state, cmd)
        self.history.extend(events)
        self.perform(effects)
        return effects

    def perform(self, effects: Iterable[fx.Effect]) -> None:
        for effect in effects:
            self.on_effect(effect)
            if isinstance(effect, fx.SendFrame):
                self._receive(effect.conn_id, encode(effect.frame))
            elif isinstance(effect, fx.Deliver):
                for conn_id in effect.conn_ids:
                    self._receive(conn_id, effect.data)
            elif isinstance(effect, fx.SendReplay):
                for data in effect.frames:
                    self._receive(effect.conn_id, data)
            elif isinstance(effect, fx.CloseConnection):
                self.closed.setdefault(effect.conn_id, int(effect.code))
                self.loop.append(c.Disconnect(effect.conn_id, self.now))
            elif isinstance(effect, fx.SubscribeChannel):
                self.channels.add(effect.channel)
                if self.broker_up:
                    self.loop.append(c.ChannelReady(effect.channel, self.now))
                else:
                    self.unready.add(effect.channel)
            elif isinstance(effect, fx.UnsubscribeChannel):
                self.channels.discard(effect.channel)
                self.live.discard(effect.channel)
                self.unready.discard(effect.channel)
            elif isinstance(effect, fx.CONCURRENT):
                self.slow.append(effect)
            elif isinstance(effect, fx.ForgetGrant):
                pass  # the world's membership has no cache
            else:
                self.serial.append(effect)

    def _receive(self, conn_id: str, data: bytes) -> None:
        frame = json.loads(data)
        self.received.setdefault(conn_id, []).append(frame)
        self.on_frame(conn_id, frame)

    def settle(self, slow: bool = True) -> None:
        """Run queued work until nothing is left (``slow=False``: leave slow reads pending)."""
        while self.loop or self.serial or (slow and self.slow):
            if self.serial:
                self._store(self.serial.popleft())
            elif self.loop:
                self._dispatch(self.loop.popleft())
            else:
                self.finish_slow(0)

    def answer_stores(self) -> None:
        """Run the store lane and membership checks only: broker callbacks stay queued."""
        while self.serial or any(isinstance(e, fx.CheckMembership) for e in self.slow):
            if self.serial:
                self._store(self.serial.popleft())
            else:
                checks = [i for i, e in enumerate(self.slow) if isinstance(e, fx.CheckMembership)]
                self.finish_slow(checks[0])

    def _dispatch(self, cmd: c.Command) -> None:
        if isinstance(cmd, c.ChannelReady) and cmd.channel in self.channels:
            self.live.add(cmd.channel)
        self.submit(cmd)

    def finish_slow(self, index: int) -> None:
        """Complete one pending slow read (they may finish in any order)."""
        effect = self.slow.pop(index)
        if isinstance(effect, fx.LoadReplay):
            events = self.read_after(effect.channels, effect.after_seq, effect.limit)
            self.submit(c.ReplayLoaded(effect.conn_id, None if events is None else tuple(events), self.now))
        elif isinstance(effect, fx.CheckMembership):
            allowed = {cid for cid in effect.conversation_ids
                       if self.members is None or cid in self.members.get(effect.user_id, ())}
            self.submit(c.MembershipChecked(effect.conn_id, frozenset(allowed), self.now))
        elif isinstance(effect, fx.LoadGap):
            # One page: paging through a large gap is the runtime's (tests/runtime).
            events = self.read_after(effect.channels, effect.after_seq, len(self.log))
            messages = None if events is None else tuple(
                c.BrokerMessage(e.channel, e.data, json.loads(e.data), self.now) for e in events)
            self.submit(c.GapLoaded(effect.channels, messages, True, self.now))

    def advance(self, seconds: float) -> list[fx.Effect]:
        """Let time pass, as the clock would: one ``Tick`` and one ``FlushPresence``, then
        everything they started."""
        self.now += seconds
        effects = self.submit(c.Tick(self.now))
        effects += self.submit(c.FlushPresence(self.now))
        self.settle()
        return effects

    def flush_presence(self, seconds: float) -> list[fx.Effect]:
        """Let ``seconds`` pass with only the presence batches ticking (no ``Tick``)."""
        self.now += seconds
        effects = self.submit(c.FlushPresence(self.now))
        self.settle()
        return effects

    # --- the relay and the broker -------------------------------------------------------

    def emit(self, channel: str, kind: str, payload: dict[str, Any]) -> LoggedEvent:
        """What the relay does with an outbox row: number it, log it, publish it."""
        seq = len(self.log) + 1
        event = LoggedEvent(seq, channel, encode({"type": kind, "payload": payload, "seq": seq}))
        self.log.append(event)
        self.broadcast(channel, event.data)
        return event

    def broadcast(self, channel: str, data: bytes) -> None:
        """Publish on the broker: lost while it is down (at most once, PITFALLS 1) and on a
        channel whose subscription is not confirmed yet (as Redis would)."""
        if self.broker_up and channel in self.live:
            self.loop.append(c.BrokerMessage(channel, data, json.loads(data), self.now))

    def set_broker(self, up: bool) -> list[fx.Effect]:
        self.broker_up = up
        effects = self.submit(c.BrokerStatusChanged(up, "test", self.now))
        if up:
            for channel in sorted(self.unready):
                self.loop.append(c.ChannelReady(channel, self.now))
            self.unready.clear()
        return effects

    def read_after(self, channels: Sequence[str], after_seq: int, limit: int) -> list[LoggedEvent] | None:
        """``MemoryLog.read_after``: None where it would raise ``ReplayGap``."""
        found = [e for e in self.log if e.seq > after_seq and e.channel in channels]
        return None if self.log_gap or len(found) > limit else found

    # --- the stores -----------------------------------------------------------------------

    def _store(self, effect: fx.Effect) -> None:
        """Run one store effect through the runtime's own code (``runtime/reads.py``,
        ``runtime/presence_writes.py``) on the in-process adapters."""
        if isinstance(effect, fx.SaveSession):
            _now(self.sessions.save(effect.snapshots, effect.ttl_s))
        elif isinstance(effect, (fx.LoadSession, fx.QueryPresence)):
            stores = cast(reads.Sources, SimpleNamespace(sessions=self.sessions, presence=self.presence))
            self.submit(_now(reads.answer(stores, effect, lambda: self.now)))
        elif isinstance(effect, presence_writes.PRESENCE_WRITES):
            _now(self.writer.run(effect))
        elif isinstance(effect, fx.DeleteSession):
            _now(self.sessions.delete(effect.session_id))
        elif isinstance(effect, fx.ClaimConnection):
            granted = _now(self.slots.claim(effect.user_id, effect.slot_id, effect.limit, self.now))
            self.submit(c.ConnectionClaimed(effect.conn_id, granted, self.now))
        elif isinstance(effect, fx.ReleaseConnection):
            _now(self.slots.release(effect.user_id, effect.slot_id))
        else:
            raise AssertionError(f"the world does not know {effect!r}")

    def typists(self, conversation_id: str) -> set[str]:
        """Who the typing store holds for the conversation (the adapter has no reader for it)."""
        return set(self.typing._convs.get(conversation_id, ()))

    def online(self, conversation_id: str) -> list[str]:
        """Who the presence store says is online now."""
        return list(_now(self.presence.page(conversation_id, None, 1_000_000)).user_ids)
