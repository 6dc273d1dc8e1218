"""What happened to the gateway's state, and ``evolve``: the only code that changes it.

The reducer's modules decide (they read the state, may refuse with a ``ClientError``,
and work out what follows); each change they settle on is an event, applied at once
by ``record`` (as an eventsourcing aggregate's ``trigger_event``), kept in the
state's journal for the caller, and turned into effects by the deciding code.
``evolve`` is total: one small function per event type, no I/O, no raise on good
events. ``rebuild(limits, events)`` folds a history from the empty state; the
property tests check it equals the live state after every step.

Hot path: a broker message is at most one ``BrokerMessageApplied`` that carries the
recipients' ids as the fan-out collected them, applied in one pass (no object per
recipient).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from tornado_gw.core.commands import BrokerMessage, Command
from tornado_gw.core.ids import conv_channel, conversation_of
from tornado_gw.core.state import Connection, Gateway, Limits, Operation, Phase, Room

# --- connections ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """A socket was accepted: a connection in ``connecting`` with a full token bucket."""

    conn_id: str
    at: float
    tokens: float


@dataclass(frozen=True, slots=True)
class FrameCounted:
    """A client frame arrived: idle clock and token bucket."""

    conn_id: str
    at: float
    tokens: float
    warned: bool


@dataclass(frozen=True, slots=True)
class ClosingStarted:
    """Nothing more is sent to it; its ``Disconnected`` follows when the socket closes."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The socket closed: the connection and its presence ownership are gone."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class EndedByServer:
    """``gw.disconnect``: the session is deleted, not saved (access rule 3)."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A valid token: the connection belongs to ``user_id`` and has its own presence id."""

    conn_id: str
    user_id: str
    expires_at: float | None
    new_session_id: str


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    """A new token for the same user: only the expiry moves."""

    conn_id: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class SessionResumed:
    """The session's snapshot was found: its conversations are asked for again."""

    conn_id: str
    session_id: str
    conversation_ids: tuple[str, ...]
    previous_presence_id: str | None


@dataclass(frozen=True, slots=True)
class SessionCreated:
    """No snapshot (or another user's): the connection's new session id is its session."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class CommandQueued:
    """A client command waits for the running operation (state rule 4)."""

    conn_id: str
    command: Command


@dataclass(frozen=True, slots=True)
class QueuedCommandTaken:
    """The oldest waiting command runs now."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class ReleaseTaken:
    """The reducer picked the first connection whose operation ended with commands waiting."""


@dataclass(frozen=True, slots=True)
class ConversationLeft:
    """Unsubscribed or revoked; the channel's last seq is folded into ``forgotten_seq``."""

    conn_id: str
    conversation_id: str


@dataclass(frozen=True, slots=True)
class DeliveredForgotten:
    """A channel replayed up to a removal but not kept folds into ``forgotten_seq``
    (state rule 3: a later replay of it skips what went out)."""

    conn_id: str
    channel: str


# --- operations ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperationStarted:
    """An ``auth`` or ``subscribe`` operation begins (``transitions`` steps)."""

    conn_id: str
    kind: str
    requested: tuple[str, ...]
    last_seq: int | None
    deadline_at: float


@dataclass(frozen=True, slots=True)
class Granted:
    """Membership known: the conversations granted, denied and added, the channels waited for."""

    conn_id: str
    granted: tuple[str, ...]
    denied: tuple[str, ...]
    added: tuple[str, ...]
    channels: frozenset[str]
    waiting: frozenset[str]


@dataclass(frozen=True, slots=True)
class ChannelConfirmed:
    """A channel an operation waited for is live (or gone)."""

    conn_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class WaitAbandoned:
    """Past its deadline, the operation answers without the broker's confirmation."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class Replied:
    """The reply went out: where each channel starts, and whether a replay is read."""

    conn_id: str
    delivered: tuple[tuple[str, int], ...]  # the start of each channel
    replaying: bool


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """A replay and the frames held during an operation went out: the highest seq sent."""

    conn_id: str
    delivered: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class BufferTaken:
    conn_id: str


@dataclass(frozen=True, slots=True)
class OperationFinished:
    """Done: held frames go out, waiting commands run."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class OperationAborted:
    """Undone: a subscribe leaves things as they were, an auth leaves it ``connecting``."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class Revoked:
    """A conversation an operation under way asked for was removed at ``seq``."""

    conn_id: str
    conversation_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class GapLostDuringOperation:
    """A gap could not be filled: ``replay.done {recovered: false}`` once it is done."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class ReplayRereadAt:
    """A resume's replay found no removal for a conversation of the session that is no
    longer allowed: its removal may be committed but not numbered yet, so the replay is
    read again at ``at`` (None: it is being read again now)."""

    conn_id: str
    at: float | None


# --- channels, broker, log -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriberAdded:
    """The connection listens on the channel (the first one subscribes the broker)."""

    channel: str
    conn_id: str


@dataclass(frozen=True, slots=True)
class SubscriberRemoved:
    """Also forgets the channel (and its room) once nobody here watches it."""

    channel: str
    conn_id: str


@dataclass(frozen=True, slots=True)
class ChannelWentLive:
    """The broker confirmed the channel."""

    channel: str


@dataclass(frozen=True, slots=True)
class ChannelAnsweredUnconfirmed:
    """An operation answered before the channel was live: read it back from ``seq``."""

    channel: str
    seq: int


@dataclass(frozen=True, slots=True)
class BrokerMessageApplied:
    """One broker message: the seq seen, who got it, whose operation holds it."""

    channel: str
    seq: int | None
    data: bytes
    kind: str
    delivered: tuple[str, ...] | list[str]
    held: tuple[str, ...] | list[str]


@dataclass(frozen=True, slots=True)
class PresenceFrameHeld:
    """A presence frame for subscribers whose operation has not replied yet."""

    channel: str
    data: bytes
    kind: str
    held: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BrokerMessageHeld:
    """A broker frame newer than a pending gap read waits for it."""

    message: BrokerMessage


@dataclass(frozen=True, slots=True)
class GapPageHeld:
    """A page of a gap read waits for the other gap reads."""

    messages: tuple[BrokerMessage, ...]


@dataclass(frozen=True, slots=True)
class GapRequested:
    """A gap read (``LoadGap``) went out: broker frames wait for its answer."""


@dataclass(frozen=True, slots=True)
class GapAnswered:
    """The last page of a gap read arrived."""


@dataclass(frozen=True, slots=True)
class GapHeldReleased:
    """Every gap read answered: the frames held meanwhile go out, merged by seq."""


@dataclass(frozen=True, slots=True)
class BrokerWentDown:
    """The broker connection was lost: the gap starts at the highest seq seen."""


@dataclass(frozen=True, slots=True)
class BrokerCameBack:
    """The broker is back: presence is re-created at the next tick, the gap is read."""


@dataclass(frozen=True, slots=True)
class LogHeadLearnt:
    """The durable log's head seq (at start-up)."""

    seq: int


@dataclass(frozen=True, slots=True)
class RefreshScheduled:
    """Presence and snapshots of live sessions are refreshed again at ``next_at``."""

    next_at: float


@dataclass(frozen=True, slots=True)
class TypingSeen:
    """``user_id`` types in the conversation (known here at once, or echoed by the broker)."""

    conversation_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class TypingEnded:
    """``typing.stop`` arrived from the broker."""

    conversation_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class TypingForgotten:
    """Nobody here watches the conversation any more: its typists are forgotten."""

    conversation_id: str


# --- presence rooms ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomOpened:
    """The conversation's channel is live here: its presence is followed."""

    conversation_id: str


@dataclass(frozen=True, slots=True)
class RoomCountForgotten:
    """After a broker outage the count is asked for again."""

    conversation_id: str


@dataclass(frozen=True, slots=True)
class RoomDue:
    """When the room's open batch (or count) leaves; None: nothing due."""

    conversation_id: str
    due_at: float | None


@dataclass(frozen=True, slots=True)
class TransitionReceived:
    """The store's ``presence.transition``: the count after it, batched joins and leaves."""

    conversation_id: str
    count: int
    joins: tuple[str, ...]
    leaves: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoomBatchTaken:
    """The open batch was netted and sent (or dropped by a relist)."""

    conversation_id: str
    diffed: bool  # by a presence.diff: a page shown before it is covered (rule 5)


@dataclass(frozen=True, slots=True)
class RoomPageShown:
    """A ``presence.state`` page went out to a local client: the next diff reports each
    user its batch touched by their final state (rule 5)."""

    conversation_id: str


@dataclass(frozen=True, slots=True)
class RoomSent:
    """A presence frame went out with the current count."""

    conversation_id: str
    at: float


@dataclass(frozen=True, slots=True)
class RoomListing:
    """Diffs list users (or, for a large room, carry the count only)."""

    conversation_id: str
    listing: bool


@dataclass(frozen=True, slots=True)
class RoomRelisting:
    """Waiting for the whole list after a large room shrank (or it arrived)."""

    conversation_id: str
    relisting: bool


Event = Any  # one of the dataclasses above

# --- evolve ----------------------------------------------------------------------------


def _connected(s: Gateway, e: Connected) -> None:
    s.connections[e.conn_id] = Connection(e.conn_id, e.at, e.at, e.tokens, e.at)


def _frame_counted(s: Gateway, e: FrameCounted) -> None:
    conn = s.connections[e.conn_id]
    conn.last_frame_at = conn.refilled_at = e.at
    conn.tokens, conn.warned = e.tokens, e.warned


def _closing_started(s: Gateway, e: ClosingStarted) -> None:
    s.connections[e.conn_id].phase = Phase.CLOSING


def _disconnected(s: Gateway, e: Disconnected) -> None:
    conn = s.connections.pop(e.conn_id)
    if conn.presence_id is not None:
        s.presence_owners.pop(conn.presence_id, None)


def _ended_by_server(s: Gateway, e: EndedByServer) -> None:
    s.connections[e.conn_id].ended = True


def _authenticated(s: Gateway, e: Authenticated) -> None:
    conn = s.connections[e.conn_id]
    conn.phase = Phase.AUTHENTICATED
    conn.user_id = e.user_id
    conn.token_expires_at = e.expires_at
    conn.new_session_id = conn.presence_id = e.new_session_id  # unique per connection
    s.presence_owners[e.new_session_id] = e.conn_id


def _token_refreshed(s: Gateway, e: TokenRefreshed) -> None:
    s.connections[e.conn_id].token_expires_at = e.expires_at


def _session_resumed(s: Gateway, e: SessionResumed) -> None:
    conn = s.connections[e.conn_id]
    op = conn.op
    assert op is not None
    conn.session_id = e.session_id
    op.resumed = True
    op.requested = e.conversation_ids
    op.previous_presence_id = e.previous_presence_id


def _session_created(s: Gateway, e: SessionCreated) -> None:
    conn = s.connections[e.conn_id]
    conn.session_id = conn.new_session_id
    op = conn.op
    assert op is not None
    op.resumed, op.requested, op.previous_presence_id = False, (), None  # nothing of a resume given up


def _command_queued(s: Gateway, e: CommandQueued) -> None:
    s.connections[e.conn_id].queued.append(e.command)


def _queued_command_taken(s: Gateway, e: QueuedCommandTaken) -> None:
    del s.connections[e.conn_id].queued[0]


def _release_taken(s: Gateway, e: ReleaseTaken) -> None:
    del s.released[0]


def _conversation_left(s: Gateway, e: ConversationLeft) -> None:
    conn = s.connections[e.conn_id]
    conn.conversations.discard(e.conversation_id)
    channel = conv_channel(e.conversation_id)
    conn.forgotten_seq = max(conn.forgotten_seq, conn.delivered.pop(channel, 0))


def _delivered_forgotten(s: Gateway, e: DeliveredForgotten) -> None:
    conn = s.connections[e.conn_id]
    conn.forgotten_seq = max(conn.forgotten_seq, conn.delivered.pop(e.channel))


def _op(s: Gateway, conn_id: str) -> Operation:
    op = s.connections[conn_id].op
    assert op is not None
    return op


def _operation_started(s: Gateway, e: OperationStarted) -> None:
    s.connections[e.conn_id].op = Operation(e.kind, e.requested, e.last_seq, e.deadline_at)


def _granted(s: Gateway, e: Granted) -> None:
    conn = s.connections[e.conn_id]
    op = _op(s, e.conn_id)
    op.granted, op.denied, op.added = e.granted, e.denied, e.added
    conn.conversations.update(e.added)
    op.channels = e.channels
    op.waiting = set(e.waiting)


def _channel_confirmed(s: Gateway, e: ChannelConfirmed) -> None:
    _op(s, e.conn_id).waiting.discard(e.channel)


def _wait_abandoned(s: Gateway, e: WaitAbandoned) -> None:
    _op(s, e.conn_id).waiting.clear()


def _replied(s: Gateway, e: Replied) -> None:
    conn = s.connections[e.conn_id]
    conn.delivered.update(e.delivered)
    _op(s, e.conn_id).replaying = e.replaying


def _caught_up(s: Gateway, e: CaughtUp) -> None:
    s.connections[e.conn_id].delivered.update(e.delivered)


def _buffer_taken(s: Gateway, e: BufferTaken) -> None:
    _op(s, e.conn_id).buffer = []


def _operation_finished(s: Gateway, e: OperationFinished) -> None:
    conn = s.connections[e.conn_id]
    conn.op = None
    if conn.queued:
        s.released.append(e.conn_id)


def _operation_aborted(s: Gateway, e: OperationAborted) -> None:
    conn = s.connections[e.conn_id]
    op = _op(s, e.conn_id)
    conn.op = None
    conn.conversations.difference_update(op.added)
    if op.kind == "auth":
        if conn.presence_id is not None:
            s.presence_owners.pop(conn.presence_id, None)
        conn.phase = Phase.CONNECTING
        conn.user_id = conn.session_id = conn.new_session_id = conn.presence_id = None
        conn.token_expires_at = None
        conn.conversations.clear()
    if conn.queued:
        s.released.append(e.conn_id)


def _revoked(s: Gateway, e: Revoked) -> None:
    op = _op(s, e.conn_id)
    cid = e.conversation_id
    op.revoked[cid] = min(e.seq, op.revoked.get(cid, e.seq))
    if cid in op.granted:  # granted already: the reply lists it as denied
        op.granted = tuple(x for x in op.granted if x != cid)
        op.denied = (*op.denied, cid)


def _gap_lost_during_operation(s: Gateway, e: GapLostDuringOperation) -> None:
    _op(s, e.conn_id).gap_lost = True


def _replay_reread_at(s: Gateway, e: ReplayRereadAt) -> None:
    op = _op(s, e.conn_id)
    op.reread_at = e.at
    if e.at is not None:
        op.rereads += 1


def _subscriber_added(s: Gateway, e: SubscriberAdded) -> None:
    subscribers = s.subscribers.get(e.channel)
    if subscribers is None:
        s.subscribers[e.channel] = {e.conn_id}
    else:
        subscribers.add(e.conn_id)


def _subscriber_removed(s: Gateway, e: SubscriberRemoved) -> None:
    subscribers = s.subscribers.get(e.channel)
    if subscribers is None:
        return
    subscribers.discard(e.conn_id)
    if subscribers:
        return
    del s.subscribers[e.channel]
    s.ready.discard(e.channel)
    s.unconfirmed.pop(e.channel, None)
    cid = conversation_of(e.channel)
    if cid is not None and s.rooms.pop(cid, None) is not None:
        s.rooms_due.discard(cid)


def _channel_went_live(s: Gateway, e: ChannelWentLive) -> None:
    s.ready.add(e.channel)
    s.unconfirmed.pop(e.channel, None)


def _channel_answered_unconfirmed(s: Gateway, e: ChannelAnsweredUnconfirmed) -> None:
    s.unconfirmed[e.channel] = min(s.unconfirmed.get(e.channel, e.seq), e.seq)


def _broker_message_applied(s: Gateway, e: BrokerMessageApplied) -> None:
    """The hot path: one pass over the recipients the fan-out collected."""
    seq, channel, connections = e.seq, e.channel, s.connections
    if seq is not None:
        if seq > (s.high_seq or 0):
            s.high_seq = seq
        for conn_id in e.delivered:
            connections[conn_id].delivered[channel] = seq
    for conn_id in e.held:
        op = connections[conn_id].op
        assert op is not None
        op.buffer.append((seq, channel, e.data, e.kind))


def _presence_frame_held(s: Gateway, e: PresenceFrameHeld) -> None:
    for conn_id in e.held:
        op = s.connections[conn_id].op
        assert op is not None
        op.buffer.append((None, e.channel, e.data, e.kind))


def _broker_message_held(s: Gateway, e: BrokerMessageHeld) -> None:
    s.gap_held.append(e.message)


def _gap_page_held(s: Gateway, e: GapPageHeld) -> None:
    s.gap_held.extend(e.messages)


def _gap_requested(s: Gateway, e: GapRequested) -> None:
    s.gaps_pending += 1


def _gap_answered(s: Gateway, e: GapAnswered) -> None:
    s.gaps_pending = max(0, s.gaps_pending - 1)


def _gap_held_released(s: Gateway, e: GapHeldReleased) -> None:
    s.gap_held = []


def _broker_went_down(s: Gateway, e: BrokerWentDown) -> None:
    s.broker_down = True
    s.stream_stopped_at = s.high_seq


def _broker_came_back(s: Gateway, e: BrokerCameBack) -> None:
    s.broker_down = False
    s.next_refresh_at = 0.0  # re-create presence that expired meanwhile at the next tick


def _log_head_learnt(s: Gateway, e: LogHeadLearnt) -> None:
    s.high_seq = max(s.high_seq or 0, e.seq)


def _refresh_scheduled(s: Gateway, e: RefreshScheduled) -> None:
    s.next_refresh_at = e.next_at


def _typing_seen(s: Gateway, e: TypingSeen) -> None:
    s.typing.setdefault(e.conversation_id, set()).add(e.user_id)


def _typing_ended(s: Gateway, e: TypingEnded) -> None:
    typists = s.typing.get(e.conversation_id)
    if typists is None:
        return
    typists.discard(e.user_id)
    if not typists:
        del s.typing[e.conversation_id]


def _typing_forgotten(s: Gateway, e: TypingForgotten) -> None:
    s.typing.pop(e.conversation_id, None)


def _room_opened(s: Gateway, e: RoomOpened) -> None:
    s.rooms[e.conversation_id] = Room()


def _room_count_forgotten(s: Gateway, e: RoomCountForgotten) -> None:
    s.rooms[e.conversation_id].known = False


def _room_due(s: Gateway, e: RoomDue) -> None:
    s.rooms[e.conversation_id].due_at = e.due_at
    if e.due_at is None:
        s.rooms_due.discard(e.conversation_id)
    else:
        s.rooms_due.add(e.conversation_id)


def _transition_received(s: Gateway, e: TransitionReceived) -> None:
    room = s.rooms[e.conversation_id]
    room.count, room.known = e.count, True
    if room.listing and (e.joins or e.leaves):
        room.pending = room.pending or []  # made on demand: most rooms are quiet
        room.pending.extend((user_id, True) for user_id in e.joins)
        room.pending.extend((user_id, False) for user_id in e.leaves)


def _room_batch_taken(s: Gateway, e: RoomBatchTaken) -> None:
    room = s.rooms[e.conversation_id]
    room.pending = None
    if e.diffed:
        room.exposed = False


def _room_page_shown(s: Gateway, e: RoomPageShown) -> None:
    room = s.rooms[e.conversation_id]
    room.exposed, room.sent_count = True, None


def _room_sent(s: Gateway, e: RoomSent) -> None:
    room = s.rooms[e.conversation_id]
    room.sent_count, room.sent_at = room.count, e.at


def _room_listing(s: Gateway, e: RoomListing) -> None:
    s.rooms[e.conversation_id].listing = e.listing


def _room_relisting(s: Gateway, e: RoomRelisting) -> None:
    s.rooms[e.conversation_id].relisting = e.relisting


_EVOLVE: dict[type, Callable[[Gateway, Any], None]] = {
    Connected: _connected, FrameCounted: _frame_counted, ClosingStarted: _closing_started,
    Disconnected: _disconnected, EndedByServer: _ended_by_server, Authenticated: _authenticated,
    TokenRefreshed: _token_refreshed, SessionResumed: _session_resumed, SessionCreated: _session_created,
    CommandQueued: _command_queued, QueuedCommandTaken: _queued_command_taken, ReleaseTaken: _release_taken,
    ConversationLeft: _conversation_left, DeliveredForgotten: _delivered_forgotten,
    OperationStarted: _operation_started, Granted: _granted, ChannelConfirmed: _channel_confirmed,
    WaitAbandoned: _wait_abandoned, Replied: _replied, CaughtUp: _caught_up, BufferTaken: _buffer_taken,
    OperationFinished: _operation_finished, OperationAborted: _operation_aborted, Revoked: _revoked,
    GapLostDuringOperation: _gap_lost_during_operation, ReplayRereadAt: _replay_reread_at,
    SubscriberAdded: _subscriber_added,
    SubscriberRemoved: _subscriber_removed, ChannelWentLive: _channel_went_live,
    ChannelAnsweredUnconfirmed: _channel_answered_unconfirmed, BrokerMessageApplied: _broker_message_applied,
    PresenceFrameHeld: _presence_frame_held, BrokerMessageHeld: _broker_message_held,
    GapPageHeld: _gap_page_held, GapRequested: _gap_requested, GapAnswered: _gap_answered,
    GapHeldReleased: _gap_held_released, BrokerWentDown: _broker_went_down,
    BrokerCameBack: _broker_came_back, LogHeadLearnt: _log_head_learnt, RefreshScheduled: _refresh_scheduled,
    TypingSeen: _typing_seen, TypingEnded: _typing_ended, TypingForgotten: _typing_forgotten,
    RoomOpened: _room_opened, RoomCountForgotten: _room_count_forgotten, RoomDue: _room_due,
    TransitionReceived: _transition_received, RoomBatchTaken: _room_batch_taken,
    RoomPageShown: _room_page_shown, RoomSent: _room_sent,
    RoomListing: _room_listing, RoomRelisting: _room_relisting,
}


def evolve(state: Gateway, event: Event) -> None:
    """Apply one event: the only code that changes the gateway's state."""
    _EVOLVE[type(event)](state, event)


def record(state: Gateway, event: Event) -> None:
    """Apply ``event`` now and keep it for the caller of ``handle`` (``take``)."""
    _EVOLVE[type(event)](state, event)
    state.journal.append(event)


def take(state: Gateway) -> list[Event]:
    """The events recorded since the last call, oldest first."""
    events = state.journal
    if events:
        state.journal = []
    return events


def rebuild(limits: Limits, events: Iterable[Event]) -> Gateway:
    """The state that ``events`` lead to from the empty one."""
    state = Gateway(limits)
    for event in events:
        evolve(state, event)
    return state


def describe(event: Event) -> dict[str, Any]:
    """An event as JSON-ready data with its ``type`` (the debug window and the log)."""
    out: dict[str, Any] = {"type": type(event).__name__}
    for f in fields(event):
        out[f.name] = _plain(getattr(event, f.name))
    return out


DESCRIBED_BYTES = 200  # of a frame's data in a description: enough to tell which message


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value[:DESCRIBED_BYTES].decode(errors="replace")
    if isinstance(value, (tuple, list, frozenset, set)):
        return [_plain(v) for v in (sorted(value) if isinstance(value, (frozenset, set)) else value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return type(value).__name__
