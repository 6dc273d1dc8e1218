"""Batched presence: ``presence.diff`` per conversation, the count, large rooms
(CONTRACT §3 v2; the rules of ``core/presence.py``)."""

from __future__ import annotations

from tests.core.support import (
    batch,
    diffs,
    disconnect,
    kinds,
    login,
    of,
    payloads,
    room,
    subscribe,
    take,
    unsubscribe,
    world,
)
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core import frames, presence


def test_transitions_within_one_batch_leave_as_one_diff_encoded_once() -> None:
    """Rule 3: one ``presence.diff`` per batch, one Deliver for every subscriber."""
    w = room("a", "b")
    for user in ("x", "y", "z"):
        login(w, user, user)
        subscribe(w, user, "c1")
    assert take(w, "a") == []  # the batch is still open
    w.now += w.state.limits.presence_batch_ms / 1000.0
    effects = w.submit(c.FlushPresence(w.now))
    delivers = [e for e in of(effects, fx.Deliver) if e.frame_type == "presence.diff"]
    assert len(delivers) == 1 and sorted(delivers[0].conn_ids) == ["a", "b", "x", "y", "z"]
    expected = [{"conversation_id": "c1", "joins": ["x", "y", "z"], "leaves": [], "count": 5}]
    assert diffs(take(w, "a")) == expected
    assert diffs(take(w, "x")) == diffs(take(w, "b")) == [
        {"conversation_id": "c1", "joins": ["x", "y", "z"], "leaves": [], "count": 5}]


def test_a_batch_leaves_only_once_its_interval_has_passed() -> None:
    """At most one diff per conversation per ``presence_batch_ms``."""
    w = room("a")
    login(w, "x", "x")
    subscribe(w, "x", "c1")
    w.flush_presence(0.2)
    assert diffs(take(w, "a")) == []
    w.flush_presence(0.05)
    assert [d["joins"] for d in diffs(take(w, "a"))] == [["x"]]
    login(w, "y", "y")
    subscribe(w, "y", "c1")
    w.flush_presence(0.1)
    assert diffs(take(w, "a")) == []  # a new batch opened with y's join: 250 ms from there
    w.flush_presence(0.15)
    assert [d["joins"] for d in diffs(take(w, "a"))] == [["y"]]


def test_a_user_who_joins_and_leaves_within_one_batch_appears_in_neither_list() -> None:
    w = room("a")
    login(w, "x", "x")
    subscribe(w, "x", "c1")
    login(w, "y", "y")
    subscribe(w, "y", "c1")
    unsubscribe(w, "x", "c1")
    batch(w)
    assert diffs(take(w, "a")) == [{"conversation_id": "c1", "joins": ["y"], "leaves": [], "count": 2}]


def test_a_user_who_leaves_and_comes_back_within_one_batch_appears_in_neither_list() -> None:
    w = room("a", "x")
    unsubscribe(w, "x", "c1")
    subscribe(w, "x", "c1")
    batch(w)
    assert online_lists(diffs(take(w, "a"))) == []


def test_after_a_page_went_out_a_flicker_is_reported_by_its_final_state() -> None:
    """Rule 5: the page showed x online (read from the store mid-batch); x's leave in the same
    batch must reach its reader, so the diff lists it instead of netting it away."""
    w = room("a")
    login(w, "x", "x")
    subscribe(w, "x", "c1")
    w.submit(c.PresenceQuery("a", "c1", None, 10, w.now))
    w.settle()
    assert [p["user_ids"] for p in payloads(take(w, "a"), "presence.state")] == [["a", "x"]]
    unsubscribe(w, "x", "c1")
    batch(w)
    assert diffs(take(w, "a")) == [{"conversation_id": "c1", "joins": [], "leaves": ["x"], "count": 1}]


def test_a_leave_never_overtakes_the_join_before_it() -> None:
    """Rule 3: batches leave in order; the join's batch first, the leave's next."""
    w = room("a")
    login(w, "x", "x")
    subscribe(w, "x", "c1")
    batch(w)
    unsubscribe(w, "x", "c1")  # right after the join's batch left: the next batch
    login(w, "y", "y")
    subscribe(w, "y", "c1")
    unsubscribe(w, "y", "c1")
    batch(w)
    assert online_lists(diffs(take(w, "a"))) == [(["x"], [], 2), ([], ["x"], 1)]


def test_a_diff_skips_closing_connections_and_waits_for_a_reply_in_progress() -> None:
    """Written like any fan-out frame: a subscriber whose replay is being read gets the
    diff once the replay is in, never before its reply."""
    w = room("a", "b")
    w.submit(c.CloseRequested("b", c.CloseCode.GOING_AWAY, "draining", w.now))
    login(w, "x", "x")
    w.submit(c.Subscribe("x", ("c1",), 0, w.now))
    w.settle(slow=False)  # the replay read stays pending
    w.now += w.state.limits.presence_batch_ms / 1000.0
    w.submit(c.FlushPresence(w.now))
    assert kinds(take(w, "x")) == ["subscribed"]
    assert take(w, "b") == []
    assert online_lists(diffs(take(w, "a"))) == [(["x"], [], 3)]
    w.settle()
    assert sorted(kinds(take(w, "x"))) == ["presence.diff", "replay.done"]


def test_a_subscribers_own_join_is_in_the_diff() -> None:
    w = room("a")
    login(w, "b", "b")
    subscribe(w, "b", "c1")
    batch(w)
    assert online_lists(diffs(take(w, "b"))) == [(["b"], [], 2)]


def test_a_new_room_learns_its_count_before_any_diff() -> None:
    """Rule 2: the count is asked for when the channel goes live; diffs wait for it."""
    w = world()
    login(w, "a", "a")
    w.submit(c.Subscribe("a", ("c1",), None, w.now))
    w.loop.clear()  # the broker's ChannelReady, answered by hand below
    w.live.add("conv:c1")
    effects = w.submit(c.ChannelReady("conv:c1", w.now))
    assert of(effects, fx.AnnouncePresence) == [fx.AnnouncePresence("c1", 0)]
    w.serial.clear()  # the store never answers
    w.flush_presence(0.9)
    assert diffs(take(w, "a")) == []
    assert not w.state.rooms["c1"].known
    w.flush_presence(0.1)  # asked again once RETRY_S has passed, answered this time
    assert w.state.rooms["c1"].known
    batch(w)
    assert diffs(take(w, "a")) == [{"conversation_id": "c1", "joins": [], "leaves": [], "count": 0}]


def test_the_count_is_learnt_again_after_a_broker_outage() -> None:
    """Rule 2: transitions lost during an outage are corrected by the count read after it."""
    w = room("a")
    login(w, "x", "x")
    w.set_broker(False)
    subscribe(w, "x", "c1")  # x's join is announced while the broker is down: lost
    w.settle()
    w.set_broker(True)
    w.settle()
    batch(w)
    assert [d["count"] for d in diffs(take(w, "a"))][-1] == 2


def test_a_batch_open_when_the_broker_comes_back_still_leaves() -> None:
    w = room("a", "y")
    login(w, "x", "x")
    subscribe(w, "x", "c1")  # x in and y out are in the open batch: the count stays 2
    unsubscribe(w, "y", "c1")
    w.set_broker(False)
    w.set_broker(True)  # the count is asked for again: still 2
    w.settle()
    batch(w)
    assert online_lists(diffs(take(w, "a"))) == [(["x"], ["y"], 2)]


def test_transitions_of_conversations_not_served_here_or_malformed_are_ignored() -> None:
    w = room("a")
    frame = frames.presence_transition("c9", ["x"], [], 1)
    assert w.submit(c.BrokerMessage("conv:c9", frames.encode(frame), frame, w.now)) == []
    for payload in ({"conversation_id": "c1", "joins": "x", "count": 1}, "c1",
                    {"conversation_id": "c1", "joins": [], "leaves": [], "count": True},
                    {"conversation_id": "c1", "joins": [], "leaves": [], "count": 1, "users": "x"}):
        bad = {"type": "presence.transition", "payload": payload}
        assert w.submit(c.BrokerMessage("conv:c1", frames.encode(bad), bad, w.now)) == []
    batch(w)
    assert take(w, "a") == []


def test_large_room_diffs_carry_the_count_only_at_most_once_per_interval() -> None:
    """Rule 4: the crossing diff lists its users, then counts only, when changed, per interval."""
    w = room("a", "b", presence_list_max=2, presence_count_interval_s=10.0)
    login(w, "x", "x")
    subscribe(w, "x", "c1")
    batch(w)
    assert online_lists(diffs(take(w, "a"))) == [(["x"], [], 3)]  # the crossing diff
    login(w, "y", "y")
    subscribe(w, "y", "c1")
    w.flush_presence(5.0)
    assert diffs(take(w, "a")) == []  # changed, but within the interval
    w.flush_presence(5.0)
    assert diffs(take(w, "a")) == [{"conversation_id": "c1", "joins": [], "leaves": [], "count": 4}]
    login(w, "z", "z")
    subscribe(w, "z", "c1")
    unsubscribe(w, "z", "c1")
    w.flush_presence(10.0)
    assert diffs(take(w, "a")) == []  # the count did not change


def test_a_large_room_that_shrinks_hands_out_the_whole_list_then_diffs_again() -> None:
    """Rule 4: back at or under the limit, one ``presence.state`` with every user, then lists."""
    w = room("a", "b", "x", presence_list_max=2, presence_count_interval_s=10.0)
    assert online_lists(diffs(take(w, "a"))) == []
    unsubscribe(w, "x", "c1")
    w.flush_presence(10.0)
    frames_a = take(w, "a")
    assert kinds(frames_a) == ["presence.state"]
    assert payloads(frames_a, "presence.state") == [
        {"conversation_id": "c1", "user_ids": ["a", "b"], "count": 2, "next": None}]
    unsubscribe(w, "b", "c1")
    batch(w)
    assert online_lists(diffs(take(w, "a"))) == [([], ["b"], 1)]


def test_typing_in_a_large_room_is_accepted_but_neither_stored_nor_fanned_out() -> None:
    w = room("a", "b", "x", presence_list_max=2)
    effects = w.submit(c.Typing("a", "c1", w.now))
    assert of(effects, fx.StartTyping) == [] and of(effects, fx.SendFrame) == []
    w.settle()
    assert take(w, "b") == [] and w.typists("c1") == set()


def test_the_leave_function_takes_one_connection_out_of_presence() -> None:
    """``presence.leave`` is what a revoked membership calls (CONTRACT §3 ``membership.removed``)."""
    w = room("a", "b")
    out: list[fx.Effect] = []
    presence.leave(w.state, w.state.connections["b"], "c1", w.now, out)
    assert out == [fx.LeavePresence("c1", "b", "s-b", w.now)]
    w.perform(out)
    w.settle()
    batch(w)
    assert online_lists(diffs(take(w, "a"))) == [([], ["b"], 1)]


def test_a_disconnected_users_leave_comes_after_the_grace_period() -> None:
    w = room("a", "b", presence_grace_s=3.0)
    disconnect(w, "b")
    w.advance(2.0)
    assert diffs(take(w, "a")) == []
    w.advance(2.0)
    batch(w)
    assert online_lists(diffs(take(w, "a"))) == [([], ["b"], 1)]


def online_lists(payloads_: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    """(joins, leaves, count) of each diff that changed a list."""
    return [(p["joins"], p["leaves"], p["count"]) for p in payloads_ if p["joins"] or p["leaves"]]
