"""Client frame (decoded JSON) -> command, or a ``BadFrame`` saying why not.

Pure: the JSON decoding and the token check happen at the edge. Unknown fields
are ignored; wrong types are ``invalid_message`` (CONTRACT §3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tornado_gw.core import commands as c
from tornado_gw.core.ids import is_valid_id
from tornado_gw.core.protocol import ErrorCode, FrameType

MAX_SEQ = 2**63 - 1
MAX_TOKEN_CHARS = 4096


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """An ``auth`` frame before its token is verified by the edge."""

    conn_id: str
    token: str
    session_id: str | None
    last_seq: int | None
    at: float


class _Invalid(Exception):
    pass


def parse_client_frame(conn_id: str, obj: Any, at: float) -> c.Command | AuthRequest:
    """Turn one decoded frame into a command; never raises."""
    if not isinstance(obj, dict):
        return c.BadFrame(conn_id, ErrorCode.INVALID_MESSAGE, "frame must be a JSON object", None, at)
    kind = obj.get("type")
    if not isinstance(kind, str):
        return c.BadFrame(conn_id, ErrorCode.INVALID_MESSAGE, "frame needs a string 'type'", None, at)
    parser = _PARSERS.get(kind)
    if parser is None:
        return c.BadFrame(conn_id, ErrorCode.UNKNOWN_TYPE, f"unknown type {kind[:64]!r}", kind[:64], at)
    payload = obj.get("payload", {})
    try:
        if not isinstance(payload, dict):
            raise _Invalid("'payload' must be an object")
        return parser(conn_id, payload, at)
    except _Invalid as exc:
        return c.BadFrame(conn_id, ErrorCode.INVALID_MESSAGE, f"{kind}: {exc}", kind, at)


def _last_seq(payload: dict[str, Any]) -> int | None:
    value = payload.get("last_seq")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise _Invalid("'last_seq' must be a non-negative integer")
    return value


def _conversation_ids(payload: dict[str, Any]) -> tuple[str, ...]:
    ids = payload.get("conversation_ids")
    if not isinstance(ids, list) or not ids:
        raise _Invalid("'conversation_ids' must be a non-empty list")
    if not all(is_valid_id(cid) for cid in ids):
        raise _Invalid("conversation ids are 1-128 characters of letters, digits and -_.:@")
    return tuple(dict.fromkeys(ids))  # de-duplicated, order kept


def _conversation_id(payload: dict[str, Any]) -> str:
    cid = payload.get("conversation_id")
    if not is_valid_id(cid):
        raise _Invalid("'conversation_id' must be 1-128 characters of letters, digits and -_.:@")
    return str(cid)


def _auth(conn_id: str, payload: dict[str, Any], at: float) -> AuthRequest:
    token = payload.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise _Invalid("'token' must be a non-empty string")
    session_id = payload.get("session_id")
    # CONTRACT §3: an unknown session is not an error; a malformed one is just unknown.
    resumable = session_id if is_valid_id(session_id) else None
    return AuthRequest(conn_id, token, resumable, _last_seq(payload), at)


def _subscribe(conn_id: str, payload: dict[str, Any], at: float) -> c.Subscribe:
    return c.Subscribe(conn_id, _conversation_ids(payload), _last_seq(payload), at)


def _unsubscribe(conn_id: str, payload: dict[str, Any], at: float) -> c.Unsubscribe:
    return c.Unsubscribe(conn_id, _conversation_ids(payload), at)


def _typing(conn_id: str, payload: dict[str, Any], at: float) -> c.Typing:
    return c.Typing(conn_id, _conversation_id(payload), at)


def _presence_query(conn_id: str, payload: dict[str, Any], at: float) -> c.PresenceQuery:
    return c.PresenceQuery(conn_id, _conversation_id(payload), at)


def _ping(conn_id: str, payload: dict[str, Any], at: float) -> c.Ping:
    return c.Ping(conn_id, at)


_PARSERS: dict[str, Callable[[str, dict[str, Any], float], c.Command | AuthRequest]] = {
    FrameType.AUTH.value: _auth,
    FrameType.SUBSCRIBE.value: _subscribe,
    FrameType.UNSUBSCRIBE.value: _unsubscribe,
    FrameType.TYPING.value: _typing,
    FrameType.PRESENCE_QUERY.value: _presence_query,
    FrameType.PING.value: _ping,
}
