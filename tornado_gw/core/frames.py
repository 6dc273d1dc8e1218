"""Builders of the server frames of CONTRACT §3 (plain dicts; encoded at the edge,
except a frame the core fans out itself, which ``encode`` turns into bytes once)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tornado_gw.core.protocol import ErrorCode, FrameType

Frame = dict[str, Any]


def frame(kind: FrameType, payload: dict[str, Any] | None = None) -> Frame:
    return {"type": kind.value, "payload": payload if payload is not None else {}}


def auth_success(user_id: str, session_id: str, resumed: bool, conversation_ids: Iterable[str]) -> Frame:
    return frame(FrameType.AUTH_SUCCESS, {
        "user_id": user_id,
        "session_id": session_id,
        "resumed": resumed,
        "conversation_ids": sorted(conversation_ids),
    })


def auth_error(code: str, message: str) -> Frame:
    return frame(FrameType.AUTH_ERROR, {"code": code, "message": message})


def error(code: ErrorCode, message: str, ref_type: str | None) -> Frame:
    return frame(FrameType.ERROR, {"code": code.value, "message": message, "ref_type": ref_type})


def subscribed(granted: Iterable[str], denied: Iterable[str]) -> Frame:
    return frame(FrameType.SUBSCRIBED, {"conversation_ids": list(granted), "denied": list(denied)})


def unsubscribed(conversation_ids: Iterable[str], reason: str | None = None) -> Frame:
    payload: dict[str, Any] = {"conversation_ids": list(conversation_ids)}
    if reason is not None:
        payload["reason"] = reason
    return frame(FrameType.UNSUBSCRIBED, payload)


def server_unsubscribe(conversation_ids: Iterable[str]) -> Frame:
    """``POST /unsubscribe`` on its way to every gateway with a connection of the user."""
    return frame(FrameType.SERVER_UNSUBSCRIBE, {"conversation_ids": list(conversation_ids)})


def server_disconnect(reason: str) -> Frame:
    """``POST /disconnect`` on its way to every gateway with a connection of the user."""
    return frame(FrameType.SERVER_DISCONNECT, {"reason": reason})


def replay_done(count: int, recovered: bool) -> Frame:
    return frame(FrameType.REPLAY_DONE, {"count": count, "recovered": recovered})


def presence_state(conversation_id: str, user_ids: Iterable[str], count: int,
                   next_after: str | None) -> Frame:
    return frame(FrameType.PRESENCE_STATE, {"conversation_id": conversation_id, "user_ids": list(user_ids),
                                            "count": count, "next": next_after})


def presence_diff(conversation_id: str, joins: Iterable[str], leaves: Iterable[str], count: int) -> Frame:
    return frame(FrameType.PRESENCE_DIFF, {"conversation_id": conversation_id, "joins": list(joins),
                                           "leaves": list(leaves), "count": count})


def presence_transition(conversation_id: str, joins: Iterable[str], leaves: Iterable[str], count: int,
                        users: Iterable[str] | None = None) -> Frame:
    """What a presence store publishes with each change (between instances only): who
    came online and who went offline in one atomic step, and ``count`` online after it.
    A count asked for carries no joins or leaves, and with ``users`` the first online
    ids in order (``ports.PresenceStore.announce``)."""
    payload: dict[str, Any] = {"conversation_id": conversation_id, "joins": list(joins),
                               "leaves": list(leaves), "count": count}
    if users is not None:
        payload["users"] = list(users)
    return frame(FrameType.PRESENCE_TRANSITION, payload)


def typing(conversation_id: str, user_id: str, started: bool) -> Frame:
    kind = FrameType.TYPING_START if started else FrameType.TYPING_STOP
    return frame(kind, {"conversation_id": conversation_id, "user_id": user_id})


def pong() -> Frame:
    return frame(FrameType.PONG)


def encode(value: Frame) -> bytes:
    """Compact UTF-8 JSON of a frame the core fans out itself (presence diffs): the core
    may not import the wire codec (``tornado_gw/codec.py``, ujson); everything outside
    the core encodes with that codec."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
