"""The only place the gateway's state changes.

``handle(state, command)`` validates the command against the state, applies
it and returns the effects to perform. A ``ClientError`` raised by a client
command's handler is raised before anything changes; it becomes an ``error``
frame. Client commands for a connection that has a slow operation running
wait in its queue and run, in order, when it finishes (state rule 4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tornado_gw.core import access, frames, operations, presence
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.access import close as _close
from tornado_gw.core.errors import ClientError, Forbidden, TooManySubscriptions, Unauthenticated
from tornado_gw.core.fanout import deliver_broker_message, deliver_gap, tick
from tornado_gw.core.ids import conv_channel, user_channel
from tornado_gw.core.protocol import CloseCode, ErrorCode
from tornado_gw.core.state import Connection, Gateway, Phase

Effects = list[fx.Effect]
MAX_QUEUED = 64  # client commands that may wait for a connection's running operation
CLIENT_COMMANDS = (c.Authenticate, c.AuthFailed, c.Subscribe, c.Unsubscribe, c.Typing, c.PresenceQuery,
                   c.Ping, c.BadFrame)


def handle(state: Gateway, cmd: c.Command) -> Effects:
    """Apply one command; return the effects, in the order they must happen."""
    out: Effects = []
    if isinstance(cmd, CLIENT_COMMANDS):
        conn = state.connections.get(cmd.conn_id)
        if conn is not None and conn.phase is not Phase.CLOSING and _admit(state, conn, cmd.at, out):
            _client_command(state, conn, cmd, out)
    else:
        _HANDLERS[type(cmd)](state, cmd, out)
    while state.released:
        _run_queued(state, state.released.pop(0), out)
    return out


# --- client commands --------------------------------------------------------------

def _admit(state: Gateway, conn: Connection, at: float, out: Effects) -> bool:
    """Idle clock and token bucket (CONTRACT §1 ``rate_limit_*``): warn once, then 4008."""
    limits = state.limits
    conn.last_frame_at = at
    conn.tokens = min(float(limits.rate_limit_burst),
                      conn.tokens + max(0.0, at - conn.refilled_at) * limits.rate_limit_per_s)
    conn.refilled_at = at
    if conn.tokens >= limits.rate_limit_burst:
        conn.warned = False
    if conn.tokens >= 1.0:
        conn.tokens -= 1.0
        return True
    if conn.warned:
        _close(conn, CloseCode.RATE_LIMITED, "inbound rate limit exceeded", out)
    else:
        conn.warned = True
        out.append(fx.SendFrame(conn.conn_id, frames.error(
            ErrorCode.RATE_LIMITED, "too many frames: slow down or be disconnected", None)))
    return False


def _client_command(state: Gateway, conn: Connection, cmd: c.Command, out: Effects) -> None:
    if conn.op is not None and not isinstance(cmd, (c.Ping, c.BadFrame)):
        if len(conn.queued) < MAX_QUEUED:
            conn.queued.append(cmd)
        else:
            out.append(fx.SendFrame(conn.conn_id, frames.error(
                ErrorCode.UNAVAILABLE, f"over {MAX_QUEUED} requests wait for the one in progress",
                _ref_type(cmd))))
        return
    try:
        _CLIENT_HANDLERS[type(cmd)](state, conn, cmd, out)
    except ClientError as exc:
        out.append(fx.SendFrame(conn.conn_id, frames.error(exc.code, exc.message, _ref_type(cmd))))


def _run_queued(state: Gateway, conn_id: str, out: Effects) -> None:
    conn = state.connections.get(conn_id)
    while conn is not None and conn.op is None and conn.queued and conn.phase is not Phase.CLOSING:
        _client_command(state, conn, conn.queued.pop(0), out)


_REF_TYPES = {c.Subscribe: "subscribe", c.Unsubscribe: "unsubscribe", c.Typing: "typing",
              c.PresenceQuery: "presence.query"}


def _ref_type(cmd: c.Command) -> str:
    return _REF_TYPES.get(type(cmd), "auth")


def _require_auth(conn: Connection, action: str) -> str:
    if conn.phase is not Phase.AUTHENTICATED or conn.user_id is None:
        raise Unauthenticated(f"can't {action}: connection is {conn.phase.value}; send auth first")
    return conn.user_id


def _require_subscribed(conn: Connection, conversation_id: str, action: str) -> str:
    user_id = _require_auth(conn, action)
    if conversation_id not in conn.conversations:
        raise Forbidden(f"can't {action}: not subscribed to conversation {conversation_id}")
    return user_id


def _authenticate(state: Gateway, conn: Connection, cmd: c.Authenticate, out: Effects) -> None:
    if conn.phase is Phase.AUTHENTICATED:
        if cmd.user_id != conn.user_id:
            _reject_auth(conn, "user_mismatch", "token belongs to another user than this connection", out)
            return
        conn.token_expires_at = cmd.expires_at  # token refresh (CONTRACT §3)
        assert conn.session_id is not None
        out.append(fx.SendFrame(conn.conn_id, frames.auth_success(
            cmd.user_id, conn.session_id, False, conn.conversations)))
        return
    conn.phase = Phase.AUTHENTICATED
    conn.user_id = cmd.user_id
    conn.token_expires_at = cmd.expires_at
    conn.new_session_id = cmd.new_session_id
    conn.presence_id = cmd.new_session_id  # unique per connection, made at the edge
    state.presence_owners[conn.presence_id] = conn.conn_id
    access.claim_slot(state, conn, out)
    conn.op = operations.begin("auth", (), cmd.last_seq, cmd.at)
    if cmd.session_id is not None:
        out.append(fx.LoadSession(conn.conn_id, cmd.session_id))
    else:
        _session_loaded(state, c.SessionLoaded(conn.conn_id, None, cmd.at), out)


def _auth_failed(state: Gateway, conn: Connection, cmd: c.AuthFailed, out: Effects) -> None:
    _reject_auth(conn, cmd.code, cmd.message, out)


def _reject_auth(conn: Connection, code: str, message: str, out: Effects) -> None:
    out.append(fx.SendFrame(conn.conn_id, frames.auth_error(code, message)))
    _close(conn, CloseCode.AUTH_FAILED, "authentication failed", out)


def _subscribe(state: Gateway, conn: Connection, cmd: c.Subscribe, out: Effects) -> None:
    _require_auth(conn, "subscribe")
    new = [cid for cid in cmd.conversation_ids if cid not in conn.conversations]
    limit = state.limits.max_subscriptions
    if len(conn.conversations) + len(new) > limit:
        raise TooManySubscriptions(f"can't subscribe: {len(conn.conversations)} + {len(new)} "
                                   f"conversations is over the limit of {limit}")
    operations.start(state, conn, operations.begin("subscribe", cmd.conversation_ids, cmd.last_seq, cmd.at),
                     cmd.at, out)


def _unsubscribe(state: Gateway, conn: Connection, cmd: c.Unsubscribe, out: Effects) -> None:
    _require_auth(conn, "unsubscribe")
    for cid in cmd.conversation_ids:
        if cid in conn.conversations:
            access.leave(state, conn, cid, cmd.at, out)
    out.append(fx.SendFrame(conn.conn_id, frames.unsubscribed(cmd.conversation_ids)))
    out.append(operations.save_session(state, conn))


def _typing(state: Gateway, conn: Connection, cmd: c.Typing, out: Effects) -> None:
    user_id = _require_subscribed(conn, cmd.conversation_id, "type")
    if presence.is_large(state, cmd.conversation_id):
        return  # accepted, neither stored nor fanned out (CONTRACT §3)
    # Known as typing here at once, not only when the broker echoes typing.start: a
    # typist who leaves before the echo still gets a typing.stop.
    state.typing.setdefault(cmd.conversation_id, set()).add(user_id)
    out.append(fx.StartTyping(cmd.conversation_id, user_id, cmd.at + state.limits.typing_ttl_s))


def _presence_query(state: Gateway, conn: Connection, cmd: c.PresenceQuery, out: Effects) -> None:
    _require_subscribed(conn, cmd.conversation_id, "query presence")
    out.append(fx.QueryPresence(conn.conn_id, cmd.conversation_id, cmd.after, cmd.limit))


def _ping(state: Gateway, conn: Connection, cmd: c.Ping, out: Effects) -> None:
    out.append(fx.SendFrame(conn.conn_id, frames.pong()))


def _bad_frame(state: Gateway, conn: Connection, cmd: c.BadFrame, out: Effects) -> None:
    out.append(fx.SendFrame(conn.conn_id, frames.error(cmd.code, cmd.message, cmd.ref_type)))


# --- connection lifecycle ----------------------------------------------------------

def _connect(state: Gateway, cmd: c.Connect, out: Effects) -> None:
    burst = float(state.limits.rate_limit_burst)
    state.connections[cmd.conn_id] = Connection(cmd.conn_id, cmd.at, cmd.at, burst, cmd.at)


def _close_requested(state: Gateway, cmd: c.CloseRequested, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is not None:
        _close(conn, cmd.code, cmd.reason, out)


def _disconnect(state: Gateway, cmd: c.Disconnect, out: Effects) -> None:
    """Keep the session resumable; presence lingers ``presence_grace_s`` (no flapping)."""
    conn = state.connections.pop(cmd.conn_id, None)
    if conn is None:
        return
    if conn.presence_id is not None:
        state.presence_owners.pop(conn.presence_id, None)
    channels = [conv_channel(cid) for cid in conn.conversations]
    if conn.user_id is not None:
        channels.append(user_channel(conn.user_id))
    for channel in channels:
        operations.remove_subscriber(state, channel, conn.conn_id, out)
    access.release_slot(state, conn, out)
    if conn.user_id is None or conn.session_id is None or conn.presence_id is None:
        return
    if conn.ended:
        access.end_session(state, conn, cmd.at, out)
        return
    out.append(operations.save_session(state, conn, live=False))
    entries = tuple((cid, conn.user_id, conn.presence_id) for cid in sorted(conn.conversations))
    if entries:
        out.append(fx.RefreshPresence(entries, cmd.at + state.limits.presence_grace_s))
    for cid in sorted(conn.conversations):
        access.stop_typing_if_last(state, conn, cid, out)
        access.forget_typing_if_unwatched(state, cid)


# --- results of effects --------------------------------------------------------------

def _session_loaded(state: Gateway, cmd: c.SessionLoaded, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is None or conn.op is None or conn.op.kind != "auth":
        return
    snapshot = cmd.snapshot
    if snapshot is not None and snapshot.user_id == conn.user_id:
        conn.session_id = snapshot.session_id
        conn.op.resumed = True
        conn.op.requested = snapshot.conversation_ids
        if snapshot.presence_id not in state.presence_owners:
            # The old connection's entries go once the new ones stand; not while that
            # connection is still open here (a client resuming over a half-open one).
            conn.op.previous_presence_id = snapshot.presence_id
    else:  # none, or one whose resume cannot go on (its membership could not be checked)
        conn.session_id = conn.new_session_id
        conn.op.resumed, conn.op.requested, conn.op.previous_presence_id = False, (), None
    operations.start(state, conn, conn.op, cmd.at, out)


def _membership_checked(state: Gateway, cmd: c.MembershipChecked, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is not None and conn.op is not None and not conn.op.channels:
        operations.grant(state, conn, cmd.granted, cmd.at, out)


def _channel_ready(state: Gateway, cmd: c.ChannelReady, out: Effects) -> None:
    presence.open_room(state, cmd.channel, cmd.at, out)
    operations.channel_ready(state, cmd.channel, cmd.at, out)


def _replay_loaded(state: Gateway, cmd: c.ReplayLoaded, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is not None:
        operations.replay_loaded(state, conn, cmd.events, cmd.at, out)


def _broker_status(state: Gateway, cmd: c.BrokerStatusChanged, out: Effects) -> None:
    """After an outage, read back what every local channel missed (CONTRACT §6).

    The gap starts where the stream stopped: the highest seq received from any channel
    (or the log's head at start-up) when the broker went down. The relay publishes in
    seq order and every channel arrives over one subscriber connection, so each channel,
    quiet or busy, had everything up to that seq. Unknown (nothing received and the log
    head not learnt yet): the gap cannot be filled, and the clients are told so."""
    if not cmd.up:
        if not state.broker_down:
            state.broker_down = True
            state.stream_stopped_at = state.high_seq
        return
    if not state.broker_down:
        return
    state.broker_down = False
    state.next_refresh_at = 0.0  # re-create presence that expired meanwhile at the next tick
    presence.reload_rooms(state, cmd.at, out)
    channels = tuple(sorted(state.subscribers))
    if not channels:
        return
    state.gaps_pending += 1
    if state.stream_stopped_at is None:
        deliver_gap(state, c.GapLoaded(channels, None, True, cmd.at), out)
    else:
        out.append(fx.LoadGap(channels, state.stream_stopped_at))


def _effect_failed(state: Gateway, cmd: c.EffectFailed, out: Effects) -> None:
    """Answer what waited for an effect that failed or was late (CONTRACT §4 v2)."""
    effect = cmd.effect
    if isinstance(effect, fx.LoadSession):
        _session_loaded(state, c.SessionLoaded(effect.conn_id, None, cmd.at), out)  # a new session
    elif isinstance(effect, fx.LoadReplay):
        _replay_loaded(state, c.ReplayLoaded(effect.conn_id, None, cmd.at), out)
    elif isinstance(effect, fx.LoadGap):
        deliver_gap(state, c.GapLoaded(effect.channels, None, True, cmd.at), out)
    elif isinstance(effect, fx.CheckMembership):
        conn = state.connections.get(effect.conn_id)
        if conn is None or conn.op is None or conn.op.channels:
            return
        if conn.op.kind == "subscribe":
            operations.abort(state, conn, "membership could not be checked", out)
        else:  # a resume: fail closed, and say so. A new session, as when the session
            # cannot be read (not ``resumed: true`` without its conversations, which a
            # client takes for removals); its snapshot stays for a later resume.
            _session_loaded(state, c.SessionLoaded(conn.conn_id, None, cmd.at), out)
    elif isinstance(effect, fx.QueryPresence):
        conn = state.connections.get(effect.conn_id)
        if conn is not None and conn.phase is not Phase.CLOSING:
            out.append(fx.SendFrame(conn.conn_id, frames.error(
                ErrorCode.UNAVAILABLE, "try again later: presence could not be read", "presence.query")))


def _log_head_known(state: Gateway, cmd: c.LogHeadKnown, out: Effects) -> None:
    state.high_seq = max(state.high_seq or 0, cmd.seq)


def _presence_page_loaded(state: Gateway, cmd: c.PresencePageLoaded, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is None or conn.phase is Phase.CLOSING:
        return
    page = cmd.page
    # CONTRACT §3: ``next`` once the page is full; the page after it may be empty.
    next_after = page.user_ids[-1] if page.user_ids and len(page.user_ids) >= cmd.limit else None
    out.append(fx.SendFrame(cmd.conn_id, frames.presence_state(
        cmd.conversation_id, page.user_ids, page.count, next_after)))
    presence.page_shown(state, cmd.conversation_id)


_CLIENT_HANDLERS: dict[type, Callable[[Gateway, Connection, Any, Effects], None]] = {
    c.Authenticate: _authenticate,
    c.AuthFailed: _auth_failed,
    c.Subscribe: _subscribe,
    c.Unsubscribe: _unsubscribe,
    c.Typing: _typing,
    c.PresenceQuery: _presence_query,
    c.Ping: _ping,
    c.BadFrame: _bad_frame,
}

_HANDLERS: dict[type, Callable[[Gateway, Any, Effects], None]] = {
    c.Connect: _connect,
    c.Disconnect: _disconnect,
    c.CloseRequested: _close_requested,
    c.Tick: tick,
    c.BrokerMessage: deliver_broker_message,
    c.ChannelReady: _channel_ready,
    c.BrokerStatusChanged: _broker_status,
    c.SessionLoaded: _session_loaded,
    c.ConnectionClaimed: access.connection_claimed,
    c.MembershipChecked: _membership_checked,
    c.ReplayLoaded: _replay_loaded,
    c.GapLoaded: deliver_gap,
    c.EffectFailed: _effect_failed,
    c.LogHeadKnown: _log_head_known,
    c.FlushPresence: presence.flush,
    c.PresencePageLoaded: _presence_page_loaded,
}
