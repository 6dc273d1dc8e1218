"""Inputs of the reducer: everything that can happen to the gateway.

Client frames, timer ticks, broker deliveries and the results of effects all
arrive as one of these. Each carries the time it was stamped at the edge
(``at``); the core never reads a clock. Results of effects re-enter here and
never touch state directly (STYLE §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tornado_gw.core.effects import Effect
from tornado_gw.core.protocol import CloseCode, ErrorCode
from tornado_gw.core.records import LoggedEvent, PresencePage, SessionSnapshot

ConnId = str


# --- from a client connection -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Connect:
    conn_id: ConnId
    at: float


@dataclass(frozen=True, slots=True)
class Disconnect:
    conn_id: ConnId
    at: float


@dataclass(frozen=True, slots=True)
class Authenticate:
    """A valid token was presented (the edge verified it)."""

    conn_id: ConnId
    user_id: str
    expires_at: float | None
    session_id: str | None
    last_seq: int | None
    new_session_id: str  # used when no session is resumed; made at the edge
    at: float


@dataclass(frozen=True, slots=True)
class AuthFailed:
    conn_id: ConnId
    code: str  # e.g. invalid_token, token_expired
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class Subscribe:
    conn_id: ConnId
    conversation_ids: tuple[str, ...]
    last_seq: int | None
    at: float


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    conn_id: ConnId
    conversation_ids: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class Typing:
    conn_id: ConnId
    conversation_id: str
    at: float


@dataclass(frozen=True, slots=True)
class PresenceQuery:
    """One page of online users: at most ``limit``, ids after ``after`` (CONTRACT §3)."""

    conn_id: ConnId
    conversation_id: str
    after: str | None
    limit: int
    at: float


@dataclass(frozen=True, slots=True)
class Ping:
    conn_id: ConnId
    at: float


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that could not become a command; answered with ``error``."""

    conn_id: ConnId
    code: ErrorCode
    message: str
    ref_type: str | None
    at: float


@dataclass(frozen=True, slots=True)
class CloseRequested:
    """The server closes a connection: drain (1001) or slow consumer (4009)."""

    conn_id: ConnId
    code: CloseCode
    reason: str
    at: float


# --- from timers and the broker -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Tick:
    at: float


@dataclass(frozen=True, slots=True)
class FlushPresence:
    """Clock tick of the presence batches (a fraction of ``presence_batch_ms``)."""

    at: float


@dataclass(frozen=True, slots=True)
class BrokerMessage:
    """A frame from the broker; ``frame`` is its decoded JSON (None if not an object)."""

    channel: str
    data: bytes
    frame: dict[str, Any] | None
    at: float


@dataclass(frozen=True, slots=True)
class ChannelReady:
    channel: str
    at: float


@dataclass(frozen=True, slots=True)
class BrokerStatusChanged:
    up: bool
    reason: str
    at: float


# --- results of effects ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SessionLoaded:
    conn_id: ConnId
    snapshot: SessionSnapshot | None
    at: float


@dataclass(frozen=True, slots=True)
class ConnectionClaimed:
    """Result of ``ClaimConnection``: False when the user is at ``max_connections_per_user``."""

    conn_id: ConnId
    granted: bool
    at: float


@dataclass(frozen=True, slots=True)
class MembershipChecked:
    conn_id: ConnId
    granted: frozenset[str]
    at: float


@dataclass(frozen=True, slots=True)
class ReplayLoaded:
    """``events`` is None when the log could not fill the gap (``recovered: false``)."""

    conn_id: ConnId
    events: tuple[LoggedEvent, ...] | None
    at: float


@dataclass(frozen=True, slots=True)
class GapLoaded:
    """One page of a ``LoadGap`` answer, in seq order; ``last`` marks the final one.
    ``messages`` None: the gap cannot be filled (the log is trimmed, unreachable or
    absent), which is also the last page."""

    channels: tuple[str, ...]
    messages: tuple[BrokerMessage, ...] | None
    last: bool
    at: float


@dataclass(frozen=True, slots=True)
class EffectFailed:
    """An effect that failed, was late (past its deadline) or found its lane full: the
    reducer answers whatever waited for it (a new session, ``error`` ``unavailable``,
    ``recovered: false``). A write is not retried: the periodic refresh re-creates
    presence and session snapshots."""

    effect: Effect
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class LogHeadKnown:
    """The event log's highest seq at start-up: the gap baseline of a fresh instance."""

    seq: int
    at: float


@dataclass(frozen=True, slots=True)
class PresencePageLoaded:
    """Answer to ``QueryPresence`` (a read that failed comes back as ``EffectFailed``)."""

    conn_id: ConnId
    conversation_id: str
    limit: int
    page: PresencePage
    at: float


Command = (
    Connect | Disconnect | Authenticate | AuthFailed | Subscribe | Unsubscribe | Typing
    | PresenceQuery | Ping | BadFrame | CloseRequested | Tick | BrokerMessage | ChannelReady
    | BrokerStatusChanged | SessionLoaded | ConnectionClaimed | MembershipChecked | ReplayLoaded | GapLoaded
    | EffectFailed | LogHeadKnown | FlushPresence | PresencePageLoaded
)
