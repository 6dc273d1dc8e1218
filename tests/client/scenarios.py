"""Scenarios for the client's pure state object, as data, so that the same steps and the
same expectations run through both ``tornado_gw.client.ClientState`` (tests/client/
test_state.py) and ``ClientState`` of ``clients/js/tornado-gw.js`` in Chromium
(tests/client/test_js_state.py): the two clients behave the same.

A step is one of:
- ``{"call": name, "args": [...], "expect": value}``: a method (snake_case; camelCase in
  JavaScript); sets come back as sorted lists; ``expect`` is optional.
- ``{"take": {...}}``: ``take()``; compares the given keys of ``frames``/``events``/``changes``.
- ``{"check": {key: value}}``: compares a snapshot (``phase``, ``session_id``, ``last_seq``,
  ``wanted``, ``live``, ``presence``, ``presence_count``, ``presence_pending``,
  ``deadline``, ``refresh_at``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

NOW = 1_000_000.0
Step = dict[str, Any]


def jwt(exp: float | None) -> str:
    claims = {"sub": "alice"} if exp is None else {"sub": "alice", "exp": exp}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{body}.sig"


def frame(kind: str, seq: int | None = None, **payload: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "payload": payload}
    if seq is not None:
        out["seq"] = seq
    return out


def call(name: str, *args: Any, **expect: Any) -> Step:
    step: Step = {"call": name, "args": list(args)}
    if "expect" in expect:
        step["expect"] = expect["expect"]
    return step


def receive(kind: str, seq: int | None = None, at: float = NOW, **payload: Any) -> Step:
    return call("receive", frame(kind, seq, **payload), at)


def take(**expected: Any) -> Step:
    return {"take": expected}


def check(**expected: Any) -> Step:
    return {"check": expected}


def change(state: str, code: int | None = None, reason: str = "") -> dict[str, Any]:
    return {"state": state, "code": code, "reason": reason}


def event(kind: str, seq: int | None = None, **payload: Any) -> dict[str, Any]:
    return {"type": kind, "payload": payload, "seq": seq}


def welcome(session_id: str = "s1", resumed: bool = False, conversation_ids: tuple[str, ...] = ()) -> Step:
    return receive("auth.success", user_id="alice", session_id=session_id, resumed=resumed,
                   conversation_ids=list(conversation_ids))


def opened(*subscriptions: str) -> list[Step]:
    """A client subscribed to ``subscriptions`` on an open connection, outputs taken."""
    return [call("subscribe", list(subscriptions)), call("connecting"), call("opened", jwt(None), NOW),
            welcome(), receive("subscribed", conversation_ids=list(subscriptions)),
            *[receive("presence.state", conversation_id=c, user_ids=[]) for c in subscriptions], take()]


SCENARIOS: dict[str, dict[str, Any]] = {
    "first auth carries no session, then subscribes what was asked before": {"steps": [
        call("subscribe", ["c1", "c2"]),
        take(frames=[]),  # not connected yet: remembered only
        call("connecting"), call("opened", "tok", NOW), welcome(),
        take(frames=[frame("auth", token="tok"), frame("subscribe", conversation_ids=["c1", "c2"])],
             changes=[change("connecting"), change("connected")]),
    ]},
    "a reconnect resumes with the session and the highest seq seen": {"steps": [
        *opened("c1"),
        receive("message.new", 3, conversation_id="c1"), receive("message.new", 7, conversation_id="c1"),
        receive("message.new", 5, conversation_id="c9"),
        call("closed", 1006, "", expect="reconnect"),
        call("opened", "tok2", NOW),
        take(frames=[frame("auth", token="tok2", session_id="s1", last_seq=7)]),
    ]},
    "a resumed session subscribes only what the server lost, with last_seq": {"steps": [
        *opened("c1", "c2"),
        receive("message.new", 4, conversation_id="c1"),
        call("closed", 1001, "going away"),
        call("subscribe", ["c3"]), call("unsubscribe", ["c2"]),  # while disconnected
        call("opened", "tok", NOW), take(),
        welcome(resumed=True, conversation_ids=("c1", "c2")),
        take(frames=[frame("unsubscribe", conversation_ids=["c2"]),
                     frame("subscribe", conversation_ids=["c3"], last_seq=4)],
             changes=[change("resumed")]),
        check(live=["c1"], wanted=["c1", "c3"]),
    ]},
    "a lost session falls back to subscribe with last_seq": {"steps": [
        *opened("c1", "c2"),
        receive("message.new", 9, conversation_id="c2"),
        call("closed", None, ""), call("opened", "tok", NOW), take(),
        welcome(session_id="s2"),
        take(frames=[frame("subscribe", conversation_ids=["c1", "c2"], last_seq=9)],
             changes=[change("connected")]),
        check(session_id="s2", last_seq=9),
    ]},
    "duplicates are dropped per channel and other channels are not held back": {"steps": [
        *opened("c1", "c2"),
        receive("message.new", 5, conversation_id="c1"), receive("message.new", 5, conversation_id="c1"),
        receive("message.new", 4, conversation_id="c1"), receive("message.new", 3, conversation_id="c2"),
        receive("message.new", 6, conversation_id="c1"),
        receive("notification.new", 2), receive("notification.new", 2),
        take(events=[event("message.new", 5, conversation_id="c1"),
                     event("message.new", 3, conversation_id="c2"),
                     event("message.new", 6, conversation_id="c1"), event("notification.new", 2)]),
    ]},
    **{f"close {code} means {after}": {"steps": [
        *opened("c1"),
        call("closed", code, "why", expect=after),
        take(changes=[change("disconnected", code, "why")] + ([change("closed")] if after == "stop" else [])),
        check(phase={"reconnect": "idle", "wait_token": "waiting_token", "stop": "closed"}[after]),
    ]} for code, after in ((1000, "reconnect"), (1001, "reconnect"), (1006, "reconnect"), (4003, "reconnect"),
                           (4009, "reconnect"), (4001, "wait_token"), (4010, "stop"), (4011, "stop"))},
    "replay.done not recovered asks for a reload": {"steps": [
        *opened("c1"),
        receive("replay.done", count=3, recovered=True), receive("replay.done", count=0, recovered=False),
        take(events=[event("replay.done", count=3, recovered=True),
                     event("replay.done", count=0, recovered=False)],
             changes=[change("reload")]),
    ]},
    "presence pages are collected until next is null": {"steps": [
        *opened("c1"),
        call("query_presence", "c1"),
        take(frames=[frame("presence.query", conversation_id="c1", limit=500)]),
        receive("presence.state", conversation_id="c1", user_ids=["a", "b"], count=3, next="b"),
        take(frames=[frame("presence.query", conversation_id="c1", limit=500, after="b")], events=[]),
        check(presence_pending=["c1"]),
        receive("presence.state", conversation_id="c1", user_ids=["c"], count=3, next=None),
        check(presence={"c1": ["a", "b", "c"]}, presence_count={"c1": 3}, presence_pending=[]),
    ]},
    "presence.state of a v1 server is one page": {"steps": [
        *opened("c1"),
        call("query_presence", "c1"),
        receive("presence.state", conversation_id="c1", user_ids=["a"]),
        check(presence={"c1": ["a"]}, presence_count={"c1": 1}, presence_pending=[]),
    ]},
    "presence.diff applies joins, leaves and count": {"steps": [
        *opened("c1"),
        receive("presence.diff", conversation_id="c1", joins=["a", "b"], leaves=[], count=2),
        receive("presence.diff", conversation_id="c1", joins=["c"], leaves=["a"], count=2),
        check(presence={"c1": ["b", "c"]}, presence_count={"c1": 2}),
        receive("presence.diff", conversation_id="c1", joins=[], leaves=[], count=900),  # a large room
        check(presence={"c1": ["b", "c"]}, presence_count={"c1": 900}),
    ]},
    "typing users expire without typing.stop and leave on it": {"settings": {"typing_ttl_s": 10}, "steps": [
        *opened("c1"),
        receive("typing.start", conversation_id="c1", user_id="bob"),
        receive("typing.start", at=NOW + 5, conversation_id="c1", user_id="carol"),
        call("typing_users", "c1", NOW + 9, expect=["bob", "carol"]),
        check(deadline=NOW + 10),
        call("tick", NOW + 10, expect=False),
        call("typing_users", "c1", NOW + 10, expect=["carol"]),
        receive("typing.stop", at=NOW + 11, conversation_id="c1", user_id="carol"),
        call("typing_users", "c1", NOW + 11, expect=[]),
    ]},
    "typing is sent at most once per interval and only when subscribed": {"steps": [
        *opened("c1"),
        call("typing", "c1", NOW), call("typing", "c1", NOW + 1), call("typing", "c1", NOW + 2.5),
        call("typing", "c9", NOW),
        take(frames=[frame("typing", conversation_id="c1")] * 2),
    ]},
    "membership.removed ends the subscription locally": {"steps": [
        *opened("c1", "c2"),
        receive("presence.diff", conversation_id="c1", joins=["bob"], leaves=[], count=1),
        receive("typing.start", conversation_id="c1", user_id="bob"),
        receive("membership.removed", 8, conversation_id="c1"),
        check(wanted=["c2"], live=["c2"], presence={"c2": []}),
        call("typing_users", "c1", NOW, expect=[]),
        take(),
        call("closed", 1006, ""), call("opened", "tok", NOW), welcome(session_id="s2"),
        take(frames=[frame("auth", token="tok", session_id="s1", last_seq=8),
                     frame("subscribe", conversation_ids=["c2"], last_seq=8)]),
    ]},
    "denied and server-unsubscribed conversations are forgotten": {"steps": [
        *opened("c1"),
        call("subscribe", ["c2", "c3"]),
        receive("subscribed", conversation_ids=["c2"], denied=["c3"]),
        receive("unsubscribed", conversation_ids=["c1"], reason="server"),
        check(wanted=["c2"], live=["c2"]),
    ]},
    "pings every interval while open": {"settings": {"ping_interval_s": 30}, "steps": [
        *opened("c1"),
        check(deadline=NOW + 30),
        call("tick", NOW + 30, expect=False),
        take(frames=[{"type": "ping"}]),
        check(deadline=NOW + 60),
    ]},
    "a connection silent for a ping interval after a ping is dead": {"settings": {"ping_interval_s": 30},
                                                                      "steps": [
        *opened("c1"),
        call("tick", NOW + 30, expect=False),
        call("silent", NOW + 59, expect=False),
        receive("pong", at=NOW + 59),
        call("silent", NOW + 61, expect=False),
        call("tick", NOW + 60, expect=False),
        check(deadline=NOW + 90),
        call("silent", NOW + 89, expect=False),
        call("silent", NOW + 90, expect=True),
    ]},
    "the token is refreshed before exp over the live connection": {"settings": {"refresh_before_s": 30},
                                                                   "steps": [
        call("connecting"), call("opened", jwt(NOW + 8), NOW),  # a short token: refresh at half its life
        welcome(), take(),
        check(refresh_at=NOW + 4),
        call("tick", NOW + 3.9, expect=False),
        call("tick", NOW + 4, expect=True),
        check(refresh_at=None),
        call("refresh", jwt(NOW + 3600), NOW + 4),
        receive("auth.success", at=NOW + 4, user_id="alice", session_id="s1", resumed=False),
        take(frames=[frame("auth", token=jwt(NOW + 3600))], changes=[]),
        check(refresh_at=NOW + 3600 - 30),
    ]},
    "auth.success after close() is ignored": {"steps": [
        call("connecting"), call("opened", "tok", NOW), call("stop"), welcome(),
        take(changes=[change("connecting"), change("closed")]),
        check(phase="closed"),
    ]},
}


def assert_outputs(name: str, outputs: list[Any]) -> None:
    """Compare what a runner gave back for each step with the scenario's expectations."""
    steps = SCENARIOS[name]["steps"]
    assert len(outputs) == len(steps), f"{name}: {len(outputs)} outputs for {len(steps)} steps"
    for number, (step, got) in enumerate(zip(steps, outputs, strict=True)):
        where = f"{name}, step {number} {json.dumps(step)[:120]}"
        if "call" in step and "expect" in step:
            assert got == step["expect"], where
        for key in ("take", "check"):
            for field, expected in step.get(key, {}).items():
                assert got[field] == expected, f"{where}: {field} is {got[field]!r}"
