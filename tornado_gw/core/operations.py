"""The slow path of a connection: ``auth`` with resume, and ``subscribe``.

An operation moves through: membership checked -> channels live -> reply sent
-> (replay loaded) -> done. Each step is entered by a command; nothing here
waits. While it runs, the live frames of its channels are held in its buffer
(``state.Operation``) so the client sees reply, replay, ``replay.done``, then
live, with no gap and no duplicate (CONTRACT §4).
"""

from __future__ import annotations

from tornado_gw.core import effects as fx
from tornado_gw.core import frames
from tornado_gw.core.ids import conv_channel, user_channel
from tornado_gw.core.records import LoggedEvent, SessionSnapshot
from tornado_gw.core.replay import merge_replay
from tornado_gw.core.state import Connection, Gateway, Operation

Effects = list[fx.Effect]


def start(state: Gateway, conn: Connection, op: Operation, at: float, out: Effects) -> None:
    """Begin ``op``: ask for membership of the new conversations, or grant at once."""
    conn.op = op
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
    granted = tuple(cid for cid in op.requested if cid in allowed or cid in conn.conversations)
    op.granted = granted
    op.denied = tuple(cid for cid in op.requested if cid not in granted)
    op.added = tuple(cid for cid in granted if cid not in conn.conversations)
    channels = {conv_channel(cid) for cid in granted}
    if op.kind == "auth":
        channels.add(user_channel(conn.user_id))
    for channel in channels:
        add_subscriber(state, channel, conn.conn_id, out)
    conn.conversations.update(op.added)
    op.channels = frozenset(channels)
    op.waiting = {ch for ch in channels if ch not in state.ready}
    if not op.waiting:
        reply(state, conn, at, out)


def add_subscriber(state: Gateway, channel: str, conn_id: str, out: Effects) -> None:
    subscribers = state.subscribers.get(channel)
    if subscribers is None:
        state.subscribers[channel] = {conn_id}
        out.append(fx.SubscribeChannel(channel))
    else:
        subscribers.add(conn_id)


def remove_subscriber(state: Gateway, channel: str, conn_id: str, out: Effects) -> None:
    subscribers = state.subscribers.get(channel)
    if subscribers is None:
        return
    subscribers.discard(conn_id)
    if not subscribers:
        del state.subscribers[channel]
        state.ready.discard(channel)
        state.channel_seq.pop(channel, None)
        out.append(fx.UnsubscribeChannel(channel))


def channel_ready(state: Gateway, channel: str, at: float, out: Effects) -> None:
    """The broker confirmed ``channel``: operations waiting only for it can reply."""
    if channel not in state.subscribers:
        return
    state.ready.add(channel)
    for conn_id in state.subscribers[channel]:
        conn = state.connections[conn_id]
        op = conn.op
        if op is not None and channel in op.waiting:
            op.waiting.discard(channel)
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
    for cid in op.added:
        out.append(fx.JoinPresence(cid, conn.user_id, conn.presence_id, at + limits.presence_ttl_s))
    if op.previous_presence_id is not None:
        # The old connection's entries go now that the new ones stand (no flap), so an
        # unsubscribe of the resumed session is announced at once (CONTRACT §3).
        for cid in op.requested:
            out.append(fx.LeavePresence(cid, conn.user_id, op.previous_presence_id, at))
    out.append(save_session(state, conn))
    if op.last_seq is None:
        for channel in op.channels:  # a channel subscribed again keeps dropping what was sent before
            conn.delivered.setdefault(channel, conn.forgotten_seq)
        finish(state, conn, out)
        return
    for channel in op.channels:
        conn.delivered[channel] = max(conn.delivered.get(channel, 0), op.last_seq)
    op.replaying = True
    out.append(fx.LoadReplay(conn.conn_id, tuple(sorted(op.channels)), op.last_seq, limits.replay_max_events))


def replay_loaded(state: Gateway, conn: Connection, events: tuple[LoggedEvent, ...] | None,
                  out: Effects) -> None:
    """Send the replay merged with the buffered live frames, then ``replay.done``."""
    op = conn.op
    if op is None or not op.replaying:
        return
    buffered, op.buffer = op.buffer, []
    ordered, count = merge_replay(events or (), buffered, conn.delivered)
    _send_ordered(conn, ordered, out)
    out.append(fx.SendFrame(conn.conn_id, frames.replay_done(count, events is not None)))
    finish(state, conn, out)


def finish(state: Gateway, conn: Connection, out: Effects) -> None:
    """Release the frames held during the operation; queued commands run next."""
    op = conn.op
    assert op is not None
    conn.op = None
    if conn.queued:
        state.released.append(conn.conn_id)
    ordered, _ = merge_replay((), op.buffer, conn.delivered)
    _send_ordered(conn, ordered, out)


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
