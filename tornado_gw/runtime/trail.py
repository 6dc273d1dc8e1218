"""The debug window (development mode only): each session's last events and its state,
for ``GET /debug/sessions/{session_id}``, so that "why did this client not get that
message" has an answer. Production never builds one: no ring per connection.

A connection's ring (made at its first event) keeps its own events, the objects
themselves, numbered; the messages of the broker go to one shared ring, with the
connections that got or held each, and a view merges in those of the connection's
channels: what it got, and what it did not. No work per recipient. The session id
(known once the auth operation loaded or made it) points at its latest connection;
a resume carries the previous connection's ring over. Bounded: ``RING`` events per
connection, ``MESSAGES`` broker messages, ``MAX_RINGS`` connections (oldest first out).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from typing import Any

from tornado_gw.core import events as ev
from tornado_gw.core import transitions
from tornado_gw.core.state import Gateway

RING = 50
MESSAGES = 1_000
MAX_RINGS = 10_000
Numbered = tuple[int, ev.Event]
# a broker message as the trail keeps it: no payload (a ring of 1,000 large frames is
# megabytes): number, type, channel, seq, frame type, who got it, whose operation held it
Ids = tuple[str, ...] | list[str]
Message = tuple[int, str, str, int | None, str, Ids, Ids]


class Trail:
    def __init__(self, state: Gateway) -> None:
        self._state = state
        self._count = itertools.count()
        self._rings: OrderedDict[str, deque[Numbered]] = OrderedDict()  # conn id -> its events
        self._messages: deque[Message] = deque(maxlen=MESSAGES)
        self._sessions: dict[str, str] = {}  # session id -> its latest connection
        self._named: dict[str, str] = {}  # connection -> the session it was named for

    def observe(self, events: list[ev.Event]) -> None:
        for event in events:
            if isinstance(event, ev.BrokerMessageApplied):
                self._messages.append((next(self._count), "BrokerMessageApplied", event.channel, event.seq,
                                       event.kind, event.delivered, event.held))
                continue
            if isinstance(event, ev.PresenceFrameHeld):
                self._messages.append((next(self._count), "PresenceFrameHeld", event.channel, None,
                                       event.kind, (), event.held))
                continue
            conn_id = getattr(event, "conn_id", None)
            if conn_id is not None:
                self._ring(conn_id).append((next(self._count), event))
            if isinstance(event, (ev.SessionResumed, ev.SessionCreated)):
                self._name(event.conn_id)

    def view(self, session_id: str) -> dict[str, Any] | None:
        """``{"state", "events"}`` of a session seen here; None for an unknown one."""
        conn_id = self._sessions.get(session_id)
        if conn_id is None:
            return None
        conn = self._state.connections.get(conn_id)
        state = None if conn is None else {
            "conn_id": conn.conn_id, "phase": conn.phase.value, "user_id": conn.user_id,
            "session_id": conn.session_id, "conversations": sorted(conn.conversations),
            "delivered": dict(conn.delivered), "token_expires_at": conn.token_expires_at,
            "operation": None if conn.op is None else {
                "kind": conn.op.kind, "step": transitions.step(conn), "requested": list(conn.op.requested),
                "waiting": sorted(conn.op.waiting), "held": len(conn.op.buffer)},
            "queued": len(conn.queued)}
        channels = set(conn.delivered) if conn is not None else set()
        own = list(self._rings.get(conn_id, ()))
        since = own[0][0] if own else 0
        described = [(n, ev.describe(event)) for n, event in own]
        described += [(n, {"type": kind, "channel": channel, "seq": seq, "kind": frame_type,
                            "delivered": list(delivered), "held": list(held)})
                      for n, kind, channel, seq, frame_type, delivered, held in self._messages
                      if n > since and (channel in channels or conn_id in held or conn_id in delivered)]
        described.sort(key=lambda numbered: numbered[0])
        return {"state": state, "events": [event for _n, event in described[-RING:]]}

    def _ring(self, conn_id: str) -> deque[Numbered]:
        ring = self._rings.get(conn_id)
        if ring is None:
            ring = self._rings[conn_id] = deque(maxlen=RING)
            if len(self._rings) > MAX_RINGS:
                gone, _ = self._rings.popitem(last=False)
                session_id = self._named.pop(gone, None)
                if session_id is not None and self._sessions.get(session_id) == gone:
                    del self._sessions[session_id]
        return ring

    def _name(self, conn_id: str) -> None:
        conn = self._state.connections.get(conn_id)
        if conn is None or conn.session_id is None:
            return
        previous = self._sessions.get(conn.session_id)
        if previous is not None and previous != conn_id and previous in self._rings:
            ring = self._ring(conn_id)
            self._rings[conn_id] = deque([*self._rings[previous], *ring], maxlen=RING)
        self._sessions[conn.session_id] = conn_id
        self._named[conn_id] = conn.session_id
