"""Commands in, events and effects out: decide, evolve, react.

``handle(state, command)`` decides what the command means for the state: a
client command is first checked against the transition table and the limits on
a read-only view (``refusals.py``) and may be refused with a ``ClientError``
before anything changes (it becomes an ``error`` frame); the handler that runs
after that never refuses. What it settles on is a list of events, each applied by
``events.evolve`` (the only code that changes state) as it is recorded, and
the effects that follow from them. Client commands for a connection that has a
slow operation running wait in its queue and run, in order, when it finishes
(state rule 4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from tornado_gw.core import access, frames, operations, presence, transitions
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core import events as ev
from tornado_gw.core.access import close as _close
from tornado_gw.core.errors import ClientError
from tornado_gw.core.events import record
from tornado_gw.core.fanout import deliver_broker_message, deliver_gap, tick
from tornado_gw.core.ids import conv_channel, user_channel
from tornado_gw.core.protocol import CloseCode, ErrorCode
from tornado_gw.core.refusals import refuse
from tornado_gw.core.state import Connection, Gateway, Phase

Effects = list[fx.Effect]
MAX_QUEUED = 64  # client commands that may wait for a connection's running operation
CLIENT_COMMANDS = (c.Authenticate, c.AuthFailed, c.Subscribe, c.Unsubscribe, c.Typing, c.PresenceQuery,
                   c.Ping, c.BadFrame)


class Outcome(NamedTuple):
    events: list[ev.Event]  # what changed, oldest first
    effects: Effects  # what must happen, in order


def handle(state: Gateway, cmd: c.Command) -> Outcome:
    """Decide what ``cmd`` means, apply the events that follow (``events.record``) and
    return them with the effects, in the order those must happen."""
    out: Effects = []
    if isinstance(cmd, CLIENT_COMMANDS):
        conn = state.connections.get(cmd.conn_id)
        if conn is not None and conn.phase is not Phase.CLOSING and _admit(state, conn, cmd.at, out):
            _client_command(state, conn, cmd, out)
    else:
        _HANDLERS[type(cmd)](state, cmd, out)
    while state.released:
        conn_id = state.released[0]
        record(state, ev.ReleaseTaken())
        _run_queued(state, conn_id, out)
    return Outcome(ev.take(state), out)


# --- client commands --------------------------------------------------------------

def _admit(state: Gateway, conn: Connection, at: float, out: Effects) -> bool:
    """Idle clock and token bucket (CONTRACT §1 ``rate_limit_*``): warn once, then 4008."""
    limits = state.limits
    tokens = min(float(limits.rate_limit_burst),
                 conn.tokens + max(0.0, at - conn.refilled_at) * limits.rate_limit_per_s)
    warned = conn.warned and tokens < limits.rate_limit_burst
    if tokens >= 1.0:
        record(state, ev.FrameCounted(conn.conn_id, at, tokens - 1.0, warned))
        return True
    record(state, ev.FrameCounted(conn.conn_id, at, tokens, True))
    if warned:
        _close(state, conn, CloseCode.RATE_LIMITED, "inbound rate limit exceeded", out)
    else:
        out.append(fx.SendFrame(conn.conn_id, frames.error(
            ErrorCode.RATE_LIMITED, "too many frames: slow down or be disconnected", None)))
    return False


def _client_command(state: Gateway, conn: Connection, cmd: c.Command, out: Effects) -> None:
    if conn.op is not None and not isinstance(cmd, (c.Ping, c.BadFrame)):
        if len(conn.queued) < MAX_QUEUED:
            record(state, ev.CommandQueued(conn.conn_id, cmd))
        else:
            out.append(fx.SendFrame(conn.conn_id, frames.error(
                ErrorCode.UNAVAILABLE, f"over {MAX_QUEUED} requests wait for the one in progress",
                _ref_type(cmd))))
        return
    try:
        refuse(conn, state.limits, cmd)
    except ClientError as exc:
        out.append(fx.SendFrame(conn.conn_id, frames.error(exc.code, exc.message, _ref_type(cmd))))
        return
    _CLIENT_HANDLERS[type(cmd)](state, conn, cmd, out)


def _run_queued(state: Gateway, conn_id: str, out: Effects) -> None:
    conn = state.connections.get(conn_id)
    while conn is not None and conn.op is None and conn.queued and conn.phase is not Phase.CLOSING:
        cmd = conn.queued[0]
        record(state, ev.QueuedCommandTaken(conn_id))
        _client_command(state, conn, cmd, out)


_REF_TYPES = {c.Subscribe: "subscribe", c.Unsubscribe: "unsubscribe", c.Typing: "typing",
              c.PresenceQuery: "presence.query"}


def _ref_type(cmd: c.Command) -> str:
    return _REF_TYPES.get(type(cmd), "auth")


def _authenticate(state: Gateway, conn: Connection, cmd: c.Authenticate, out: Effects) -> None:
    if conn.phase is Phase.AUTHENTICATED:
        if cmd.user_id != conn.user_id:
            _reject_auth(state, conn, "user_mismatch", "token belongs to another user than this connection",
                         out)
            return
        record(state, ev.TokenRefreshed(conn.conn_id, cmd.expires_at))  # token refresh (CONTRACT §3)
        assert conn.session_id is not None
        out.append(fx.SendFrame(conn.conn_id, frames.auth_success(
            cmd.user_id, conn.session_id, False, conn.conversations)))
        return
    record(state, ev.Authenticated(conn.conn_id, cmd.user_id, cmd.expires_at, cmd.new_session_id))
    access.claim_slot(state, conn, out)
    operations.begin(state, conn, "auth", (), cmd.last_seq, cmd.at)
    if cmd.session_id is not None:
        out.append(fx.LoadSession(conn.conn_id, cmd.session_id))
    else:
        _session_loaded(state, c.SessionLoaded(conn.conn_id, None, cmd.at), out)


def _auth_failed(state: Gateway, conn: Connection, cmd: c.AuthFailed, out: Effects) -> None:
    _reject_auth(state, conn, cmd.code, cmd.message, out)


def _reject_auth(state: Gateway, conn: Connection, code: str, message: str, out: Effects) -> None:
    out.append(fx.SendFrame(conn.conn_id, frames.auth_error(code, message)))
    _close(state, conn, CloseCode.AUTH_FAILED, "authentication failed", out)


def _subscribe(state: Gateway, conn: Connection, cmd: c.Subscribe, out: Effects) -> None:
    operations.begin(state, conn, "subscribe", cmd.conversation_ids, cmd.last_seq, cmd.at)
    operations.start(state, conn, cmd.at, out)


def _unsubscribe(state: Gateway, conn: Connection, cmd: c.Unsubscribe, out: Effects) -> None:
    for cid in cmd.conversation_ids:
        if cid in conn.conversations:
            access.leave(state, conn, cid, cmd.at, out)
    out.append(fx.SendFrame(conn.conn_id, frames.unsubscribed(cmd.conversation_ids)))
    out.append(operations.save_session(state, conn))


def _typing(state: Gateway, conn: Connection, cmd: c.Typing, out: Effects) -> None:
    user_id = conn.user_id
    assert user_id is not None  # refuse: authenticated and subscribed
    if presence.is_large(state, cmd.conversation_id):
        return  # accepted, neither stored nor fanned out (CONTRACT §3)
    # Known as typing here at once, not only when the broker echoes typing.start: a
    # typist who leaves before the echo still gets a typing.stop.
    record(state, ev.TypingSeen(cmd.conversation_id, user_id))
    out.append(fx.StartTyping(cmd.conversation_id, user_id, cmd.at + state.limits.typing_ttl_s))


def _presence_query(state: Gateway, conn: Connection, cmd: c.PresenceQuery, out: Effects) -> None:
    out.append(fx.QueryPresence(conn.conn_id, cmd.conversation_id, cmd.after, cmd.limit))


def _ping(state: Gateway, conn: Connection, cmd: c.Ping, out: Effects) -> None:
    out.append(fx.SendFrame(conn.conn_id, frames.pong()))


def _bad_frame(state: Gateway, conn: Connection, cmd: c.BadFrame, out: Effects) -> None:
    out.append(fx.SendFrame(conn.conn_id, frames.error(cmd.code, cmd.message, cmd.ref_type)))


# --- connection lifecycle ----------------------------------------------------------

def _connect(state: Gateway, cmd: c.Connect, out: Effects) -> None:
    record(state, ev.Connected(cmd.conn_id, cmd.at, float(state.limits.rate_limit_burst)))


def _close_requested(state: Gateway, cmd: c.CloseRequested, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is not None:
        _close(state, conn, cmd.code, cmd.reason, out)


def _disconnect(state: Gateway, cmd: c.Disconnect, out: Effects) -> None:
    """Keep the session resumable; presence lingers ``presence_grace_s`` (no flapping)."""
    conn = state.connections.get(cmd.conn_id)
    if conn is None:
        return
    record(state, ev.Disconnected(cmd.conn_id))
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
    if conn is None or not transitions.accepts(conn, cmd):
        return
    snapshot = cmd.snapshot
    if snapshot is not None and snapshot.user_id == conn.user_id:
        # The old connection's entries go once the new ones stand; not while that
        # connection is still open here (a client resuming over a half-open one).
        previous = snapshot.presence_id if snapshot.presence_id not in state.presence_owners else None
        record(state, ev.SessionResumed(conn.conn_id, snapshot.session_id, snapshot.conversation_ids,
                                        previous))
        operations.start(state, conn, cmd.at, out)
    else:
        _new_session(state, conn, cmd.at, out)


def _new_session(state: Gateway, conn: Connection, at: float, out: Effects) -> None:
    """No session to resume, or one whose resume cannot go on (its membership could not
    be checked): a new one, with nothing of the old (its snapshot stays for a later resume)."""
    record(state, ev.SessionCreated(conn.conn_id))
    operations.start(state, conn, at, out)


def _membership_checked(state: Gateway, cmd: c.MembershipChecked, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is not None and transitions.accepts(conn, cmd):
        operations.grant(state, conn, cmd.granted, cmd.at, out)


def _channel_ready(state: Gateway, cmd: c.ChannelReady, out: Effects) -> None:
    presence.open_room(state, cmd.channel, cmd.at, out)
    operations.channel_ready(state, cmd.channel, cmd.at, out)


def _replay_loaded(state: Gateway, cmd: c.ReplayLoaded, out: Effects) -> None:
    conn = state.connections.get(cmd.conn_id)
    if conn is not None and transitions.accepts(conn, cmd):
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
            record(state, ev.BrokerWentDown())
        return
    if not state.broker_down:
        return
    record(state, ev.BrokerCameBack())
    presence.reload_rooms(state, cmd.at, out)
    channels = tuple(sorted(state.subscribers))
    if not channels:
        return
    record(state, ev.GapRequested())
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
        if conn is None or conn.op is None or transitions.step(conn) != "membership":
            return
        if conn.op.kind == "subscribe":
            operations.abort(state, conn, "membership could not be checked", out)
        else:  # a resume: fail closed, and say so with a new session (not ``resumed: true``
            # without its conversations, which a client takes for removals)
            _new_session(state, conn, cmd.at, out)
    elif isinstance(effect, fx.QueryPresence):
        conn = state.connections.get(effect.conn_id)
        if conn is not None and conn.phase is not Phase.CLOSING:
            out.append(fx.SendFrame(conn.conn_id, frames.error(
                ErrorCode.UNAVAILABLE, "try again later: presence could not be read", "presence.query")))


def _log_head_known(state: Gateway, cmd: c.LogHeadKnown, out: Effects) -> None:
    record(state, ev.LogHeadLearnt(cmd.seq))


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
