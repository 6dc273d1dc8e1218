"""The core's own records of the outside world: a logged event, a session snapshot,
a page of online users.

They live here, not in ``ports.py``, so that the arrows point inwards: the
ports (and every adapter) import these from the core, the core imports nothing
but the standard library (STYLE §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One numbered event of the durable log, ready to send."""

    seq: int
    channel: str
    data: bytes  # the client frame {"type", "payload", "seq"}, encoded


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """What a resume needs, kept for ``resume_window_s`` after a disconnect: the fold of
    the session's events (its connection's state, ``operations.snapshot``)."""

    session_id: str
    user_id: str
    conversation_ids: tuple[str, ...]
    presence_id: str | None = None  # the last connection's presence entry, left on resume


SNAPSHOT_VERSION = 2  # 1: the same fields without "v" (before issue 10)


def snapshot_record(snapshot: SessionSnapshot) -> dict[str, Any]:
    """A snapshot as stored (docs/redis.md): ``{"v", "user_id", "conversation_ids",
    "presence_id"}``. A gateway of the previous version reads it too (it ignores ``v``)."""
    return {"v": SNAPSHOT_VERSION, "user_id": snapshot.user_id,
            "conversation_ids": list(snapshot.conversation_ids), "presence_id": snapshot.presence_id}


def snapshot_from_record(session_id: str, data: Any) -> SessionSnapshot | None:
    """The snapshot of a stored record of this version or the previous one (a rolling
    upgrade); None for a newer version or a malformed record: the client gets a new session."""
    if not isinstance(data, dict) or data.get("v", 1) not in (1, SNAPSHOT_VERSION):
        return None
    user_id, cids, presence_id = data.get("user_id"), data.get("conversation_ids"), data.get("presence_id")
    if not (isinstance(user_id, str) and isinstance(cids, list) and all(isinstance(x, str) for x in cids)):
        return None
    presence_id = presence_id if isinstance(presence_id, str) else None
    return SessionSnapshot(session_id, user_id, tuple(cids), presence_id)


@dataclass(frozen=True, slots=True)
class PresencePage:
    """Online users of one conversation after some id, in code-point order, with the
    count of all online users."""

    user_ids: tuple[str, ...]
    count: int
