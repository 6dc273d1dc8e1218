"""Domain assertions and client steps for the core tests.

``sent(effects, "a", "subscribed")`` reads like the contract: the payloads of
the ``subscribed`` frames connection ``a`` was sent by these effects. The
client steps drive a ``World`` the way a WebSocket client and the edge would.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from tests.core.world import World, encode
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.ids import conv_channel
from tornado_gw.core.records import SessionSnapshot
from tornado_gw.core.state import Limits

E = TypeVar("E")
Frame = dict[str, Any]


def frames_to(effects: Iterable[fx.Effect], conn_id: str) -> list[Frame]:
    """Every frame ``conn_id`` gets from these effects, in order (direct and fan-out)."""
    out: list[Frame] = []
    for effect in effects:
        if isinstance(effect, fx.SendFrame) and effect.conn_id == conn_id:
            out.append(json.loads(encode(effect.frame)))
        elif isinstance(effect, fx.Deliver) and conn_id in effect.conn_ids:
            out.append(json.loads(effect.data))
        elif isinstance(effect, fx.SendReplay) and effect.conn_id == conn_id:
            out.extend(json.loads(data) for data in effect.frames)
    return out


def sent(effects: Iterable[fx.Effect], conn_id: str, frame_type: str) -> list[Frame]:
    """Payloads of the ``frame_type`` frames sent to ``conn_id``."""
    return [f["payload"] for f in frames_to(effects, conn_id) if f["type"] == frame_type]


def of(effects: Iterable[fx.Effect], kind: type[E]) -> list[E]:
    return [effect for effect in effects if isinstance(effect, kind)]


def saved(effects: Iterable[fx.Effect]) -> list[tuple[SessionSnapshot, float]]:
    """Each session snapshot these effects save, with its TTL."""
    return [(snapshot, e.ttl_s) for e in of(effects, fx.SaveSession) for snapshot in e.snapshots]


def closes(effects: Iterable[fx.Effect]) -> dict[str, int]:
    return {e.conn_id: int(e.code) for e in of(effects, fx.CloseConnection)}


def kinds(frames: Iterable[Frame]) -> list[str]:
    return [f["type"] for f in frames]


def seqs(frames: Iterable[Frame]) -> list[int]:
    return [f["seq"] for f in frames if "seq" in f]


def error_codes(effects: Iterable[fx.Effect], conn_id: str) -> list[tuple[str, str | None]]:
    return [(p["code"], p["ref_type"]) for p in sent(effects, conn_id, "error")]


def broker(channel: str, kind: Any, payload: Any, seq: Any = None,
           at: float = 0.0) -> c.BrokerMessage:
    """A ``BrokerMessage`` as the feed builds it (``seq`` omitted when None)."""
    frame: Frame = {"type": kind, "payload": payload}
    if seq is not None:
        frame["seq"] = seq
    return c.BrokerMessage(channel, encode(frame), frame, at)


def message(cid: str, sender: str, seq: int | None = None, at: float = 0.0) -> c.BrokerMessage:
    """A ``message.new`` for conversation ``cid`` from ``sender``."""
    payload = {"conversation_id": cid, "message": {"id": "m", "sender_id": sender, "content": "hi"}}
    return broker(conv_channel(cid), "message.new", payload, seq, at)


# --- a client talking to a World ------------------------------------------------------------

def world(**limits: Any) -> World:
    members = limits.pop("members", None)
    return World(Limits(**limits), members)


def take(w: World, conn_id: str) -> list[Frame]:
    """The frames ``conn_id`` received since the last ``take``."""
    frames = w.received.get(conn_id, [])
    w.received[conn_id] = []
    return frames


def connect(w: World, conn_id: str) -> None:
    w.submit(c.Connect(conn_id, w.now))


def login(w: World, conn_id: str, user_id: str, *, session_id: str | None = None, last_seq: int | None = None,
          expires_at: float | None = None, connect_first: bool = True) -> list[Frame]:
    """Connect (by default), send ``auth`` and let everything finish; returns the frames received."""
    if connect_first:
        connect(w, conn_id)
    w.submit(c.Authenticate(conn_id, user_id, expires_at, session_id, last_seq, f"s-{conn_id}", w.now))
    w.settle()
    return take(w, conn_id)


def subscribe(w: World, conn_id: str, *cids: str, last_seq: int | None = None) -> list[Frame]:
    w.submit(c.Subscribe(conn_id, cids, last_seq, w.now))
    w.settle()
    return take(w, conn_id)


def unsubscribe(w: World, conn_id: str, *cids: str) -> list[Frame]:
    w.submit(c.Unsubscribe(conn_id, cids, w.now))
    w.settle()
    return take(w, conn_id)


def disconnect(w: World, conn_id: str) -> None:
    w.submit(c.Disconnect(conn_id, w.now))
    w.settle()


def room(*users: str, cid: str = "c1", **limits: Any) -> World:
    """One connection per user (conn id = user id), subscribed to ``cid`` in this order;
    what they received so far (presence batches included) is taken."""
    w = world(**limits)
    for user in users:
        login(w, user, user)
        subscribe(w, user, cid)
    batch(w)
    for user in users:
        take(w, user)
    return w


def lose(w: World, channel: str) -> None:
    """A broker outage during which one event is published to ``channel`` (and lost)."""
    w.set_broker(False)
    w.emit(channel, "message.new", {"lost": True})
    w.set_broker(True)


def numbered(w: World, conn_id: str) -> list[int]:
    """The seqs of the ``message.new`` frames ``conn_id`` received, in order."""
    return [f["seq"] for f in w.received.get(conn_id, []) if f["type"] == "message.new"]


def online_updates(frames: Sequence[Frame]) -> list[tuple[str, str, str]]:
    """(conversation, user, "online" or "offline") for each join and leave of the
    ``presence.diff`` frames received, in order."""
    changes = []
    for f in frames:
        if f["type"] == "presence.diff":
            payload = f["payload"]
            changes += [(payload["conversation_id"], uid, "online") for uid in payload["joins"]]
            changes += [(payload["conversation_id"], uid, "offline") for uid in payload["leaves"]]
    return changes


def payloads(frames: Sequence[Frame], frame_type: str) -> list[dict[str, Any]]:
    """The payloads of the ``frame_type`` frames received, in order."""
    return [f["payload"] for f in frames if f["type"] == frame_type]


def diffs(frames: Sequence[Frame]) -> list[dict[str, Any]]:
    return payloads(frames, "presence.diff")


def batch(w: World) -> None:
    """Let one ``presence_batch_ms`` pass, so the open presence batches leave."""
    w.flush_presence(w.state.limits.presence_batch_ms / 1000.0)
