"""Access that changes while clients are connected (CONTRACT §2, §3 v2).

Rules:
1. Ordered revocation. ``membership.removed`` on ``user:{U}`` with
   ``{conversation_id: C}`` and seq N ends U's subscription to C at N, on every
   connection: U gets C's events below N, the removal, and none above. Live,
   ``revoke_live`` runs right after the removal is delivered (the broker keeps
   one order across channels); in a replay (resume, ``subscribe`` with
   ``last_seq``) ``replay_channels`` also reads the user channel and the denied
   conversations, and ``visible`` keeps of each conversation what precedes its
   removal; an operation under way remembers the cut (``Operation.revoked``) so
   its grant leaves C out. A gap fill goes through the live path in seq order.
2. ``gw.unsubscribe`` and ``gw.disconnect`` on ``user:{U}`` are the server
   API's commands (``POST /unsubscribe``, ``POST /disconnect``), travelling
   through the broker to every instance with a connection of U. They are
   acted on and never delivered to a client.
3. A disconnected connection (``Connection.ended``) leaves presence at once and
   its session is deleted, so it cannot be resumed.
4. The first ``auth`` of a connection claims a slot of its user
   (``max_connections_per_user``, 0 = no cap) while its operation runs; a
   refused claim closes the connection with 4011 (after ``auth``, CONTRACT §3),
   and its session stays resumable; every slot is released when the connection
   goes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core import events as ev
from tornado_gw.core import frames, operations, presence
from tornado_gw.core.events import record
from tornado_gw.core.ids import USER, conv_channel, conversation_of, is_valid_id, user_channel
from tornado_gw.core.protocol import CloseCode, FrameType
from tornado_gw.core.records import LoggedEvent
from tornado_gw.core.replay import Buffered
from tornado_gw.core.state import Connection, Gateway, Operation, Phase

Effects = list[fx.Effect]
REMOVED = FrameType.MEMBERSHIP_REMOVED.value
_REMOVED_BYTES = REMOVED.encode()
CONTROL = frozenset({FrameType.SERVER_UNSUBSCRIBE.value, FrameType.SERVER_DISCONNECT.value})
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 5.5: a control frame carries at most 125 bytes, 2 for the code


def close(state: Gateway, conn: Connection, code: CloseCode, reason: str, out: Effects) -> None:
    """Stop sending to ``conn`` at once; its ``Disconnect`` cleans up when the socket closes."""
    if conn.phase is Phase.CLOSING:
        return
    record(state, ev.ClosingStarted(conn.conn_id))
    out.append(fx.CloseConnection(conn.conn_id, code, reason))


def leave(state: Gateway, conn: Connection, cid: str, at: float, out: Effects) -> None:
    """``conn`` leaves conversation ``cid`` at once: channel, presence, typing."""
    assert conn.user_id is not None and conn.presence_id is not None
    record(state, ev.ConversationLeft(conn.conn_id, cid))
    channel = conv_channel(cid)
    operations.remove_subscriber(state, channel, conn.conn_id, out)
    presence.leave(state, conn, cid, at, out)
    stop_typing_if_last(state, conn, cid, out)
    forget_typing_if_unwatched(state, cid)


def stop_typing_if_last(state: Gateway, conn: Connection, cid: str, out: Effects) -> None:
    """``typing.stop`` when the user's last local session there leaves (CONTRACT §3)."""
    user_id = conn.user_id
    if user_id is None or user_id not in state.typing.get(cid, ()):
        return
    for other_id in state.subscribers.get(conv_channel(cid), ()):
        other = state.connections[other_id]
        if other.user_id == user_id and other is not conn:
            return
    out.append(fx.StopTyping(cid, user_id))


def forget_typing_if_unwatched(state: Gateway, cid: str) -> None:
    """Nobody here watches ``cid`` any more, so no ``typing.stop`` of it will arrive:
    forget its typists now rather than keep them for ever (state rule 5)."""
    if conv_channel(cid) not in state.subscribers and cid in state.typing:
        record(state, ev.TypingForgotten(cid))


# --- rule 1: ordered revocation ----------------------------------------------------

def revoke_live(state: Gateway, channel: str, conn_ids: Iterable[str], payload: Any, seq: int | None,
                at: float, out: Effects) -> None:
    """A ``membership.removed`` on ``channel`` was just delivered to ``conn_ids`` (not to a
    connection that had it already, nor to one whose operation holds it: ``visible`` cuts
    there): end the conversation for them."""
    cid = _conversation_in(payload)
    if cid is None or not channel.startswith(USER):
        return
    for conn_id in conn_ids:
        conn = state.connections[conn_id]
        if _revoke(state, conn, cid, seq or 0, at, out):
            out.append(operations.save_session(state, conn))


def _revoke(state: Gateway, conn: Connection, cid: str, seq: int, at: float, out: Effects) -> bool:
    """End ``cid`` for ``conn`` at ``seq``; True when it was subscribed."""
    op = conn.op
    if op is not None and cid in op.requested:
        record(state, ev.Revoked(conn.conn_id, cid, seq))  # granted already: the reply lists it as denied
    assert conn.user_id is not None
    out.append(fx.ForgetGrant(conn.user_id, cid))
    if cid not in conn.conversations:
        return False
    leave(state, conn, cid, at, out)
    if op is not None and conv_channel(cid) in op.waiting:
        # Its ChannelReady will find no subscriber now: stop waiting for it.
        record(state, ev.ChannelConfirmed(conn.conn_id, conv_channel(cid)))
        if not op.waiting:
            operations.reply(state, conn, at, out)
    return True


def replay_channels(conn: Connection, op: Operation) -> tuple[str, ...]:
    """What a replay reads: the operation's channels, plus, when some conversations were
    denied, those and the user channel, where a removal gives the user the events before
    it (rule 1). Not otherwise: a subscribe's replay must not fill up with notifications."""
    assert conn.user_id is not None
    if not op.denied:
        return tuple(sorted(op.channels))
    extra = {conv_channel(cid) for cid in op.denied}
    extra.add(user_channel(conn.user_id))
    return tuple(sorted(op.channels | extra))


def visible(conn: Connection, op: Operation, events: Iterable[LoggedEvent],
            buffered: Iterable[Buffered]) -> tuple[list[LoggedEvent], list[Buffered], dict[str, int]]:
    """What of a replay and the frames held meanwhile the user may see (rule 1), and the
    cuts: conversation -> seq of its removal."""
    assert conn.user_id is not None
    own = user_channel(conn.user_id)
    events, buffered = list(events), list(buffered)
    removals: dict[int, str] = {}
    for seq, channel, data in _numbered(events, buffered):
        cid = _removal_in(data) if channel == own else None
        if cid is not None:
            removals[seq] = cid
    cuts = dict(op.revoked)
    for seq, cid in sorted(removals.items(), reverse=True):
        cuts[cid] = min(seq, cuts.get(cid, seq))

    def keep(seq: int | None, channel: str) -> bool:
        if channel == own:
            return channel in op.channels or (seq is not None and removals.get(seq) in op.requested)
        cid = conversation_of(channel)
        if cid is not None and cid in cuts:
            return seq is not None and seq < cuts[cid]
        return channel in op.channels

    return ([e for e in events if keep(e.seq, e.channel)],
            [b for b in buffered if keep(b[0], b[1])], cuts)


def apply_cuts(state: Gateway, conn: Connection, cuts: dict[str, int], at: float, out: Effects) -> None:
    """After a replay was sent: the removed conversations end (what was read of them
    folds into ``forgotten_seq``: ``operations._forget_unwatched``)."""
    ended = [cid for cid in sorted(cuts) if _revoke(state, conn, cid, cuts[cid], at, out)]
    if ended:
        out.append(operations.save_session(state, conn))


def _numbered(events: list[LoggedEvent], buffered: list[Buffered]) -> Iterator[tuple[int, str, bytes]]:
    for event in events:
        yield event.seq, event.channel, event.data
    for seq, channel, data, _kind in buffered:
        if seq is not None:
            yield seq, channel, data


def _removal_in(data: bytes) -> str | None:
    """The conversation of an encoded ``membership.removed`` frame, else None."""
    if _REMOVED_BYTES not in data:  # cheap: most user-channel events are something else
        return None
    try:
        frame = json.loads(data)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != REMOVED:
        return None
    return _conversation_in(frame.get("payload"))


def _conversation_in(payload: Any) -> str | None:
    cid = payload.get("conversation_id") if isinstance(payload, dict) else None
    return cid if is_valid_id(cid) else None


def _user_connections(state: Gateway, channel: str) -> list[Connection]:
    """The authenticated connections of a user channel's user; none for a conversation
    channel: revocations and server commands published there are ignored."""
    if not channel.startswith(USER):
        return []
    return [conn for conn_id in sorted(state.subscribers.get(channel, ()))
            if (conn := state.connections[conn_id]).phase is Phase.AUTHENTICATED]


# --- rule 2 and 3: the server API ----------------------------------------------------

def server_command(state: Gateway, cmd: c.BrokerMessage, kind: str, out: Effects) -> None:
    """``gw.unsubscribe`` / ``gw.disconnect`` for the connections of the channel's user."""
    payload = cmd.frame.get("payload") if cmd.frame is not None else None
    payload = payload if isinstance(payload, dict) else {}
    for conn in _user_connections(state, cmd.channel):
        if kind == FrameType.SERVER_DISCONNECT.value:
            record(state, ev.EndedByServer(conn.conn_id))
            close(state, conn, CloseCode.DISCONNECTED, close_reason(payload.get("reason")), out)
            continue
        ids = payload.get("conversation_ids")
        wanted = [cid for cid in ids if is_valid_id(cid)] if isinstance(ids, list) else []
        left = [cid for cid in dict.fromkeys(wanted) if _revoke(state, conn, cid, 0, cmd.at, out)]
        if left:
            out.append(fx.SendFrame(conn.conn_id, frames.unsubscribed(left, reason="server")))
            out.append(operations.save_session(state, conn))


def close_reason(reason: Any) -> str:
    """The reason of a 4010 close as it fits in a close frame."""
    if not isinstance(reason, str) or not reason:
        return "disconnected by the application"
    return reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


def end_session(state: Gateway, conn: Connection, at: float, out: Effects) -> None:
    """Rule 3: no grace, no resume."""
    assert conn.user_id is not None and conn.session_id is not None and conn.presence_id is not None
    out.append(fx.DeleteSession(conn.session_id))
    for cid in sorted(conn.conversations):
        presence.leave(state, conn, cid, at, out)
        stop_typing_if_last(state, conn, cid, out)
        forget_typing_if_unwatched(state, cid)


# --- rule 4: connections per user ---------------------------------------------------

def claim_slot(state: Gateway, conn: Connection, out: Effects) -> None:
    """The first ``auth`` counts the connection; it goes on meanwhile (no wait on a store)."""
    limit = state.limits.max_connections_per_user
    if limit > 0 and conn.user_id is not None and conn.presence_id is not None:
        out.append(fx.ClaimConnection(conn.conn_id, conn.user_id, conn.presence_id, limit))


def connection_claimed(state: Gateway, cmd: c.ConnectionClaimed, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is not None and not cmd.granted:
        close(state, conn, CloseCode.TOO_MANY_CONNECTIONS, "too many connections for this user", out)


def release_slot(state: Gateway, conn: Connection, out: Effects) -> None:
    capped = state.limits.max_connections_per_user > 0
    if capped and conn.user_id is not None and conn.presence_id is not None:
        out.append(fx.ReleaseConnection(conn.user_id, conn.presence_id))
