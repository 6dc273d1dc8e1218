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
class Publish:
    channel: str
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LoadSession:
    conn_id: ConnId
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
    conn_id: ConnId
    conversation_id: str
    at: float


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
    """Sweep expired presence and typing entries (their announcements come back)."""

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
    """Read back what the broker lost: per channel, events after the last seen seq."""

    after: tuple[tuple[str, int], ...]


CONCURRENT = (CheckMembership, LoadReplay, LoadGap)

Effect = (
    SendFrame | Deliver | CloseConnection | SubscribeChannel | UnsubscribeChannel | Publish
    | LoadSession | SaveSession | JoinPresence | LeavePresence | RejoinPresence | RefreshPresence
    | QueryPresence
    | StartTyping | StopTyping | ExpireStale | CheckMembership | LoadReplay | LoadGap
)
