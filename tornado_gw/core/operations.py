"""The slow path of a connection: ``auth`` with resume, and ``subscribe``.

An operation moves through: membership checked -> channels live -> reply sent
-> (replay loaded) -> done. Each step is entered by a command; nothing here
waits. While it runs, the live frames of its channels are held in its buffer
(``state.Operation``) so the client sees reply, replay, ``replay.done``, then
live, with no gap and no duplicate (CONTRACT §4).
"""

from __future__ import annotations

from tornado_gw.core import access, frames, presence
from tornado_gw.core import effects as fx
from tornado_gw.core import events as ev
from tornado_gw.core.events import record
from tornado_gw.core.ids import conv_channel, user_channel
from tornado_gw.core.protocol import ErrorCode
from tornado_gw.core.records import LoggedEvent, SessionSnapshot
from tornado_gw.core.replay import merge_replay
from tornado_gw.core.state import Connection, Gateway, Operation

Effects = list[fx.Effect]
OP_DEADLINE_S = 8.0  # an operation is answered this long after its request at the latest (< 10 s)
REREAD_S = 0.2  # a resume waiting for a removal to be numbered reads its replay again after this,
MAX_REREADS = 1  # at the next tick, once: a user who left without a removal event waits no longer


def begin(state: Gateway, conn: Connection, kind: str, requested: tuple[str, ...], last_seq: int | None,
          at: float) -> None:
    record(state, ev.OperationStarted(conn.conn_id, kind, requested, last_seq, at + OP_DEADLINE_S))


def start(state: Gateway, conn: Connection, at: float, out: Effects) -> None:
    """Ask for membership of the conversations new to ``conn``, or grant at once."""
    op = conn.op
    assert op is not None
    new = tuple(cid for cid in op.requested if cid not in conn.conversations)
    if state.limits.check_membership and new:
        assert conn.user_id is not None
        out.append(fx.CheckMembership(conn.conn_id, conn.user_id, new))
    else:
        grant(state, conn, frozenset(new), at, out)


def grant(state: Gateway, conn: Connection, allowed: frozenset[str], at: float, out: Effects) -> None:
    """Membership is known: subscribe the granted conversations' channels."""
    op = conn.op
    assert op is not None and conn.user_id is not None
    granted = tuple(cid for cid in op.requested
                    if (cid in allowed or cid in conn.conversations) and cid not in op.revoked)
    denied = tuple(cid for cid in op.requested if cid not in granted)
    added = tuple(cid for cid in granted if cid not in conn.conversations)
    channels = {conv_channel(cid) for cid in granted}
    if op.kind == "auth":
        channels.add(user_channel(conn.user_id))
    for channel in sorted(channels):
        add_subscriber(state, channel, conn.conn_id, out)
    waiting = frozenset(ch for ch in channels if ch not in state.ready)
    record(state, ev.Granted(conn.conn_id, granted, denied, added, frozenset(channels), waiting))
    if not waiting:
        reply(state, conn, at, out)


def add_subscriber(state: Gateway, channel: str, conn_id: str, out: Effects) -> None:
    new = channel not in state.subscribers
    record(state, ev.SubscriberAdded(channel, conn_id))
    if new:
        out.append(fx.SubscribeChannel(channel))


def remove_subscriber(state: Gateway, channel: str, conn_id: str, out: Effects) -> None:
    if channel not in state.subscribers:
        return
    record(state, ev.SubscriberRemoved(channel, conn_id))  # the channel's room goes with its last one
    if channel not in state.subscribers:
        out.append(fx.UnsubscribeChannel(channel))


def channel_ready(state: Gateway, channel: str, at: float, out: Effects) -> None:
    """The broker confirmed ``channel``: operations waiting only for it can reply."""
    if channel not in state.subscribers:
        return
    since = state.unconfirmed.get(channel)
    record(state, ev.ChannelWentLive(channel))
    if since is not None:  # answered before it was live: read back what it missed meanwhile
        record(state, ev.GapRequested())
        out.append(fx.LoadGap((channel,), since))
    for conn_id in sorted(state.subscribers[channel]):
        conn = state.connections[conn_id]
        op = conn.op
        if op is not None and channel in op.waiting:
            record(state, ev.ChannelConfirmed(conn_id, channel))
            if not op.waiting:
                reply(state, conn, at, out)


def reply(state: Gateway, conn: Connection, at: float, out: Effects) -> None:
    """Channels are live: answer, announce presence, then replay or finish."""
    op = conn.op
    assert op is not None and conn.user_id is not None and conn.session_id is not None
    assert conn.presence_id is not None
    limits = state.limits
    if op.kind == "auth":
        out.append(fx.SendFrame(conn.conn_id, frames.auth_success(
            conn.user_id, conn.session_id, op.resumed, conn.conversations)))
    else:
        out.append(fx.SendFrame(conn.conn_id, frames.subscribed(op.granted, op.denied)))
    for cid in (cid for cid in op.added if cid in conn.conversations):  # not revoked meanwhile
        presence.join(state, conn, cid, at, out)
    if op.previous_presence_id is not None:
        # The old connection's entries go now that the new ones stand (no flap), so an
        # unsubscribe of the resumed session is announced at once (CONTRACT §3).
        for cid in op.requested:
            out.append(fx.LeavePresence(cid, conn.user_id, op.previous_presence_id, at))
    out.append(save_session(state, conn))
    if op.last_seq is None:  # a channel subscribed again keeps dropping what was sent before
        starts = tuple((ch, conn.delivered.get(ch, conn.forgotten_seq)) for ch in sorted(op.channels))
        record(state, ev.Replied(conn.conn_id, starts, False))
        finish(state, conn, at, out)
        return
    last_seq = op.last_seq
    starts = tuple((ch, max(conn.delivered.get(ch, 0), last_seq)) for ch in sorted(op.channels))
    record(state, ev.Replied(conn.conn_id, starts, True))
    out.append(fx.LoadReplay(conn.conn_id, access.replay_channels(conn, op), op.last_seq,
                             limits.replay_max_events))


def replay_loaded(state: Gateway, conn: Connection, events: tuple[LoggedEvent, ...] | None,
                  at: float, out: Effects) -> None:
    """Send the replay merged with the buffered live frames, then ``replay.done``."""
    op = conn.op
    if op is None or not op.replaying:
        return
    if (events is not None and op.rereads < MAX_REREADS and at + REREAD_S < op.deadline_at
            and _removal_unnumbered(conn, op, events)):
        record(state, ev.ReplayRereadAt(conn.conn_id, at + REREAD_S))
        return
    count = _send_visible(state, conn, op, events or (), at, out, paced=True)
    out.append(fx.SendFrame(conn.conn_id, frames.replay_done(count, events is not None)))
    finish(state, conn, at, out)


def _removal_unnumbered(conn: Connection, op: Operation, events: tuple[LoggedEvent, ...]) -> bool:
    """A resume whose session had a conversation the membership check denied, and no
    removal of it in the replay or held: either the user left without a removal event, or
    the API server's transaction removed the member row and the relay has not numbered its
    ``membership.removed`` yet. Sent now, the replay would drop the events below such a
    removal (rule 1); read once more at the next tick instead (the relay numbers within
    milliseconds), which costs a user who left up to a tick."""
    if not (op.kind == "auth" and op.resumed and op.denied):
        return False
    _shown, _held, cuts = access.visible(conn, op, events, op.buffer)
    return any(cid not in cuts for cid in op.denied)


def reread_replays(state: Gateway, at: float, out: Effects) -> None:
    """Read again the replays put off by ``replay_loaded`` whose time has come."""
    due = [conn for conn in state.connections.values()
           if conn.op is not None and conn.op.reread_at is not None and at >= conn.op.reread_at]
    for conn in sorted(due, key=lambda conn: conn.conn_id):
        op = conn.op
        assert op is not None and op.last_seq is not None
        record(state, ev.ReplayRereadAt(conn.conn_id, None))
        out.append(fx.LoadReplay(conn.conn_id, access.replay_channels(conn, op), op.last_seq,
                                 state.limits.replay_max_events))


def finish(state: Gateway, conn: Connection, at: float, out: Effects) -> None:
    """Release the frames held during the operation; queued commands run next."""
    op = conn.op
    assert op is not None
    record(state, ev.OperationFinished(conn.conn_id))
    if op.gap_lost:
        out.append(fx.SendFrame(conn.conn_id, frames.replay_done(0, False)))
    _send_visible(state, conn, op, (), at, out)


def _send_visible(state: Gateway, conn: Connection, op: Operation, events: tuple[LoggedEvent, ...],
                  at: float, out: Effects, paced: bool = False) -> int:
    """Replay and held frames in seq order, cut where a conversation was revoked
    (``access`` rule 1); returns how many numbered events went out. A ``paced`` replay
    is written at the pace the client reads it (CONTRACT §4 v2)."""
    buffered = op.buffer
    if conn.op is op:
        record(state, ev.BufferTaken(conn.conn_id))
    shown, held, cuts = access.visible(conn, op, events, buffered)
    ordered, count, raised = merge_replay(shown, held, conn.delivered, conn.forgotten_seq)
    if raised:
        record(state, ev.CaughtUp(conn.conn_id, tuple(raised.items())))
    if paced:
        if ordered:
            out.append(fx.SendReplay(conn.conn_id, tuple(data for _channel, data, _kind in ordered)))
    else:
        _send_ordered(conn, ordered, out)
    if cuts:
        access.apply_cuts(state, conn, cuts, at, out)
    _forget_unwatched(state, conn)
    return count


def _forget_unwatched(state: Gateway, conn: Connection) -> None:
    """Channels replayed up to a removal but not kept (denied, cut) fold into
    ``forgotten_seq``, so a later replay of them skips what went out (state rule 3)."""
    kept = {conv_channel(cid) for cid in conn.conversations}
    if conn.user_id is not None:
        kept.add(user_channel(conn.user_id))
    for channel in [ch for ch in conn.delivered if ch not in kept]:
        record(state, ev.DeliveredForgotten(conn.conn_id, channel))


def _send_ordered(conn: Connection, ordered: list[tuple[str, bytes, str]], out: Effects) -> None:
    for _channel, data, kind in ordered:
        out.append(fx.Deliver((conn.conn_id,), data, kind))


def save_session(state: Gateway, conn: Connection, live: bool = True) -> fx.SaveSession:
    """Snapshot for resume: ``resume_window_s`` after a disconnect; while ``live``, long
    enough to outlast a crash by the window (refreshed every ``presence_ttl_s / 3``)."""
    return fx.SaveSession((snapshot(conn),), session_ttl(state, live))


def snapshot(conn: Connection) -> SessionSnapshot:
    assert conn.user_id is not None and conn.session_id is not None
    return SessionSnapshot(conn.session_id, conn.user_id, tuple(sorted(conn.conversations)), conn.presence_id)


def session_ttl(state: Gateway, live: bool) -> float:
    limits = state.limits
    return limits.resume_window_s + (limits.presence_ttl_s if live else 0.0)


def expire_late(state: Gateway, at: float, out: Effects) -> None:
    """Answer every operation past its deadline (CONTRACT §4 v2: within 10 s).

    Reads are bounded by the runtime and answer on their own; what can still be
    pending is the broker's confirmation of the channels. Where a log fills what is
    published meanwhile, the normal reply goes out and each channel is read back from
    the current seq once it is live (or by the gap fill after the outage); otherwise
    the operation is undone and answered ``error`` ``unavailable``.
    """
    late = [conn for conn in state.connections.values()
            if conn.op is not None and conn.op.waiting and at >= conn.op.deadline_at]
    late.sort(key=lambda conn: conn.conn_id)
    for conn in late:
        op = conn.op
        assert op is not None
        if state.limits.durable_log and state.high_seq is not None:
            for channel in sorted(op.waiting):
                record(state, ev.ChannelAnsweredUnconfirmed(channel, state.high_seq))
            record(state, ev.WaitAbandoned(conn.conn_id))
            reply(state, conn, at, out)
        else:
            abort(state, conn, "the message broker did not confirm the subscription in time", out)


def abort(state: Gateway, conn: Connection, reason: str, out: Effects) -> None:
    """Undo a running operation and answer ``error`` ``unavailable``: a ``subscribe``
    leaves the connection as it was; an ``auth`` leaves it unauthenticated (the client
    may send ``auth`` again)."""
    op = conn.op
    assert op is not None
    kept = {conv_channel(cid) for cid in conn.conversations if cid not in op.added}
    if op.kind == "subscribe" and conn.user_id is not None:
        kept.add(user_channel(conn.user_id))
    record(state, ev.OperationAborted(conn.conn_id))  # an auth leaves it connecting
    for channel in sorted(op.channels - kept):
        remove_subscriber(state, channel, conn.conn_id, out)
    out.append(fx.SendFrame(conn.conn_id, frames.error(ErrorCode.UNAVAILABLE, f"try again later: {reason}",
                                                       op.kind)))
