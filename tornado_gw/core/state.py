"""The gateway's state: plain data, changed only by ``events.evolve``.

Rules (each checked by the property tests in tests/core/):
1. A connection is in ``subscribers[channel]`` iff the channel is its user
   channel or one of its ``conversations`` (and it is authenticated).
2. ``subscribers`` has no empty sets, and the broker is subscribed to exactly
   its keys.
3. ``delivered[channel]`` only grows: a connection never receives a ``seq`` on
   a channel at or below one it already got. It holds the connection's current
   channels only; an unsubscribe folds the channel's entry into
   ``forgotten_seq``, the start of a channel subscribed again without
   ``last_seq`` (seqs are one sequence in publish order, so nothing published
   after the new ``subscribed`` is at or below it).
4. At most one slow operation (auth resume, subscribe) runs per connection;
   client commands that arrive meanwhile wait in ``queued``, in order.
5. ``typing`` holds only conversations some local connection is subscribed to.
Timers are data: deadlines derive from the stored times and ``Tick.at``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tornado_gw.core.commands import BrokerMessage, Command


class Phase(Enum):
    CONNECTING = "connecting"
    AUTHENTICATED = "authenticated"
    CLOSING = "closing"


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings the core needs (built from ``Settings`` by the server). The defaults
    written here are the settings' defaults too (``settings.py`` reads them)."""

    auth_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    typing_ttl_s: float = 10.0
    presence_ttl_s: float = 90.0
    presence_grace_s: float = 15.0
    resume_window_s: float = 120.0
    max_subscriptions: int = 500
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    replay_max_events: int = 1000
    presence_batch_ms: float = 250.0
    presence_list_max: int = 200
    presence_count_interval_s: float = 10.0
    max_connections_per_user: int = 100
    check_membership: bool = False
    durable_log: bool = True  # a log can fill what a broker outage loses (embedded, or Postgres)


@dataclass(slots=True)
class Operation:
    """An ``auth`` or ``subscribe`` waiting for membership, channels or a replay.

    Live frames of its channels are held in ``buffer`` until its reply (and
    replay, if asked) has been sent, so that the client sees reply, replay,
    ``replay.done``, live, in that order (CONTRACT §4, PITFALLS 4).
    """

    kind: str  # "auth" or "subscribe"
    requested: tuple[str, ...]
    last_seq: int | None
    deadline_at: float  # answered by then, one way or another (CONTRACT §4 v2)
    resumed: bool = False
    previous_presence_id: str | None = None  # the resumed session's last connection
    granted: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    channels: frozenset[str] = frozenset()
    waiting: set[str] = field(default_factory=set)
    replaying: bool = False
    gap_lost: bool = False  # a broker gap on its connection could not be filled meanwhile
    revoked: dict[str, int] = field(default_factory=dict)  # requested, then removed: cid -> removal seq
    reread_at: float | None = None  # a resume's replay is read again then (a removal not numbered yet)
    rereads: int = 0  # how often it was
    buffer: list[tuple[int | None, str, bytes, str]] = field(default_factory=list)


@dataclass(slots=True)
class Connection:
    conn_id: str
    opened_at: float
    last_frame_at: float
    tokens: float
    refilled_at: float
    phase: Phase = Phase.CONNECTING
    user_id: str | None = None
    session_id: str | None = None
    new_session_id: str | None = None
    presence_id: str | None = None  # this connection's presence entry (one per connection)
    token_expires_at: float | None = None
    conversations: set[str] = field(default_factory=set)
    delivered: dict[str, int] = field(default_factory=dict)
    forgotten_seq: int = 0  # the highest seq delivered on a channel since unsubscribed (rule 3)
    warned: bool = False
    ended: bool = False  # closed by POST /disconnect: its session is deleted, not saved
    op: Operation | None = None
    queued: list[Command] = field(default_factory=list)


@dataclass(slots=True)
class Room:
    """Presence of one conversation with local subscribers (rules: ``core/presence.py``)."""

    count: int = 0
    known: bool = False  # a transition (with its count) arrived since the channel went live
    pending: list[tuple[str, bool]] | None = None  # (user, online) of the open batch, in order
    due_at: float | None = None  # when the open batch (or a large room's count) leaves
    listing: bool = True  # diffs list users; False: a large room, counts only
    relisting: bool = False  # back under the limit: waiting for the list
    sent_count: int | None = None  # the count of the last frame sent
    sent_at: float = float("-inf")  # when that frame was sent
    exposed: bool = False  # a presence.state page went out since the last flush (presence rule 5)


@dataclass(slots=True)
class Gateway:
    limits: Limits = field(default_factory=Limits)
    connections: dict[str, Connection] = field(default_factory=dict)
    presence_owners: dict[str, str] = field(default_factory=dict)  # presence id -> its open connection
    subscribers: dict[str, set[str]] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)
    high_seq: int | None = None  # highest seq seen on any channel or the log's head; None: unknown
    typing: dict[str, set[str]] = field(default_factory=dict)
    next_refresh_at: float = 0.0
    broker_down: bool = False
    stream_stopped_at: int | None = None  # high_seq when the broker went down: where its gap starts
    # channels answered before the broker confirmed them -> the seq to read them back from
    unconfirmed: dict[str, int] = field(default_factory=dict)
    gaps_pending: int = 0  # LoadGap reads not answered yet; broker frames wait in gap_held
    gap_held: list[BrokerMessage] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # ops finished with commands queued
    rooms: dict[str, Room] = field(default_factory=dict)  # conversation -> presence, while served here
    rooms_due: set[str] = field(default_factory=set)  # rooms with a due_at
    # the events applied since ``handle`` last took them (``events.record``); not state
    journal: list[Any] = field(default_factory=list, compare=False, repr=False)
