"""A synchronous stand-in for the runtime: answers the reducer's effects the way
``adapters/memory.py`` and ``runtime/effects.py`` would, with no event loop.

The presence, typing and session stores are the real in-process adapters: their
coroutines never suspend, so ``_now`` runs them to completion in place. Work is
kept in the runtime's three lanes so a test decides what happens when:

- ``loop``: broker callbacks (``ChannelReady``, ``BrokerMessage``) and the
  ``Disconnect`` a closed socket reports, FIFO as ``call_soon`` would run them;
- ``serial``: store and publish effects, one at a time and in order;
- ``slow``: replay, membership and gap reads, which may finish in any order.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from tornado_gw.adapters.memory import MemoryPresence, MemorySessions, MemoryTyping
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.records import LoggedEvent
from tornado_gw.core.reducer import handle
from tornado_gw.core.state import Gateway, Limits

T0 = 1_000.0
GAP_FILL_LIMIT = 100_000  # as runtime/effects.py


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
        self.presence = MemoryPresence()
        self.typing = MemoryTyping()
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
        self.published: list[tuple[str, dict[str, Any]]] = []  # Publish effects, in order
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
        effects = handle(self.state, cmd)
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
            since = dict(effect.after)
            events = self.read_after(list(since), min(since.values()), GAP_FILL_LIMIT)
            messages = None if events is None else tuple(
                c.BrokerMessage(e.channel, e.data, json.loads(e.data), self.now)
                for e in events if e.seq > since[e.channel])
            self.submit(c.GapLoaded(messages, self.now))

    def advance(self, seconds: float) -> list[fx.Effect]:
        """Let time pass, as the clock would: one ``Tick``, then everything it started."""
        self.now += seconds
        effects = self.submit(c.Tick(self.now))
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
        if isinstance(effect, fx.Publish):
            self.published.append((effect.channel, effect.frame))
            self.broadcast(effect.channel, encode(effect.frame))
        elif isinstance(effect, fx.LoadSession):
            snapshot = _now(self.sessions.load(effect.session_id))
            self.submit(c.SessionLoaded(effect.conn_id, snapshot, self.now))
        elif isinstance(effect, fx.SaveSession):
            _now(self.sessions.save(effect.snapshots, effect.ttl_s))
        elif isinstance(effect, (fx.JoinPresence, fx.LeavePresence, fx.RejoinPresence, fx.RefreshPresence,
                                 fx.QueryPresence, fx.ExpireStale)):
            self._presence(effect)
        elif isinstance(effect, fx.StartTyping):
            if _now(self.typing.start(effect.conversation_id, effect.user_id, effect.expires_at)):
                self.submit(c.TypingChanged(effect.conversation_id, effect.user_id, True, self.now))
        elif isinstance(effect, fx.StopTyping):
            if _now(self.typing.stop(effect.conversation_id, effect.user_id)):
                self.submit(c.TypingChanged(effect.conversation_id, effect.user_id, False, self.now))
        else:
            raise AssertionError(f"the world does not know {effect!r}")

    def _presence(self, effect: fx.Effect) -> None:
        p = self.presence
        if isinstance(effect, fx.JoinPresence):
            if _now(p.join(effect.conversation_id, effect.user_id, effect.session_id, effect.expires_at)):
                self.submit(c.PresenceChanged(effect.conversation_id, effect.user_id, True, self.now))
        elif isinstance(effect, fx.LeavePresence):
            if _now(p.leave(effect.conversation_id, effect.user_id, effect.session_id, effect.at)):
                self.submit(c.PresenceChanged(effect.conversation_id, effect.user_id, False, self.now))
        elif isinstance(effect, fx.RejoinPresence):
            for cid, uid in _now(p.rejoin(effect.entries, effect.expires_at)):
                self.submit(c.PresenceChanged(cid, uid, True, self.now))
        elif isinstance(effect, fx.RefreshPresence):
            _now(p.refresh(effect.entries, effect.expires_at))
        elif isinstance(effect, fx.QueryPresence):
            users = _now(p.online(effect.conversation_id, effect.at))
            self.submit(c.PresenceListed(effect.conn_id, effect.conversation_id, tuple(users), self.now))
        elif isinstance(effect, fx.ExpireStale):
            for cid, uid in _now(p.expire(effect.at)):
                self.submit(c.PresenceChanged(cid, uid, False, self.now))
            for cid, uid in _now(self.typing.expire(effect.at)):
                self.submit(c.TypingChanged(cid, uid, False, self.now))

    def typists(self, conversation_id: str) -> set[str]:
        """Who the typing store holds for the conversation (the adapter has no reader for it)."""
        return set(self.typing._convs.get(conversation_id, ()))

    def online(self, conversation_id: str) -> list[str]:
        """Who the presence store says is online now."""
        return list(_now(self.presence.online(conversation_id, self.now)))
