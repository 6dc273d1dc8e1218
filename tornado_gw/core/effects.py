"""Outputs of the reducer: I/O requests the runtime performs.

The first group is performed at once and in order (socket writes, closes,
broker subscriptions). The rest go to adapters; any result the state depends
on comes back as a command (see ``commands.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tornado_gw.core.protocol import CloseCode
from tornado_gw.core.records import SessionSnapshot

ConnId = str


# --- performed immediately ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SendFrame:
    """A server frame for one connection; the runtime encodes it."""

    conn_id: ConnId
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Already encoded bytes for many connections: encoded once, written to each."""

    conn_ids: Sequence[ConnId]
    data: bytes
    frame_type: str


@dataclass(frozen=True, slots=True)
class SendReplay:
    """Encoded events for one connection, written at the pace it reads them
    (CONTRACT §4 v2: a replay never trips the outbound cap by itself)."""

    conn_id: ConnId
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CloseConnection:
    conn_id: ConnId
    code: CloseCode
    reason: str


@dataclass(frozen=True, slots=True)
class SubscribeChannel:
    channel: str


@dataclass(frozen=True, slots=True)
class UnsubscribeChannel:
    channel: str


# --- performed by adapters, in order -------------------------------------------

@dataclass(frozen=True, slots=True)
class LoadSession:
    conn_id: ConnId
    session_id: str


@dataclass(frozen=True, slots=True)
class DeleteSession:
    """The session can no longer be resumed (``POST /disconnect``); after any save before it."""

    session_id: str


@dataclass(frozen=True, slots=True)
class SaveSession:
    snapshots: tuple[SessionSnapshot, ...]
    ttl_s: float


@dataclass(frozen=True, slots=True)
class JoinPresence:
    conversation_id: str
    user_id: str
    session_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class LeavePresence:
    conversation_id: str
    user_id: str
    session_id: str
    at: float


@dataclass(frozen=True, slots=True)
class RejoinPresence:
    """Live entries pushed forward, re-created if lost; comebacks are announced."""

    entries: tuple[tuple[str, str, str], ...]
    expires_at: float


@dataclass(frozen=True, slots=True)
class RefreshPresence:
    entries: tuple[tuple[str, str, str], ...]
    expires_at: float


@dataclass(frozen=True, slots=True)
class QueryPresence:
    """Read one page of online users for a client (answered by ``PresencePageLoaded``)."""

    conn_id: ConnId
    conversation_id: str
    after: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class AnnouncePresence:
    """Have the store publish the conversation's count, in order with its transitions
    (with its first ``list_limit`` users; 0: the count only)."""

    conversation_id: str
    list_limit: int


@dataclass(frozen=True, slots=True)
class StartTyping:
    conversation_id: str
    user_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class StopTyping:
    conversation_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class ExpireStale:
    """Sweep expired presence and typing entries (the stores announce what expired)."""

    at: float


# --- performed concurrently (may be slow) ----------------------------------------

@dataclass(frozen=True, slots=True)
class CheckMembership:
    conn_id: ConnId
    user_id: str
    conversation_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoadReplay:
    conn_id: ConnId
    channels: tuple[str, ...]
    after_seq: int
    limit: int


@dataclass(frozen=True, slots=True)
class LoadGap:
    """Read back what the broker lost on ``channels``: every event after ``after_seq``,
    where the gateway's stream stopped (the highest seq it had received from any
    channel; the relay publishes in seq order over one subscriber connection, so every
    channel had everything up to it). Answered in pages, the last one marked."""

    channels: tuple[str, ...]
    after_seq: int



CONCURRENT = (CheckMembership, LoadReplay, LoadGap)  # reads that may be slow (the core tests' world)


# --- access (``core/access.py``): slots by ``runtime/slots.py``, the grant at once ---

@dataclass(frozen=True, slots=True)
class ClaimConnection:
    """Count the connection against ``max_connections_per_user``; ``ConnectionClaimed`` answers."""

    conn_id: ConnId
    user_id: str
    slot_id: str  # unique per connection cluster-wide (its presence id)
    limit: int


@dataclass(frozen=True, slots=True)
class ReleaseConnection:
    user_id: str
    slot_id: str


ACCESS = (ClaimConnection, ReleaseConnection)


@dataclass(frozen=True, slots=True)
class ForgetGrant:
    """A revocation: the membership adapter drops its cached grant (before any later check)."""

    user_id: str
    conversation_id: str

Effect = (
    SendFrame | Deliver | SendReplay | CloseConnection | SubscribeChannel | UnsubscribeChannel
    | LoadSession | SaveSession | JoinPresence | LeavePresence | RejoinPresence | RefreshPresence
    | QueryPresence | AnnouncePresence
    | StartTyping | StopTyping | ExpireStale | CheckMembership | LoadReplay | LoadGap
    | DeleteSession | ClaimConnection | ReleaseConnection | ForgetGrant
)
