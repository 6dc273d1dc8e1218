"""The embedded default: every port in process, for one instance (CONTRACT §1).

These classes are also the fake the core and web tests use; they are trusted
because they pass the same contract suites as the Redis adapters
(``tests/adapters/test_*_contract.py``).

Rules kept here:
1. The broker never calls its sink inside ``subscribe``/``publish``: every call
   goes through ``loop.call_soon``, so callers never see re-entrant callbacks
   and FIFO scheduling keeps ``channel_ready`` before the channel's messages.
2. Presence and typing announce a transition only when an entry set goes from
   empty to non-empty or back, inside one synchronous step, so each transition
   is announced exactly once, in order.
3. Times come from the arguments; only session TTLs (``ttl_s`` is relative)
   read the injected ``clock``.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tornado_gw import metrics
from tornado_gw.codec import encode, encode_frame
from tornado_gw.core import frames
from tornado_gw.core.ids import conv_channel
from tornado_gw.core.records import LoggedEvent, PresencePage, SessionSnapshot
from tornado_gw.ports import Announce, BrokerSink, ReplayGap


class MemoryBroker:
    """In-process fan-out for a single instance: what is published here is
    delivered to this instance's sink only. Never goes down."""

    healthy = True

    def __init__(self) -> None:
        self._sink: BrokerSink | None = None
        self._channels: set[str] = set()

    async def start(self, sink: BrokerSink) -> None:
        self._sink = sink

    def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        asyncio.get_running_loop().call_soon(self._ready, channel)

    def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, data: bytes) -> None:
        """Deliver on a later loop iteration, in publish order, if subscribed now."""
        self.publish_nowait(channel, data)

    def publish_nowait(self, channel: str, data: bytes) -> None:
        """``publish`` for a caller that cannot await: the in-process stores' ``Announce``."""
        metrics.BROKER_PUBLISHED.inc()
        if channel in self._channels:
            asyncio.get_running_loop().call_soon(self._deliver, channel, data)

    async def close(self) -> None:
        self._sink = None
        self._channels.clear()

    def _ready(self, channel: str) -> None:
        if self._sink is not None and channel in self._channels:
            self._sink.channel_ready(channel)

    def _deliver(self, channel: str, data: bytes) -> None:
        # Checked again: an unsubscribe between publish and delivery wins.
        if self._sink is not None and channel in self._channels:
            metrics.BROKER_RECEIVED.inc()
            self._sink.message(channel, data)


class MemoryLog:
    """Bounded in-process event log (``memory_log_events`` entries) and the
    embedded ``Publisher``: numbers each event, keeps it for replay, then
    publishes the client frame through the broker."""

    def __init__(self, broker: MemoryBroker, max_events: int) -> None:
        if max_events < 1:
            raise ValueError(f"memory_log_events must be at least 1, got {max_events}")
        self._broker = broker
        self._events: deque[LoggedEvent] = deque(maxlen=max_events)
        self._last_seq = 0
        self._trimmed_through = 0  # highest seq dropped from the log

    async def publish(self, channel: str, event_type: str, payload: Any) -> dict[str, Any]:
        """Append and fan out; returns ``{"seq": N}`` (CONTRACT §2)."""
        self._last_seq += 1
        event = LoggedEvent(self._last_seq, channel, encode_frame(event_type, payload, self._last_seq))
        if len(self._events) == self._events.maxlen:
            self._trimmed_through = self._events[0].seq
        self._events.append(event)
        await self._broker.publish(channel, event.data)
        return {"seq": event.seq}

    async def head_seq(self) -> int:
        return self._last_seq

    async def read_after(self, channels: Sequence[str], after_seq: int, limit: int,
                         until_seq: int | None = None) -> list[LoggedEvent]:
        """Events after ``after_seq`` on ``channels`` in seq order.

        Raises:
            ReplayGap: events in the range were trimmed, or more than ``limit`` match.
        """
        if after_seq < self._trimmed_through:
            raise ReplayGap(f"log trimmed through seq {self._trimmed_through}, asked after {after_seq}")
        wanted = set(channels)
        found: list[LoggedEvent] = []
        for event in self._events_after(after_seq):
            if until_seq is not None and event.seq > until_seq:
                break
            if event.channel in wanted:
                if len(found) == limit:
                    raise ReplayGap(f"more than {limit} events after seq {after_seq}")
                found.append(event)
        return found

    def _events_after(self, after_seq: int) -> Iterator[LoggedEvent]:
        # Seqs are contiguous, so the first event after ``after_seq`` sits at a known index.
        if not self._events:
            return iter(())
        start = max(0, after_seq + 1 - self._events[0].seq)
        return (self._events[i] for i in range(start, len(self._events)))


class AllowAllMembership:
    """``authorization: none``: every authenticated user may subscribe anywhere."""

    async def allowed(self, user_id: str, conversation_ids: Sequence[str]) -> set[str]:
        return set(conversation_ids)

    async def allowed_many(self, asked: Sequence[tuple[str, Sequence[str]]]) -> list[set[str]]:
        return [set(conversation_ids) for _, conversation_ids in asked]

    def forget(self, user_id: str, conversation_id: str) -> None:
        """Nothing is cached."""


class MemorySessions:
    """Session snapshots for resume; ``ttl_s`` is measured on ``clock``. Expired
    snapshots are dropped as later ones are saved: one per closed connection would
    otherwise stay for the life of the process (issue 9 §7). Each user's session ids
    are kept beside them for ``delete_user``, and dropped with them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._snapshots: dict[str, tuple[SessionSnapshot, float]] = {}
        self._by_user: dict[str, set[str]] = {}
        self._deadlines = _Deadlines()

    def __len__(self) -> int:
        """Snapshots held, expired ones not yet dropped included."""
        return len(self._snapshots)

    async def save(self, snapshots: Sequence[SessionSnapshot], ttl_s: float) -> None:
        now = self._clock()
        for _, (session_id,) in self._deadlines.due(now):
            entry = self._snapshots.get(session_id)
            if entry is not None and entry[1] <= now:
                self._drop(session_id)
        expires_at = now + ttl_s
        for snapshot in snapshots:
            self._snapshots[snapshot.session_id] = (snapshot, expires_at)
            self._by_user.setdefault(snapshot.user_id, set()).add(snapshot.session_id)
            self._deadlines.push(expires_at, (snapshot.session_id,))

    async def load(self, session_id: str) -> SessionSnapshot | None:
        entry = self._snapshots.get(session_id)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._drop(session_id)
            return None
        return entry[0]

    async def load_many(self, session_ids: Sequence[str]) -> list[SessionSnapshot | None]:
        return [await self.load(session_id) for session_id in session_ids]

    async def delete(self, session_id: str) -> None:
        self._drop(session_id)

    async def delete_user(self, user_id: str) -> None:
        for session_id in list(self._by_user.get(user_id, ())):
            self._drop(session_id)

    def users(self) -> int:
        """Users with a snapshot held (the per-user index shrinks with the snapshots)."""
        return len(self._by_user)

    def _drop(self, session_id: str) -> None:
        entry = self._snapshots.pop(session_id, None)
        if entry is None:
            return
        user_id = entry[0].user_id
        sessions = self._by_user[user_id]
        sessions.discard(session_id)
        if not sessions:
            del self._by_user[user_id]


class _Deadlines:
    """Min-heap of (expires_at, key) with lazy deletion: a popped key is only a
    candidate, the owner checks it against the current expiry."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, tuple[str, ...]]] = []

    def push(self, expires_at: float, key: tuple[str, ...]) -> None:
        heapq.heappush(self._heap, (expires_at, key))

    def due(self, now: float) -> Iterator[tuple[float, tuple[str, ...]]]:
        while self._heap and self._heap[0][0] <= now:
            yield heapq.heappop(self._heap)


class MemoryPresence:
    """Per-session presence: conversation -> user -> session -> expires_at.
    An entry counts as expired when ``expires_at <= now``. Transitions are announced
    through ``announce`` inside the call that makes them (``ports.PresenceStore``)."""

    def __init__(self, announce: Announce) -> None:
        self._announce = announce
        self._convs: dict[str, dict[str, dict[str, float]]] = {}
        self._sorted: dict[str, list[str]] = {}  # conversation -> online user ids, in order, for pages
        self._deadlines = _Deadlines()

    async def join(self, conversation_id: str, user_id: str, session_id: str, expires_at: float) -> None:
        await self.rejoin([(conversation_id, user_id, session_id)], expires_at)

    async def leave(self, conversation_id: str, user_id: str, session_id: str, now: float) -> None:
        """Also drops the user's other sessions there that expired by ``now``,
        so ``expire`` cannot announce the same offline transition again."""
        sessions = self._convs.get(conversation_id, {}).get(user_id)
        if not sessions:
            return
        sessions.pop(session_id, None)
        for other in [sid for sid, at in sessions.items() if at <= now]:
            del sessions[other]
        if not sessions:
            self._offline(conversation_id, user_id)
            self._publish(conversation_id, [], [user_id])

    async def rejoin(self, entries: Sequence[tuple[str, str, str]], expires_at: float) -> None:
        joined: dict[str, list[str]] = {}
        for conversation_id, user_id, session_id in entries:
            sessions = self._convs.setdefault(conversation_id, {}).setdefault(user_id, {})
            if not sessions:
                joined.setdefault(conversation_id, []).append(user_id)
                insort(self._sorted.setdefault(conversation_id, []), user_id)
            sessions[session_id] = expires_at
            self._deadlines.push(expires_at, (conversation_id, user_id, session_id))
        for conversation_id, user_ids in joined.items():
            self._publish(conversation_id, user_ids, [])

    async def refresh(self, entries: Sequence[tuple[str, str, str]], expires_at: float) -> None:
        for conversation_id, user_id, session_id in entries:
            sessions = self._convs.get(conversation_id, {}).get(user_id, {})
            if session_id in sessions and sessions[session_id] != expires_at:
                sessions[session_id] = expires_at
                self._deadlines.push(expires_at, (conversation_id, user_id, session_id))

    async def page(self, conversation_id: str, after: str | None, limit: int) -> PresencePage:
        online = self._sorted.get(conversation_id, [])
        start = 0 if after is None else bisect_right(online, after)
        return PresencePage(tuple(online[start:start + limit]), len(online))

    async def announce(self, conversation_id: str, list_limit: int) -> None:
        users = self._sorted.get(conversation_id, [])[:list_limit] if list_limit else None
        self._publish(conversation_id, [], [], users)

    async def announce_many(self, asked: Sequence[tuple[str, int]]) -> None:
        for conversation_id, list_limit in asked:
            await self.announce(conversation_id, list_limit)

    async def expire(self, now: float) -> None:
        offline: dict[str, list[str]] = {}
        for at, (conversation_id, user_id, session_id) in self._deadlines.due(now):
            sessions = self._convs.get(conversation_id, {}).get(user_id)
            if not sessions or sessions.get(session_id) != at:
                continue  # left, refreshed or re-joined since this deadline was pushed
            del sessions[session_id]
            if not sessions:
                self._offline(conversation_id, user_id)
                offline.setdefault(conversation_id, []).append(user_id)
        for conversation_id, user_ids in offline.items():
            self._publish(conversation_id, [], user_ids)

    def _offline(self, conversation_id: str, user_id: str) -> None:
        _drop(self._convs, conversation_id, user_id)
        online = self._sorted[conversation_id]
        del online[bisect_left(online, user_id)]
        if not online:
            del self._sorted[conversation_id]

    def _publish(self, conversation_id: str, joins: list[str], leaves: list[str],
                 users: list[str] | None = None) -> None:
        count = len(self._convs.get(conversation_id, ()))
        frame = frames.presence_transition(conversation_id, joins, leaves, count, users)
        self._announce(conv_channel(conversation_id), encode(frame))


class MemoryTyping:
    """Who is typing where: conversation -> user -> expires_at; ``typing.start`` and
    ``typing.stop`` are announced through ``announce`` (``ports.TypingStore``)."""

    def __init__(self, announce: Announce) -> None:
        self._announce = announce
        self._convs: dict[str, dict[str, float]] = {}
        self._deadlines = _Deadlines()

    async def start(self, conversation_id: str, user_id: str, expires_at: float) -> None:
        users = self._convs.setdefault(conversation_id, {})
        was_typing = user_id in users
        users[user_id] = expires_at
        self._deadlines.push(expires_at, (conversation_id, user_id))
        if not was_typing:
            self._publish(conversation_id, user_id, True)

    async def stop(self, conversation_id: str, user_id: str) -> None:
        users = self._convs.get(conversation_id)
        if users is not None and user_id in users:
            _drop(self._convs, conversation_id, user_id)
            self._publish(conversation_id, user_id, False)

    async def expire(self, now: float) -> None:
        for at, (conversation_id, user_id) in self._deadlines.due(now):
            if self._convs.get(conversation_id, {}).get(user_id) == at:
                _drop(self._convs, conversation_id, user_id)
                self._publish(conversation_id, user_id, False)

    def _publish(self, conversation_id: str, user_id: str, started: bool) -> None:
        frame = frames.typing(conversation_id, user_id, started)
        self._announce(conv_channel(conversation_id), encode(frame))


def _drop(convs: dict[str, dict[str, Any]], conversation_id: str, user_id: str) -> None:
    """Remove a user's entry, and the conversation once it has nobody left."""
    users = convs[conversation_id]
    del users[user_id]
    if not users:
        del convs[conversation_id]
