"""The client's protocol logic, fed frames directly: no socket, no clock."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tornado_gw.client.backoff import reconnect_delay_s
from tornado_gw.client.state import ClientState, Settings, StateChange, token_expiry

NOW = 1_000_000.0


def jwt(exp: float | None) -> str:
    claims = {"sub": "alice"} if exp is None else {"sub": "alice", "exp": exp}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{body}.sig"


def frame(kind: str, seq: int | None = None, **payload: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "payload": payload}
    if seq is not None:
        out["seq"] = seq
    return out


def open_client(*subscriptions: str, resumed: bool = False) -> ClientState:
    state = ClientState(Settings(typing_ttl_s=10, ping_interval_s=30))
    state.subscribe(subscriptions)
    state.connecting()
    state.opened(jwt(None), NOW)
    state.receive(frame("auth.success", user_id="alice", session_id="s1", resumed=resumed,
                        conversation_ids=list(subscriptions) if resumed else []), NOW)
    state.receive(frame("subscribed", conversation_ids=list(subscriptions)), NOW)
    state.receive(frame("presence.state", conversation_id="c1", user_ids=[]), NOW)
    state.take()
    return state


def sent(state: ClientState) -> list[dict[str, Any]]:
    return state.take()[0]


def test_first_auth_carries_no_session_then_subscribes_what_was_asked_before() -> None:
    state = ClientState()
    state.subscribe(["c1", "c2"])
    assert sent(state) == []  # not connected yet: remembered only
    state.connecting()
    state.opened("tok", NOW)
    state.receive(frame("auth.success", user_id="alice", session_id="s1", resumed=False, conversation_ids=[]),
                  NOW)
    frames, _, changes = state.take()
    assert frames == [frame("auth", token="tok"), frame("subscribe", conversation_ids=["c1", "c2"])]
    assert changes == [StateChange("connecting"), StateChange("connected")]


def test_reconnect_resumes_with_the_session_and_the_highest_seq_seen() -> None:
    state = open_client("c1")
    for seq in (3, 7, 5):
        state.receive(frame("message.new", seq, conversation_id="c1" if seq != 5 else "c9"), NOW)
    assert state.closed(1006, "") == "reconnect"
    state.opened("tok2", NOW)
    assert sent(state) == [frame("auth", token="tok2", session_id="s1", last_seq=7)]


def test_resumed_session_subscribes_only_what_the_server_lost_with_last_seq() -> None:
    state = open_client("c1", "c2")
    state.receive(frame("message.new", 4, conversation_id="c1"), NOW)
    state.closed(1001, "going away")
    state.subscribe(["c3"])  # asked while disconnected
    state.unsubscribe(["c2"])
    state.opened("tok", NOW)
    state.take()
    state.receive(frame("auth.success", user_id="alice", session_id="s1", resumed=True,
                        conversation_ids=["c1", "c2"]), NOW)
    frames, _, changes = state.take()
    assert frames == [frame("unsubscribe", conversation_ids=["c2"]),
                      frame("subscribe", conversation_ids=["c3"], last_seq=4)]
    assert changes == [StateChange("resumed")]


def test_lost_session_falls_back_to_subscribe_with_last_seq() -> None:
    state = open_client("c1", "c2")
    state.receive(frame("message.new", 9, conversation_id="c2"), NOW)
    state.closed(None, "")
    state.opened("tok", NOW)
    state.receive(frame("auth.success", user_id="alice", session_id="s2", resumed=False, conversation_ids=[]),
                  NOW)
    frames, _, changes = state.take()
    assert frames[-1] == frame("subscribe", conversation_ids=["c1", "c2"], last_seq=9)
    assert changes[-1] == StateChange("connected")
    assert state.session_id == "s2"


def test_duplicates_are_dropped_per_channel_and_other_channels_are_not_held_back() -> None:
    state = open_client("c1", "c2")
    for seq, conversation_id in ((5, "c1"), (5, "c1"), (4, "c1"), (3, "c2"), (6, "c1")):
        state.receive(frame("message.new", seq, conversation_id=conversation_id), NOW)
    state.receive(frame("notification.new", 2), NOW)
    state.receive(frame("notification.new", 2), NOW)
    events = state.take()[1]
    assert [(e.seq, e.payload.get("conversation_id")) for e in events] == [
        (5, "c1"), (3, "c2"), (6, "c1"), (2, None)]


def test_close_codes_decide_whether_to_reconnect() -> None:
    for code, after in ((1001, "reconnect"), (1006, "reconnect"), (4009, "reconnect"), (4003, "reconnect"),
                        (4001, "wait_token"), (4010, "stop"), (4011, "stop")):
        state = open_client("c1")
        assert state.closed(code, "why") == after, code
        assert state.take()[2][0] == StateChange("disconnected", code, "why")
    state = open_client("c1")
    state.closed(4010, "")
    assert state.phase == "closed" and state.take()[2][-1] == StateChange("closed")


def test_replay_done_not_recovered_asks_for_a_reload() -> None:
    state = open_client("c1")
    state.receive(frame("replay.done", count=3, recovered=True), NOW)
    state.receive(frame("replay.done", count=0, recovered=False), NOW)
    _, events, changes = state.take()
    assert changes == [StateChange("reload")]
    assert [e.payload["recovered"] for e in events] == [True, False]


def test_presence_pages_are_collected_until_next_is_null() -> None:
    state = open_client("c1")
    state.query_presence("c1")
    assert sent(state) == [frame("presence.query", conversation_id="c1", limit=500)]
    state.receive(frame("presence.state", conversation_id="c1", user_ids=["a", "b"], count=3, next="b"), NOW)
    assert sent(state) == [frame("presence.query", conversation_id="c1", limit=500, after="b")]
    assert "c1" in state.presence_pages
    state.receive(frame("presence.state", conversation_id="c1", user_ids=["c"], count=3, next=None), NOW)
    assert state.presence["c1"] == {"a", "b", "c"} and state.presence_count["c1"] == 3
    assert "c1" not in state.presence_pages


def test_presence_state_of_a_v1_server_is_one_page() -> None:
    state = open_client("c1")
    state.query_presence("c1")
    state.receive(frame("presence.state", conversation_id="c1", user_ids=["a"]), NOW)
    assert state.presence["c1"] == {"a"} and state.presence_count["c1"] == 1


def test_presence_diff_applies_joins_leaves_and_count() -> None:
    state = open_client("c1")
    state.receive(frame("presence.diff", conversation_id="c1", joins=["a", "b"], leaves=[], count=2), NOW)
    state.receive(frame("presence.diff", conversation_id="c1", joins=["c"], leaves=["a"], count=2), NOW)
    assert state.presence["c1"] == {"b", "c"} and state.presence_count["c1"] == 2
    state.receive(frame("presence.diff", conversation_id="c1", joins=[], leaves=[], count=900), NOW)
    assert state.presence_count["c1"] == 900  # a large room: the count only


def test_typing_users_expire_without_typing_stop_and_leave_on_it() -> None:
    state = open_client("c1")
    state.receive(frame("typing.start", conversation_id="c1", user_id="bob"), NOW)
    state.receive(frame("typing.start", conversation_id="c1", user_id="carol"), NOW + 5)
    assert state.typing_users("c1", NOW + 9) == {"bob", "carol"}
    assert state.deadline() == NOW + 10
    state.tick(NOW + 10)
    assert state.typing_users("c1", NOW + 10) == {"carol"}
    state.receive(frame("typing.stop", conversation_id="c1", user_id="carol"), NOW + 11)
    assert state.typing_users("c1", NOW + 11) == set()


def test_typing_is_sent_at_most_once_per_interval_and_only_when_subscribed() -> None:
    state = open_client("c1")
    for at in (0, 1, 2.5):
        state.typing("c1", NOW + at)
    state.typing("c9", NOW)
    assert sent(state) == [frame("typing", conversation_id="c1")] * 2


def test_membership_removed_ends_the_subscription_locally() -> None:
    state = open_client("c1", "c2")
    state.receive(frame("presence.diff", conversation_id="c1", joins=["bob"], leaves=[], count=1), NOW)
    state.receive(frame("typing.start", conversation_id="c1", user_id="bob"), NOW)
    state.receive(frame("membership.removed", 8, conversation_id="c1"), NOW)
    events = state.take()[1]
    assert events[-1].type == "membership.removed" and events[-1].seq == 8
    assert list(state.wanted) == ["c2"] and state.live == {"c2"}
    assert "c1" not in state.presence and state.typing_users("c1", NOW) == set()
    state.receive(frame("message.new", 9, conversation_id="c1"), NOW)  # on the conv channel, seq 9 is new
    state.closed(1006, "")
    state.opened("tok", NOW)
    state.receive(frame("auth.success", user_id="alice", session_id="s2", resumed=False, conversation_ids=[]),
                  NOW)
    assert state.take()[0][-1] == frame("subscribe", conversation_ids=["c2"], last_seq=9)


def test_denied_and_server_unsubscribed_conversations_are_forgotten() -> None:
    state = open_client("c1")
    state.subscribe(["c2", "c3"])
    state.receive(frame("subscribed", conversation_ids=["c2"], denied=["c3"]), NOW)
    state.receive(frame("unsubscribed", conversation_ids=["c1"], reason="server"), NOW)
    assert list(state.wanted) == ["c2"] and state.live == {"c2"}


def test_pings_every_interval_while_open() -> None:
    state = open_client("c1")
    assert state.deadline() == NOW + 30
    state.tick(NOW + 30)
    assert sent(state) == [{"type": "ping"}]
    assert state.deadline() == NOW + 60


def test_token_refresh_is_due_before_exp_and_goes_over_the_live_connection() -> None:
    state = ClientState(Settings(refresh_before_s=30))
    state.connecting()
    state.opened(jwt(NOW + 8), NOW)  # a short token: refresh at half its life
    state.receive(frame("auth.success", user_id="alice", session_id="s1", resumed=False), NOW)
    state.take()
    assert state.refresh_at == NOW + 4
    assert state.tick(NOW + 3.9) is False
    assert state.tick(NOW + 4) is True and state.refresh_at is None
    state.refresh(jwt(NOW + 3600), NOW + 4)
    state.receive(frame("auth.success", user_id="alice", session_id="s1", resumed=False), NOW + 4)
    frames, _, changes = state.take()
    assert frames == [frame("auth", token=jwt(NOW + 3600))] and changes == []
    assert state.refresh_at == NOW + 3600 - 30


def test_token_expiry_reads_exp_and_tolerates_junk() -> None:
    assert token_expiry(jwt(123.0)) == 123.0
    assert token_expiry(jwt(None)) is None
    assert token_expiry("not a token") is None
    assert token_expiry("a.!!!.c") is None


@pytest.mark.parametrize("attempt, ceiling", [(1, 0.5), (2, 1.0), (4, 4.0), (10, 30.0)])
def test_reconnect_delay_is_full_jitter_under_a_capped_exponential(attempt: int, ceiling: float) -> None:
    assert reconnect_delay_s(attempt, base_s=0.5, cap_s=30, jitter=0.0) == 0.0
    assert reconnect_delay_s(attempt, base_s=0.5, cap_s=30, jitter=0.999) == pytest.approx(ceiling * 0.999)
