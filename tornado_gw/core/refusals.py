"""Whether a client command is refused: decided before any event, on a read-only view.

A refusal (an ``error`` frame) must leave the state as it was. Rather than trust each
handler to raise before it records anything, the reducer asks ``refuse`` first, which
reads the connection through ``ConnectionView`` (read-only properties: mypy rejects an
assignment) and may raise a ``ClientError``; the handler that runs afterwards never
refuses, and a ``ClientError`` escaping it is a bug (the dispatcher closes that
connection with 1011). So a refused command changes nothing by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Any, Protocol

from tornado_gw.core import commands as c
from tornado_gw.core import transitions
from tornado_gw.core.errors import Forbidden, TooManySubscriptions
from tornado_gw.core.state import Limits, Phase


class ConnectionView(Protocol):
    """What a refusal may read of a connection, and nothing it could change."""

    @property
    def phase(self) -> Phase: ...

    @property
    def conversations(self) -> Set[str]: ...


def refuse(conn: ConnectionView, limits: Limits, cmd: c.Command) -> None:
    """Raise the ``ClientError`` that refuses ``cmd``, or return: it may run."""
    transitions.require(cmd, conn.phase)
    check = _CHECKS.get(type(cmd))
    if check is not None:
        check(conn, limits, cmd)


def _subscribe(conn: ConnectionView, limits: Limits, cmd: c.Subscribe) -> None:
    new = [cid for cid in cmd.conversation_ids if cid not in conn.conversations]
    if len(conn.conversations) + len(new) > limits.max_subscriptions:
        raise TooManySubscriptions(f"can't subscribe: {len(conn.conversations)} + {len(new)} "
                                   f"conversations is over the limit of {limits.max_subscriptions}")


def _subscribed(action: str) -> Callable[[ConnectionView, Limits, Any], None]:
    def check(conn: ConnectionView, limits: Limits, cmd: c.Typing | c.PresenceQuery) -> None:
        if cmd.conversation_id not in conn.conversations:
            raise Forbidden(f"can't {action}: not subscribed to conversation {cmd.conversation_id}")
    return check


_CHECKS: dict[type, Callable[[ConnectionView, Limits, Any], None]] = {
    c.Subscribe: _subscribe,
    c.Typing: _subscribed("type"),
    c.PresenceQuery: _subscribed("query presence"),
}
