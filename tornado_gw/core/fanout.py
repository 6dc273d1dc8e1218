"""Broker frames to local connections, and the timers that a ``Tick`` drives.

``deliver_broker_message`` is the hot path: it runs once per event and once
per local recipient, so it does no encoding (the bytes go out as they came)
and allocates one ``Deliver`` effect per event, not per recipient.
"""

from __future__ import annotations

from typing import Any

from tornado_gw.core import access, frames, operations, presence
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core import events as ev
from tornado_gw.core.events import record
from tornado_gw.core.ids import conversation_of
from tornado_gw.core.protocol import CloseCode, FrameType
from tornado_gw.core.state import Gateway, Phase

Effects = list[fx.Effect]
_TYPING_START = FrameType.TYPING_START.value
_TYPING_STOP = FrameType.TYPING_STOP.value
_MESSAGE_NEW = FrameType.MESSAGE_NEW.value
_PRESENCE_TRANSITION = FrameType.PRESENCE_TRANSITION.value
_REMOVED = access.REMOVED
_CONTROL = access.CONTROL


def deliver_broker_message(state: Gateway, cmd: c.BrokerMessage, out: Effects,
                           gap_fill: bool = False) -> None:
    """One pass over the channel's subscribers, then one ``BrokerMessageApplied`` for them
    all. A ``gap_fill`` page goes past the hold that a pending gap puts on the feed."""
    frame = cmd.frame
    if frame is None:
        return
    if frame.get("type") == _PRESENCE_TRANSITION:  # between instances: batched, not forwarded
        presence.transition_received(state, frame.get("payload"), cmd.at, out)
        return
    if state.gaps_pending and not gap_fill:
        record(state, ev.BrokerMessageHeld(cmd))  # newer than what the gap read will bring: wait for it
        return
    channel = cmd.channel
    seq = _seq_of(frame)
    kind = frame.get("type")
    kind = kind if isinstance(kind, str) else ""
    if kind in _CONTROL:
        if seq is not None and seq > (state.high_seq or 0):
            record(state, ev.BrokerMessageApplied(channel, seq, cmd.data, kind, (), ()))
        access.server_command(state, cmd, kind, out)  # the server API's, not a client's frame
        return
    typist = _track_typing(state, channel, kind, frame.get("payload"), out)
    subscribers = state.subscribers.get(channel)
    connections = state.connections
    targets: list[str] = []
    held: list[str] | tuple[()] = ()  # made on demand: most messages find no operation running
    for conn_id in subscribers or ():
        conn = connections[conn_id]
        if conn.phase is Phase.CLOSING or (typist is not None and conn.user_id == typist):
            continue  # nobody receives their own typing (CONTRACT §3)
        op = conn.op
        if op is not None and channel in op.channels:
            held = held or []
            held.append(conn_id)
            continue
        if seq is not None and seq <= conn.delivered.get(channel, 0):
            continue  # already delivered (replay, gap fill, relay retry)
        targets.append(conn_id)
    if targets or held or (seq is not None and seq > (state.high_seq or 0)):
        record(state, ev.BrokerMessageApplied(channel, seq, cmd.data, kind, targets, held))
    if targets:
        out.append(fx.Deliver(targets, cmd.data, kind))
        if kind == _REMOVED:
            access.revoke_live(state, channel, targets, frame.get("payload"), seq, cmd.at, out)


def deliver_gap(state: Gateway, cmd: c.GapLoaded, out: Effects) -> None:
    """CONTRACT §6: what the broker lost, page by page in seq order. While this is the
    only gap being read a page goes out at once (it is older than every held live
    frame); otherwise pages wait with the live frames, and everything held goes out
    merged by seq once every gap read has answered. Delivering a newer frame first
    would make the connections drop the older lost ones as already delivered."""
    if cmd.messages is None:
        _gap_lost(state, cmd.channels, out)
    elif state.gaps_pending == 1 and not cmd.last:
        for message in cmd.messages:
            deliver_broker_message(state, message, out, gap_fill=True)
    elif cmd.messages:
        record(state, ev.GapPageHeld(tuple(cmd.messages)))
    if not cmd.last:
        return
    record(state, ev.GapAnswered())
    if state.gaps_pending:
        return
    held = state.gap_held
    if held:
        record(state, ev.GapHeldReleased())
    for message in sorted(held, key=_numbered_first):  # stable: unnumbered keep their order, last
        deliver_broker_message(state, message, out)


def _gap_lost(state: Gateway, channels: tuple[str, ...], out: Effects) -> None:
    """CONTRACT §4 (v2): a gap is never silent. Each connection on a channel whose gap
    cannot be filled gets ``replay.done {count: 0, recovered: false}`` before the live
    stream goes on (one running an operation, once that operation is done)."""
    affected: set[str] = set()
    for channel in channels:
        affected.update(state.subscribers.get(channel, ()))
    for conn_id in sorted(affected):
        conn = state.connections[conn_id]
        if conn.phase is not Phase.AUTHENTICATED:
            continue
        if conn.op is not None:
            record(state, ev.GapLostDuringOperation(conn_id))
        else:
            out.append(fx.SendFrame(conn_id, frames.replay_done(0, False)))


def _seq_of(frame: dict[str, Any]) -> int | None:
    seq = frame.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _numbered_first(message: c.BrokerMessage) -> tuple[int, int]:
    seq = _seq_of(message.frame) if message.frame is not None else None
    return (1, 0) if seq is None else (0, seq)


def _track_typing(state: Gateway, channel: str, kind: str, payload: Any, out: Effects) -> str | None:
    """Keep the local view of who types; returns the typist of a typing frame."""
    if not isinstance(payload, dict):
        return None
    cid = conversation_of(channel)
    if cid is None:
        return None
    if kind == _MESSAGE_NEW:
        message = payload.get("message")
        sender = message.get("sender_id") if isinstance(message, dict) else None
        if isinstance(sender, str) and sender in state.typing.get(cid, ()):
            out.append(fx.StopTyping(cid, sender))  # a sent message ends typing at once
        return None
    if kind not in (_TYPING_START, _TYPING_STOP):
        return None
    user_id = payload.get("user_id")
    if not isinstance(user_id, str):
        return None
    if channel not in state.subscribers:
        return user_id  # nobody here watches it (any more): nothing to remember (state rule 5)
    record(state, (ev.TypingSeen if kind == _TYPING_START else ev.TypingEnded)(cid, user_id))
    return user_id


def tick(state: Gateway, cmd: c.Tick, out: Effects) -> None:
    """Expire connections, sweep presence and typing, refresh what is alive."""
    at = cmd.at
    limits = state.limits
    expired = [(conn, code) for conn in state.connections.values()
               if (code := _expired(conn, at, limits.auth_timeout_s, limits.idle_timeout_s)) is not None]
    for conn, code in expired:
        access.close(state, conn, code, _REASONS[code], out)
    operations.expire_late(state, at, out)
    operations.reread_replays(state, at, out)
    out.append(fx.ExpireStale(at))
    if at >= state.next_refresh_at:
        record(state, ev.RefreshScheduled(at + limits.presence_ttl_s / 3))
        _refresh(state, at, out)


def _expired(conn: Any, at: float, auth_timeout_s: float, idle_timeout_s: float) -> CloseCode | None:
    if conn.phase is Phase.CONNECTING:
        return CloseCode.AUTH_TIMEOUT if at - conn.opened_at >= auth_timeout_s else None
    if conn.phase is not Phase.AUTHENTICATED:
        return None
    if conn.token_expires_at is not None and at >= conn.token_expires_at:
        return CloseCode.TOKEN_EXPIRED
    if at - conn.last_frame_at >= idle_timeout_s:
        return CloseCode.IDLE_TIMEOUT
    return None


_REASONS = {
    CloseCode.AUTH_TIMEOUT: "no successful auth in time",
    CloseCode.TOKEN_EXPIRED: "token expired",
    CloseCode.IDLE_TIMEOUT: "idle timeout",
}


def _refresh(state: Gateway, at: float, out: Effects) -> None:
    """Live sessions push their presence and snapshots forward (PITFALLS 10)."""
    entries: list[tuple[str, str, str]] = []
    snapshots = []
    for conn in state.connections.values():
        if conn.phase is not Phase.AUTHENTICATED or conn.presence_id is None or conn.op is not None:
            continue
        assert conn.user_id is not None
        entries.extend((cid, conn.user_id, conn.presence_id) for cid in sorted(conn.conversations))
        snapshots.append(operations.snapshot(conn))
    if snapshots:
        out.append(fx.SaveSession(tuple(snapshots), operations.session_ttl(state, live=True)))
    if entries:
        out.append(fx.RejoinPresence(tuple(entries), at + state.limits.presence_ttl_s))
