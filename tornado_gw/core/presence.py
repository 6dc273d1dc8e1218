"""Presence of the conversations this instance serves: batched diffs and the count
(CONTRACT §3 v2, ``presence.diff``).

Rules:
1. The store makes the transitions (``ports.PresenceStore``) and publishes each atomic
   step as one ``presence.transition`` frame on the conversation's channel, with the
   count after it. Pub/Sub keeps the store's order, so the last one received carries
   the current count: no instance asks the store anything per transition.
2. A room (a conversation with local subscribers) asks the store to announce its count
   once its channel is live, and again after a broker outage (Pub/Sub lost what was
   published meanwhile), through the same channel, so the answer falls in order with
   the transitions and the count never drifts. Diffs wait until a count has arrived.
3. A batch opens with the first transition after a flush and closes ``presence_batch_ms``
   later; its transitions then leave as one ``presence.diff``, encoded once for every
   local subscriber. Per user only the net change counts: joined then left (or left then
   joined) within one batch is no change. Batches leave in order, so a leave never
   overtakes the join before it.
4. Large rooms: the diff that takes the count above ``presence_list_max`` still lists its
   users; after it, diffs carry the count only, at most once per
   ``presence_count_interval_s`` and only when it changed. Once the count is back at or
   under the limit, the room asks for the list; it arrives in order like a transition
   and goes to subscribers as one ``presence.state`` (``next`` null), then listed diffs
   resume: no client keeps a stale list.
5. A ``presence.state`` page is read from the store, so it may show transitions the room
   has not received or not sent yet. After one went out, the next diff reports the final
   state of every user its batch touched (a join then a leave is a leave, not nothing)
   and carries the count even when it did not change: the page's reader cannot keep a
   user the batch would have netted away.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core import events as ev
from tornado_gw.core import frames
from tornado_gw.core.events import record
from tornado_gw.core.ids import conv_channel, conversation_of
from tornado_gw.core.state import Connection, Gateway, Phase, Room

Effects = list[fx.Effect]
RETRY_S = 1.0  # a room still waiting for its count (or list) asks again this much later


def join(state: Gateway, conn: Connection, conversation_id: str, at: float, out: Effects) -> None:
    """The connection's presence entry in a conversation it just subscribed to."""
    assert conn.user_id is not None and conn.presence_id is not None
    out.append(fx.JoinPresence(conversation_id, conn.user_id, conn.presence_id,
                               at + state.limits.presence_ttl_s))


def leave(state: Gateway, conn: Connection, conversation_id: str, at: float, out: Effects) -> None:
    """The connection's presence entry goes at once (an unsubscribe, a revoked membership);
    the user leaves if it was their last live one, cluster-wide (CONTRACT §3)."""
    assert conn.user_id is not None and conn.presence_id is not None
    out.append(fx.LeavePresence(conversation_id, conn.user_id, conn.presence_id, at))


def is_large(state: Gateway, conversation_id: str) -> bool:
    """More than ``presence_list_max`` online: typing is not fanned out (CONTRACT §3)."""
    room = state.rooms.get(conversation_id)
    return room is not None and room.count > state.limits.presence_list_max


def open_room(state: Gateway, channel: str, at: float, out: Effects) -> None:
    """The conversation's channel is live here: learn its count first (rule 2)."""
    cid = conversation_of(channel)
    if cid is not None and cid not in state.rooms and channel in state.subscribers:
        record(state, ev.RoomOpened(cid))
        _ask(state, cid, state.rooms[cid], at, out)


def reload_rooms(state: Gateway, at: float, out: Effects) -> None:
    """The broker is back: transitions may have been lost, learn every count again."""
    for cid, room in sorted(state.rooms.items()):
        record(state, ev.RoomCountForgotten(cid))
        _ask(state, cid, room, at, out)


def transition_received(state: Gateway, payload: Any, at: float, out: Effects) -> None:
    """A ``presence.transition`` from the store (rule 1); never forwarded to clients."""
    parsed = _parse_transition(payload)
    if parsed is None:
        return
    cid, joins, leaves, count, users = parsed
    room = state.rooms.get(cid)
    if room is None:
        return
    if not room.known:
        _set_due(state, cid, room, None)  # the count came: no more asking (rule 2)
    if users is not None and room.relisting:
        record(state, ev.TransitionReceived(cid, count, (), ()))
        _relist(state, cid, room, users, at, out)
        return
    record(state, ev.TransitionReceived(cid, count, tuple(joins), tuple(leaves)))  # listing: batched
    if room.pending or count != room.sent_count:
        _schedule(state, cid, room, at)


def flush(state: Gateway, cmd: c.FlushPresence, out: Effects) -> None:
    """Send every batch whose time has come (rules 3 and 4)."""
    at = cmd.at
    for cid in sorted(state.rooms_due):
        room = state.rooms[cid]
        if room.due_at is not None and at >= room.due_at:
            _flush(state, cid, room, at, out)


def _flush(state: Gateway, cid: str, room: Room, at: float, out: Effects) -> None:
    limits = state.limits
    if not room.known or room.relisting:
        _ask(state, cid, room, at, out)  # still waiting: ask again
        return
    _set_due(state, cid, room, None)
    if room.listing:
        joins, leaves = _net(room.pending or [], keep_flickers=room.exposed)
        if room.pending is not None or room.exposed:
            record(state, ev.RoomBatchTaken(cid, diffed=True))
        if joins or leaves or room.count != room.sent_count:
            _send(state, cid, room, frames.presence_diff(cid, joins, leaves, room.count), at, out)
        _set_listing(state, cid, room, room.count <= limits.presence_list_max)
    elif room.count > limits.presence_list_max:  # due no earlier than the interval (_schedule)
        if room.count != room.sent_count:
            _send(state, cid, room, frames.presence_diff(cid, (), (), room.count), at, out)
    else:  # back at or under the limit: hand out the whole list again (rule 4)
        record(state, ev.RoomRelisting(cid, True))
        _ask(state, cid, room, at, out)


def _relist(state: Gateway, cid: str, room: Room, users: list[str], at: float, out: Effects) -> None:
    """The list asked for after a large room shrank: everything before it in the channel's
    order is in it, so the open batch starts again from here."""
    limit = state.limits.presence_list_max
    record(state, ev.RoomRelisting(cid, False))
    if room.pending is not None:
        record(state, ev.RoomBatchTaken(cid, diffed=False))
    _set_due(state, cid, room, None)
    next_after = users[-1] if users and room.count > len(users) else None
    _send(state, cid, room, frames.presence_state(cid, users, room.count, next_after), at, out)
    _set_listing(state, cid, room, room.count <= limit)


def _set_listing(state: Gateway, cid: str, room: Room, listing: bool) -> None:
    if room.listing != listing:
        record(state, ev.RoomListing(cid, listing))


def page_shown(state: Gateway, conversation_id: str) -> None:
    """A ``presence.state`` page of the conversation went out to a local client (rule 5)."""
    if conversation_id in state.rooms:
        record(state, ev.RoomPageShown(conversation_id))


def _net(pending: list[tuple[str, bool]], keep_flickers: bool) -> tuple[list[str], list[str]]:
    """Per user, the first and last transition of the batch: the same means a join (or a
    leave), different means back where they were, reported as the last one only when
    ``keep_flickers`` (rule 5). Order of first appearance is kept."""
    first: dict[str, bool] = {}
    last: dict[str, bool] = {}
    for user_id, online in pending:
        first.setdefault(user_id, online)
        last[user_id] = online
    touched = [uid for uid, online in first.items() if keep_flickers or online == last[uid]]
    return [uid for uid in touched if last[uid]], [uid for uid in touched if not last[uid]]


def _schedule(state: Gateway, cid: str, room: Room, at: float) -> None:
    if room.due_at is not None:
        return
    due = at + state.limits.presence_batch_ms / 1000.0
    if not room.listing:
        due = max(due, room.sent_at + state.limits.presence_count_interval_s)
    _set_due(state, cid, room, due)


def _set_due(state: Gateway, cid: str, room: Room, due_at: float | None) -> None:
    if room.due_at != due_at or (due_at is not None) != (cid in state.rooms_due):
        record(state, ev.RoomDue(cid, due_at))


def _ask(state: Gateway, cid: str, room: Room, at: float, out: Effects) -> None:
    """Have the store announce the count (with the list while relisting); the answer
    comes back through the channel (rule 2). Asked again each ``RETRY_S`` until it does."""
    limit = state.limits.presence_list_max if room.relisting else 0
    out.append(fx.AnnouncePresence(cid, limit))
    _set_due(state, cid, room, at + RETRY_S)


def _send(state: Gateway, cid: str, room: Room, frame: frames.Frame, at: float, out: Effects) -> None:
    """One encoded frame for every local subscriber, as any fan-out (STYLE §4); held in
    the buffer of a subscriber whose reply has not gone out yet."""
    record(state, ev.RoomSent(cid, at))
    channel = conv_channel(cid)
    data = frames.encode(frame)
    kind = frame["type"]
    targets = []
    held = []
    for conn_id in sorted(state.subscribers.get(channel, ())):
        conn = state.connections[conn_id]
        if conn.phase is Phase.CLOSING:
            continue
        if conn.op is not None and channel in conn.op.channels:
            held.append(conn_id)
        else:
            targets.append(conn_id)
    if held:
        record(state, ev.PresenceFrameHeld(channel, data, kind, tuple(held)))
    if targets:
        out.append(fx.Deliver(targets, data, kind))


def _parse_transition(payload: Any) -> tuple[str, list[str], list[str], int, list[str] | None] | None:
    if not isinstance(payload, dict):
        return None
    cid, count, users = payload.get("conversation_id"), payload.get("count"), payload.get("users")
    joins, leaves = payload.get("joins"), payload.get("leaves")
    if (not isinstance(cid, str) or not isinstance(count, int) or isinstance(count, bool)
            or not _is_ids(joins) or not _is_ids(leaves)):
        return None
    if users is not None and not _is_ids(users):
        return None
    return cid, joins, leaves, count, users


def _is_ids(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
