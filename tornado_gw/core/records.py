"""The core's own records of the outside world: a logged event, a session snapshot,
a page of online users.

They live here, not in ``ports.py``, so that the arrows point inwards: the
ports (and every adapter) import these from the core, the core imports nothing
but the standard library (STYLE §1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One numbered event of the durable log, ready to send."""

    seq: int
    channel: str
    data: bytes  # the client frame {"type", "payload", "seq"}, encoded


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """What a resume needs, kept for ``resume_window_s`` after a disconnect."""

    session_id: str
    user_id: str
    conversation_ids: tuple[str, ...]
    presence_id: str | None = None  # the last connection's presence entry, left on resume


@dataclass(frozen=True, slots=True)
class PresencePage:
    """Online users of one conversation after some id, in code-point order, with the
    count of all online users."""

    user_ids: tuple[str, ...]
    count: int
