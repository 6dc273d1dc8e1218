"""The client's protocol logic: pure, no I/O and no clock (``now`` comes in).

Theory of operation (the sans-I/O shape of ``websockets/protocol.py``): the
socket loop in ``client/connection.py`` feeds this object what happened
(``opened``, ``receive``, ``closed``, ``tick``, calls of the user) and drains
what to do (``take()``: frames to send, events for the user, state changes).

Rules kept here (docs/clients.md has the state machine):
1. Resume: ``auth`` carries the last ``session_id`` and the highest ``seq`` seen
   (CONTRACT §4). A session the server no longer knows (``resumed: false``) is
   recovered with ``subscribe`` + ``last_seq``.
2. Per channel, an event whose ``seq`` is not above the highest seen on that
   channel is a duplicate and is dropped.
3. Subscriptions the user asked for are remembered across reconnects; denied ones,
   ``unsubscribed`` by the server and ``membership.removed`` end them.
4. Presence is a set per conversation, from ``presence.state`` pages and
   ``presence.diff``; typing users expire ``typing_ttl_s`` after ``typing.start``.
5. After close 4001 the client waits for a new token; after 4010/4011 it stops.
6. A ping every ``ping_interval_s``; nothing at all for one more interval after it
   means a dead link (``silent``), dropped by the loop like a lost connection.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

AUTH_FAILED = 4001
DISCONNECTED_BY_APP = 4010
TOO_MANY_CONNECTIONS = 4011
NEVER_RECONNECT = frozenset({DISCONNECTED_BY_APP, TOO_MANY_CONNECTIONS})
USER_CHANNEL = "user"

Phase = Literal["idle", "connecting", "authenticating", "open", "waiting_token", "closed"]
After = Literal["reconnect", "wait_token", "stop"]
Frame = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Settings:
    """Client timers; every one can be shortened (tests) or lengthened."""

    ping_interval_s: float = 30.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    refresh_before_s: float = 30.0  # refresh the token this long before ``exp`` (at most half its life)
    typing_ttl_s: float = 10.0  # CONTRACT §1 typing_ttl_s: a typing user without typing.stop expires
    typing_every_s: float = 2.0  # send at most one ``typing`` per conversation per this interval
    presence_page: int = 500


@dataclass(frozen=True, slots=True)
class Event:
    """A server frame for the user: outbox events carry ``seq``, others do not."""

    type: str
    payload: dict[str, Any]
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """``connecting``, ``connected`` (new session), ``resumed``, ``disconnected``
    (``code``, ``reason``), ``closed`` (no more reconnects) or ``reload``
    (``replay.done`` with ``recovered: false``: reload from the API)."""

    state: str
    code: int | None = None
    reason: str = ""


@dataclass
class ClientState:
    settings: Settings = field(default_factory=Settings)
    phase: Phase = "idle"
    user_id: str | None = None
    session_id: str | None = None
    last_seq: int | None = None
    channel_seqs: dict[str, int] = field(default_factory=dict)
    wanted: dict[str, None] = field(default_factory=dict)  # ordered set: what the user subscribed to
    live: set[str] = field(default_factory=set)  # confirmed by ``subscribed`` on this connection
    presence: dict[str, set[str]] = field(default_factory=dict)
    presence_count: dict[str, int] = field(default_factory=dict)
    typing_until: dict[str, dict[str, float]] = field(default_factory=dict)
    token_exp: float | None = None
    refresh_at: float | None = None
    ping_at: float | None = None
    pong_due: float | None = None  # a ping went out: something must arrive before this
    presence_pages: dict[str, set[str]] = field(default_factory=dict)  # queries under way
    _typing_sent: dict[str, float] = field(default_factory=dict)
    _frames: list[Frame] = field(default_factory=list)
    _events: list[Event] = field(default_factory=list)
    _changes: list[StateChange] = field(default_factory=list)

    # --- what the loop drains ---------------------------------------------------------

    def take(self) -> tuple[list[Frame], list[Event], list[StateChange]]:
        """Frames to send, events for the user, state changes, in order; clears them."""
        out = (self._frames, self._events, self._changes)
        self._frames, self._events, self._changes = [], [], []
        return out

    # --- the connection's life --------------------------------------------------------

    def connecting(self) -> None:
        self.phase = "connecting"
        self._changes.append(StateChange("connecting"))

    def opened(self, token: str, now: float) -> None:
        """The socket is open: authenticate, resuming the last session if there is one."""
        self.phase = "authenticating"
        payload: dict[str, Any] = {"token": token}
        if self.session_id is not None:
            payload["session_id"] = self.session_id
            if self.last_seq is not None:
                payload["last_seq"] = self.last_seq
        self._send("auth", payload)
        self._token_used(token, now)
        self.ping_at = now + self.settings.ping_interval_s

    def refresh(self, token: str, now: float) -> None:
        """A new token over the live connection (CONTRACT §3 token refresh)."""
        if self.phase == "open":
            self._send("auth", {"token": token})
        self._token_used(token, now)

    def closed(self, code: int | None, reason: str) -> After:
        """The socket closed (``code`` None: no close frame, as 1006). Returns what to do next."""
        self.live.clear()
        self.typing_until.clear()
        self.presence_pages.clear()
        self.ping_at = self.refresh_at = self.pong_due = None
        if self.phase == "closed":
            return "stop"
        self._changes.append(StateChange("disconnected", code, reason))
        if code == AUTH_FAILED:
            self.phase = "waiting_token"
            return "wait_token"
        if code in NEVER_RECONNECT:
            self.stop()
            return "stop"
        self.phase = "idle"
        return "reconnect"

    def stop(self) -> None:
        """No more reconnects (``close()`` by the user, or 4010/4011)."""
        if self.phase != "closed":
            self.phase = "closed"
            self._changes.append(StateChange("closed"))

    def deadline(self) -> float | None:
        """The earliest time ``tick`` has something to do."""
        times = [t for t in (self.ping_at, self.refresh_at, self.pong_due) if t is not None]
        times += [t for users in self.typing_until.values() for t in users.values()]
        return min(times, default=None)

    def tick(self, now: float) -> bool:
        """Pings and typing expiry; returns True when the token needs refreshing now."""
        if self.ping_at is not None and now >= self.ping_at and self.phase == "open":
            self._send("ping", None)
            self.ping_at = now + self.settings.ping_interval_s
            self.pong_due = self.pong_due or self.ping_at
        for users in self.typing_until.values():
            for user_id in [u for u, until in users.items() if until <= now]:
                del users[user_id]
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None  # one request per token; ``refresh`` sets the next
            return True
        return False

    def silent(self, now: float) -> bool:
        """True when nothing arrived for a ping interval after a ping: the connection is
        dead even if TCP has not noticed (a half-open link); the loop drops it and reconnects."""
        return self.pong_due is not None and now >= self.pong_due

    # --- calls of the user ------------------------------------------------------------

    def subscribe(self, conversation_ids: Iterable[str]) -> None:
        new = [c for c in conversation_ids if c not in self.wanted]
        self.wanted.update(dict.fromkeys(new))
        if new and self.phase == "open":
            self._subscribe(new)

    def unsubscribe(self, conversation_ids: Iterable[str]) -> None:
        gone = [c for c in conversation_ids if c in self.wanted]
        for conversation_id in gone:
            del self.wanted[conversation_id]
            self._forget(conversation_id)
        if gone and self.phase == "open":
            self._send("unsubscribe", {"conversation_ids": gone})

    def typing(self, conversation_id: str, now: float) -> None:
        """Say the user is typing; repeats within ``typing_every_s`` are not sent."""
        if self.phase != "open" or conversation_id not in self.live:
            return
        if now < self._typing_sent.get(conversation_id, float("-inf")) + self.settings.typing_every_s:
            return
        self._typing_sent[conversation_id] = now
        self._send("typing", {"conversation_id": conversation_id})

    def query_presence(self, conversation_id: str, after: str | None = None) -> None:
        payload: dict[str, Any] = {"conversation_id": conversation_id, "limit": self.settings.presence_page}
        if after is not None:
            payload["after"] = after
        else:
            self.presence_pages[conversation_id] = set()
        self._send("presence.query", payload)

    def typing_users(self, conversation_id: str, now: float) -> set[str]:
        users = self.typing_until.get(conversation_id, {})
        return {u for u, until in users.items() if until > now}

    # --- frames from the server -------------------------------------------------------

    def receive(self, frame: Frame, now: float) -> None:
        """One decoded server frame."""
        self.pong_due = None  # any frame proves the connection alive
        kind = frame.get("type")
        payload = frame.get("payload")
        if not isinstance(kind, str) or not isinstance(payload, dict):
            payload = payload if isinstance(payload, dict) else {}
        handler = _HANDLERS.get(str(kind))
        if handler is not None:
            handler(self, payload, now)
            return
        seq = frame.get("seq")
        if isinstance(seq, int) and not self._is_new(str(kind), payload, seq):
            return
        if kind == "membership.removed":
            self._removed(payload.get("conversation_id"))
        self._events.append(Event(str(kind), payload, seq if isinstance(seq, int) else None))

    def _auth_success(self, payload: dict[str, Any], now: float) -> None:
        if self.phase in ("open", "closed"):  # the answer to a token refresh, or too late
            return
        resumed = bool(payload.get("resumed"))
        had_session = self.session_id is not None
        self.user_id = payload.get("user_id")
        self.session_id = payload.get("session_id")
        self.phase = "open"
        self._changes.append(StateChange("resumed" if resumed else "connected"))
        granted = [str(c) for c in payload.get("conversation_ids") or ()]
        if resumed:
            self.live.update(c for c in granted if c in self.wanted)
            extra = [c for c in granted if c not in self.wanted]
            if extra:
                self._send("unsubscribe", {"conversation_ids": extra})
        missing = [c for c in self.wanted if c not in self.live]
        if missing:
            # A lost session (rule 1): the replay comes from subscribe + last_seq.
            self._subscribe(missing, recover=had_session)

    def _subscribed(self, payload: dict[str, Any], now: float) -> None:
        granted = [str(c) for c in payload.get("conversation_ids") or ()]
        for conversation_id in payload.get("denied") or ():
            self.wanted.pop(str(conversation_id), None)
        self.live.update(c for c in granted if c in self.wanted)
        for conversation_id in granted:
            self.query_presence(conversation_id)
        self._events.append(Event("subscribed", payload))

    def _unsubscribed(self, payload: dict[str, Any], now: float) -> None:
        if payload.get("reason") == "server":
            for conversation_id in payload.get("conversation_ids") or ():
                self.wanted.pop(str(conversation_id), None)
                self._forget(str(conversation_id))
        self._events.append(Event("unsubscribed", payload))

    def _replay_done(self, payload: dict[str, Any], now: float) -> None:
        if payload.get("recovered") is False:
            self._changes.append(StateChange("reload"))
        self._events.append(Event("replay.done", payload))

    def _presence_state(self, payload: dict[str, Any], now: float) -> None:
        conversation_id = str(payload.get("conversation_id"))
        page = self.presence_pages.setdefault(conversation_id, set())
        page.update(str(u) for u in payload.get("user_ids") or ())
        after = payload.get("next")  # CONTRACT v2 paging; a v1 server sends no ``next``
        if after is not None:
            self.query_presence(conversation_id, after=str(after))
            return
        del self.presence_pages[conversation_id]
        if conversation_id in self.wanted:
            self.presence[conversation_id] = page
            self.presence_count[conversation_id] = int(payload.get("count", len(page)))
        self._events.append(Event("presence.state", payload))

    def _presence_diff(self, payload: dict[str, Any], now: float) -> None:
        conversation_id = str(payload.get("conversation_id"))
        online = self.presence.setdefault(conversation_id, set())
        online.update(str(u) for u in payload.get("joins") or ())
        online.difference_update(str(u) for u in payload.get("leaves") or ())
        if isinstance(payload.get("count"), int):
            self.presence_count[conversation_id] = payload["count"]
        self._events.append(Event("presence.diff", payload))

    def _typing_start(self, payload: dict[str, Any], now: float) -> None:
        users = self.typing_until.setdefault(str(payload.get("conversation_id")), {})
        users[str(payload.get("user_id"))] = now + self.settings.typing_ttl_s
        self._events.append(Event("typing.start", payload))

    def _typing_stop(self, payload: dict[str, Any], now: float) -> None:
        self.typing_until.get(str(payload.get("conversation_id")), {}).pop(str(payload.get("user_id")), None)
        self._events.append(Event("typing.stop", payload))

    def _ignore(self, payload: dict[str, Any], now: float) -> None:
        """``pong``: the ping did its job (the server's idle timer)."""

    def _error(self, payload: dict[str, Any], now: float) -> None:
        self._events.append(Event("error", payload))

    # --- helpers ----------------------------------------------------------------------

    def _send(self, kind: str, payload: dict[str, Any] | None) -> None:
        self._frames.append({"type": kind} if payload is None else {"type": kind, "payload": payload})

    def _subscribe(self, conversation_ids: list[str], recover: bool = True) -> None:
        payload: dict[str, Any] = {"conversation_ids": conversation_ids}
        if recover and self.last_seq is not None:
            payload["last_seq"] = self.last_seq  # CONTRACT §4: always a valid last_seq
        self._send("subscribe", payload)

    def _token_used(self, token: str, now: float) -> None:
        self.token_exp = token_expiry(token)
        if self.token_exp is None:
            self.refresh_at = None
            return
        margin = min(self.settings.refresh_before_s, max(0.0, self.token_exp - now) / 2)
        self.refresh_at = self.token_exp - margin

    def _is_new(self, kind: str, payload: dict[str, Any], seq: int) -> bool:
        """Rule 2; also moves the resume point (the highest seq seen on any channel)."""
        channel = event_channel(kind, payload)
        if seq <= self.channel_seqs.get(channel, 0):
            return False
        self.channel_seqs[channel] = seq
        self.last_seq = max(seq, self.last_seq or 0)
        return True

    def _removed(self, conversation_id: object) -> None:
        if isinstance(conversation_id, str):
            self.wanted.pop(conversation_id, None)
            self._forget(conversation_id)

    def _forget(self, conversation_id: str) -> None:
        self.live.discard(conversation_id)
        self.presence.pop(conversation_id, None)
        self.presence_count.pop(conversation_id, None)
        self.typing_until.pop(conversation_id, None)


_HANDLERS = {
    "auth.success": ClientState._auth_success,
    "subscribed": ClientState._subscribed,
    "unsubscribed": ClientState._unsubscribed,
    "replay.done": ClientState._replay_done,
    "presence.state": ClientState._presence_state,
    "presence.diff": ClientState._presence_diff,
    "typing.start": ClientState._typing_start,
    "typing.stop": ClientState._typing_stop,
    "pong": ClientState._ignore,
    "error": ClientState._error,
}


def event_channel(kind: str, payload: dict[str, Any]) -> str:
    """The channel an outbox event came on: conversation events carry
    ``payload.conversation_id`` (as ``message.new`` does, CONTRACT §3); the rest,
    ``membership.removed`` included, are the user's own channel."""
    conversation_id = payload.get("conversation_id")
    if kind != "membership.removed" and isinstance(conversation_id, str):
        return "conv:" + conversation_id
    return USER_CHANNEL


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (the server verifies)."""
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) else None
