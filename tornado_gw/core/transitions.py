"""The one transition table: which client command is allowed in which phase of a
connection, and the phase it leads to (as h11's and wsproto's state tables).

A connection is ``connecting -> authenticated -> closing``. A failed ``auth``
operation leads back to ``connecting``; any close (refused ``auth``, rate limit,
timers, the server API) leads to ``closing``, where every client command is
dropped. An operation (``auth`` with resume, ``subscribe``) moves through the
steps of ``OPERATION_STEPS``; while one runs, client commands wait in order.
"""

from __future__ import annotations

from tornado_gw.core import commands as c
from tornado_gw.core.errors import Unauthenticated
from tornado_gw.core.state import Connection, Phase

CONNECTING, AUTHENTICATED, CLOSING = Phase.CONNECTING, Phase.AUTHENTICATED, Phase.CLOSING

# (command, phase) -> the phase it leads to; a pair missing here is refused.
CONNECTION: dict[tuple[type, Phase], Phase] = {
    (c.Authenticate, CONNECTING): AUTHENTICATED,  # an auth operation starts
    (c.Authenticate, AUTHENTICATED): AUTHENTICATED,  # a token refresh
    (c.AuthFailed, CONNECTING): CLOSING,
    (c.AuthFailed, AUTHENTICATED): CLOSING,
    (c.Subscribe, AUTHENTICATED): AUTHENTICATED,
    (c.Unsubscribe, AUTHENTICATED): AUTHENTICATED,
    (c.Typing, AUTHENTICATED): AUTHENTICATED,
    (c.PresenceQuery, AUTHENTICATED): AUTHENTICATED,
    (c.Ping, CONNECTING): CONNECTING,
    (c.Ping, AUTHENTICATED): AUTHENTICATED,
    (c.BadFrame, CONNECTING): CONNECTING,
    (c.BadFrame, AUTHENTICATED): AUTHENTICATED,
}

# An operation's steps: the result each one waits for -> the step it is accepted in.
# session -> membership (with check_membership) -> channels (every one live: the reply
# goes out) -> replay (with last_seq) -> done. A result in another step is stale: dropped.
OPERATION: dict[type, str] = {
    c.SessionLoaded: "session",  # auth only: the session loaded, or a new one
    c.MembershipChecked: "membership",
    c.ReplayLoaded: "replay",
}

ACTIONS = {c.Subscribe: "subscribe", c.Unsubscribe: "unsubscribe", c.Typing: "type",
           c.PresenceQuery: "query presence", c.Authenticate: "auth", c.Ping: "ping",
           c.BadFrame: "send that frame", c.AuthFailed: "auth"}


def require(cmd: c.Command, phase: Phase) -> Phase:
    """The phase ``cmd`` leads to; a refused transition names the command and the phase."""
    after = CONNECTION.get((type(cmd), phase))
    if after is None:
        raise Unauthenticated(f"can't {ACTIONS.get(type(cmd), type(cmd).__name__)}: "
                              f"connection is {phase.value}; send auth first")
    return after


def step(conn: Connection) -> str | None:
    """Where the connection's operation is, read off its data; None: no operation."""
    op = conn.op
    if op is None:
        return None
    if op.replaying:
        return "replay"
    if op.channels:
        return "channels"
    return "session" if op.kind == "auth" and conn.session_id is None else "membership"


def accepts(conn: Connection | None, result: c.Command) -> bool:
    """Whether ``conn``'s operation waits for ``result`` (``OPERATION``)."""
    return conn is not None and step(conn) == OPERATION[type(result)]
