"""``subscribe``, ``unsubscribe``, presence and the per-connection command queue (CONTRACT §3)."""

from __future__ import annotations

from tests.core.support import (
    batch,
    closes,
    connect,
    diffs,
    disconnect,
    error_codes,
    kinds,
    login,
    of,
    online_updates,
    payloads,
    room,
    saved,
    sent,
    subscribe,
    take,
    unsubscribe,
    world,
)
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.records import PresencePage
from tornado_gw.core.state import Phase


def test_subscribe_replies_only_after_the_channel_is_live() -> None:
    w = world()
    login(w, "a", "u1")
    effects = w.submit(c.Subscribe("a", ("c1", "c2"), None, w.now))
    assert {e.channel for e in of(effects, fx.SubscribeChannel)} == {"conv:c1", "conv:c2"}
    assert sent(effects, "a", "subscribed") == []
    # One of two: still waiting; the conversation's count is asked for first.
    assert w.submit(c.ChannelReady("conv:c1", w.now)) == [fx.AnnouncePresence("c1", 0)]
    effects = w.submit(c.ChannelReady("conv:c2", w.now))
    assert of(effects, fx.AnnouncePresence) == [fx.AnnouncePresence("c2", 0)]
    assert sent(effects, "a", "subscribed") == [{"conversation_ids": ["c1", "c2"], "denied": []}]
    assert [(j.conversation_id, j.user_id, j.session_id) for j in of(effects, fx.JoinPresence)] == [
        ("c1", "u1", "s-a"), ("c2", "u1", "s-a")]
    assert [snapshot.conversation_ids for snapshot, _ in saved(effects)] == [("c1", "c2")]


def test_subscribe_to_a_live_channel_replies_at_once() -> None:
    w = world()
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    login(w, "b", "u2")
    effects = w.submit(c.Subscribe("b", ("c1",), None, w.now))
    assert of(effects, fx.SubscribeChannel) == []
    assert sent(effects, "b", "subscribed") == [{"conversation_ids": ["c1"], "denied": []}]
    assert w.state.subscribers["conv:c1"] == {"a", "b"}


def test_subscribe_lists_denied_conversations() -> None:
    w = world(check_membership=True, members={"u1": {"c1"}})
    login(w, "a", "u1")
    effects = w.submit(c.Subscribe("a", ("c1", "c2"), None, w.now))
    assert of(effects, fx.CheckMembership) == [fx.CheckMembership("a", "u1", ("c1", "c2"))]
    assert of(effects, fx.SubscribeChannel) == []
    w.settle()
    assert [f["payload"] for f in take(w, "a") if f["type"] == "subscribed"] == [
        {"conversation_ids": ["c1"], "denied": ["c2"]}]
    assert w.state.connections["a"].conversations == {"c1"}
    assert "conv:c2" not in w.state.subscribers


def test_subscribe_all_denied_replies_without_subscribing() -> None:
    w = world(check_membership=True, members={})
    login(w, "a", "u1")
    w.submit(c.Subscribe("a", ("c1",), None, w.now))
    effects = w.submit(c.MembershipChecked("a", frozenset(), w.now))
    assert sent(effects, "a", "subscribed") == [{"conversation_ids": [], "denied": ["c1"]}]
    assert of(effects, fx.SubscribeChannel) == [] and of(effects, fx.JoinPresence) == []
    assert w.state.connections["a"].op is None


def test_subscribe_again_needs_no_membership_check() -> None:
    w = world(check_membership=True, members={"u1": {"c1"}})
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    effects = w.submit(c.Subscribe("a", ("c1",), None, w.now))
    assert of(effects, fx.CheckMembership) == []
    assert sent(effects, "a", "subscribed") == [{"conversation_ids": ["c1"], "denied": []}]
    assert of(effects, fx.JoinPresence) == []  # nothing new joined


def test_subscribe_stray_membership_result_is_ignored() -> None:
    w = world(check_membership=True, members={"u1": {"c1"}})
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    assert w.submit(c.MembershipChecked("a", frozenset({"c9"}), w.now)) == []
    assert w.submit(c.MembershipChecked("ghost", frozenset({"c9"}), w.now)) == []
    assert w.state.connections["a"].conversations == {"c1"}


def test_subscribe_over_the_limit_is_refused_and_changes_nothing() -> None:
    w = world(max_subscriptions=2)
    login(w, "a", "u1")
    effects = w.submit(c.Subscribe("a", ("c1", "c2", "c3"), None, w.now))
    assert error_codes(effects, "a") == [("too_many_subscriptions", "subscribe")]
    assert of(effects, fx.SubscribeChannel) == [] and w.state.connections["a"].conversations == set()
    take(w, "a")
    assert kinds(subscribe(w, "a", "c1", "c2"))[0] == "subscribed"
    assert kinds(subscribe(w, "a", "c2", "c1")) == ["subscribed"]  # nothing new: within the limit
    assert error_codes(w.submit(c.Subscribe("a", ("c3",), None, w.now)), "a") == [
        ("too_many_subscriptions", "subscribe")]
    assert w.state.connections["a"].conversations == {"c1", "c2"}


def test_subscribe_queues_later_commands_and_runs_them_in_order() -> None:
    """State rule 4: one slow operation at a time; what arrives meanwhile waits, in order."""
    w = world()
    login(w, "a", "u1")
    w.submit(c.Subscribe("a", ("c1",), None, w.now))
    assert w.submit(c.Typing("a", "c1", w.now)) == []  # would be forbidden if run now
    assert w.submit(c.Subscribe("a", ("c2",), None, w.now)) == []
    assert w.submit(c.Unsubscribe("a", ("c1",), w.now)) == []
    assert sent(w.submit(c.Ping("a", w.now)), "a", "pong") == [{}]  # pings are not queued
    take(w, "a")

    effects = w.submit(c.ChannelReady("conv:c1", w.now))
    assert kinds(e.frame for e in of(effects, fx.SendFrame)) == ["subscribed"]
    assert of(effects, fx.StartTyping) == [fx.StartTyping("c1", "u1", w.now + w.state.limits.typing_ttl_s)]
    assert w.state.connections["a"].queued == [c.Unsubscribe("a", ("c1",), w.now)]
    w.settle()
    replies = take(w, "a")
    assert [(f["type"], f["payload"].get("conversation_ids")) for f in replies
            if f["type"] in ("subscribed", "unsubscribed")] == [
        ("subscribed", ["c1"]), ("subscribed", ["c2"]), ("unsubscribed", ["c1"])]
    assert w.state.connections["a"].conversations == {"c2"}


def test_subscribe_queued_commands_are_dropped_when_the_connection_closes() -> None:
    w = world()
    login(w, "a", "u1")
    w.submit(c.Subscribe("a", ("c1",), None, w.now))
    w.submit(c.Subscribe("a", ("c2",), None, w.now))
    w.submit(c.CloseRequested("a", c.CloseCode.GOING_AWAY, "draining", w.now))
    effects = w.submit(c.ChannelReady("conv:c1", w.now))
    assert of(effects, fx.SubscribeChannel) == []
    assert "conv:c2" not in w.state.subscribers


def test_subscribe_ready_for_an_abandoned_channel_is_ignored() -> None:
    w = world()
    assert w.submit(c.ChannelReady("conv:nobody", w.now)) == []
    assert w.state.ready == set()


def test_unsubscribe_leaves_presence_and_the_channel() -> None:
    w = world()
    login(w, "a", "u1")
    subscribe(w, "a", "c1", "c2")
    effects = w.submit(c.Unsubscribe("a", ("c1", "c9"), w.now))
    assert sent(effects, "a", "unsubscribed") == [{"conversation_ids": ["c1", "c9"]}]
    assert of(effects, fx.UnsubscribeChannel) == [fx.UnsubscribeChannel("conv:c1")]
    assert of(effects, fx.LeavePresence) == [fx.LeavePresence("c1", "u1", "s-a", w.now)]
    assert [snapshot.conversation_ids for snapshot, _ in saved(effects)] == [("c2",)]
    assert "conv:c1" not in w.state.subscribers and "conv:c1" not in w.state.ready


def test_unsubscribe_keeps_the_channel_for_other_connections() -> None:
    w = room("a", "b")
    effects = w.submit(c.Unsubscribe("a", ("c1",), w.now))
    assert of(effects, fx.UnsubscribeChannel) == []
    assert w.state.subscribers["conv:c1"] == {"b"}


def test_presence_online_when_the_first_session_subscribes_offline_when_the_last_leaves() -> None:
    w = world()
    login(w, "a", "u1")
    login(w, "b", "u2")
    subscribe(w, "b", "c1")
    batch(w)
    assert diffs(take(w, "b")) == [{"conversation_id": "c1", "joins": ["u2"], "leaves": [], "count": 1}]
    subscribe(w, "a", "c1")
    batch(w)
    assert diffs(take(w, "b")) == [{"conversation_id": "c1", "joins": ["u1"], "leaves": [], "count": 2}]
    login(w, "a2", "u1")
    subscribe(w, "a2", "c1")  # a second session of u1: no new announcement
    unsubscribe(w, "a", "c1")
    batch(w)
    assert online_updates(take(w, "b")) == []
    unsubscribe(w, "a2", "c1")
    batch(w)
    assert diffs(take(w, "b")) == [{"conversation_id": "c1", "joins": [], "leaves": ["u1"], "count": 1}]


def test_presence_query_pages_through_who_is_online() -> None:
    """CONTRACT §3: sorted by id, at most ``limit``, ``next`` until no user follows."""
    w = room("d", "a", "c", "b")
    effects = w.submit(c.PresenceQuery("a", "c1", None, 3, w.now))
    assert of(effects, fx.QueryPresence) == [fx.QueryPresence("a", "c1", None, 3)]
    w.settle()
    assert payloads(take(w, "a"), "presence.state") == [
        {"conversation_id": "c1", "user_ids": ["a", "b", "c"], "count": 4, "next": "c"}]
    w.submit(c.PresenceQuery("a", "c1", "c", 3, w.now))
    w.settle()
    assert payloads(take(w, "a"), "presence.state") == [
        {"conversation_id": "c1", "user_ids": ["d"], "count": 4, "next": None}]


def test_presence_query_unavailable_store_is_an_error() -> None:
    w = room("a")
    w.submit(c.EffectFailed(fx.QueryPresence("a", "c1", None, 10), "no answer within 4 s", w.now))
    assert [(p["code"], p["ref_type"]) for p in payloads(take(w, "a"), "error")] == [
        ("unavailable", "presence.query")]


def test_presence_query_needs_a_subscription() -> None:
    w = world()
    login(w, "a", "u1")
    query = c.PresenceQuery("a", "c1", None, 500, w.now)
    assert error_codes(w.submit(query), "a") == [("forbidden", "presence.query")]


def test_presence_answer_for_a_closing_or_gone_connection_is_dropped() -> None:
    w = world()
    login(w, "a", "u1")
    w.submit(c.CloseRequested("a", c.CloseCode.SLOW_CONSUMER, "slow consumer", w.now))
    page = PresencePage(("u1",), 1)
    assert w.submit(c.PresencePageLoaded("a", "c1", 10, page, w.now)) == []
    assert w.submit(c.PresencePageLoaded("ghost", "c1", 10, page, w.now)) == []


def test_presence_leaves_at_once_when_a_resumed_session_unsubscribes() -> None:
    """CONTRACT §3: offline at once on unsubscribe; the resumed session ended the grace period."""
    w = room("b", "a")
    disconnect(w, "a")
    login(w, "a2", "a", session_id="s-a")  # resumed: c1 comes back, no flap
    batch(w)
    assert online_updates(take(w, "b")) == []
    unsubscribe(w, "a2", "c1")
    batch(w)
    assert online_updates(take(w, "b")) == [("c1", "a", "offline")]


def test_resuming_a_session_whose_connection_is_still_open_keeps_that_connection_online() -> None:
    """A client resuming over a half-open connection: the old one is still subscribed here,
    so its presence stays when the new connection unsubscribes."""
    w = room("b", "a")
    login(w, "a2", "a", session_id="s-a")  # "a" is still open and in c1
    unsubscribe(w, "a2", "c1")
    batch(w)
    assert online_updates(take(w, "b")) == []
    assert w.online("c1") == ["a", "b"]
    disconnect(w, "a")
    w.advance(w.state.limits.presence_grace_s + 1)
    batch(w)
    assert online_updates(take(w, "b")) == [("c1", "a", "offline")]


def test_close_requested_closes_once_and_silences_the_connection() -> None:
    w = world()
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    effects = w.submit(c.CloseRequested("a", c.CloseCode.GOING_AWAY, "server shutting down", w.now))
    assert effects == [fx.CloseConnection("a", c.CloseCode.GOING_AWAY, "server shutting down")]
    assert w.state.connections["a"].phase is Phase.CLOSING
    assert w.submit(c.CloseRequested("a", c.CloseCode.SLOW_CONSUMER, "again", w.now)) == []
    assert w.submit(c.CloseRequested("ghost", c.CloseCode.GOING_AWAY, "x", w.now)) == []
    assert w.submit(c.Subscribe("a", ("c2",), None, w.now)) == []


def test_disconnect_cleans_up_subscribers_and_channels() -> None:
    w = world(presence_grace_s=15.0)
    login(w, "a", "u1")
    login(w, "b", "u2")
    subscribe(w, "a", "c1", "c2")
    subscribe(w, "b", "c2")
    effects = w.submit(c.Disconnect("a", w.now))
    assert {e.channel for e in of(effects, fx.UnsubscribeChannel)} == {"conv:c1", "user:u1"}
    assert w.state.subscribers == {"conv:c2": {"b"}, "user:u2": {"b"}}
    assert "a" not in w.state.connections
    assert of(effects, fx.RefreshPresence) == [
        fx.RefreshPresence((("c1", "u1", "s-a"), ("c2", "u1", "s-a")), w.now + 15.0)]
    assert [snapshot.conversation_ids for snapshot, _ in saved(effects)] == [("c1", "c2")]
    assert w.submit(c.Disconnect("a", w.now)) == []


def test_disconnect_before_auth_saves_nothing() -> None:
    w = world()
    connect(w, "a")
    assert w.submit(c.Disconnect("a", w.now)) == []
    assert w.state.connections == {}


def test_disconnect_announces_offline_after_the_grace_period() -> None:
    """CONTRACT §3: ``presence_grace_s`` after a disconnect unless the session resumes."""
    w = room("b", "a", presence_grace_s=15.0, presence_ttl_s=90.0)
    disconnect(w, "a")
    w.advance(14.0)
    batch(w)
    assert online_updates(take(w, "b")) == []
    w.advance(2.0)
    batch(w)
    assert online_updates(take(w, "b")) == [("c1", "a", "offline")]
    assert w.online("c1") == ["b"]


def test_disconnect_then_quick_resume_does_not_flap() -> None:
    w = room("b", "a", presence_grace_s=15.0)
    disconnect(w, "a")
    w.advance(5.0)
    login(w, "a2", "a", session_id="s-a")
    w.advance(20.0)
    batch(w)
    assert online_updates(take(w, "b")) == []
    assert w.online("c1") == ["a", "b"]


def test_disconnect_while_subscribing_unsubscribes_the_new_channel() -> None:
    w = world()
    login(w, "a", "u1")
    w.submit(c.Subscribe("a", ("c1",), None, w.now))
    effects = w.submit(c.Disconnect("a", w.now))
    assert {e.channel for e in of(effects, fx.UnsubscribeChannel)} == {"conv:c1", "user:u1"}
    assert w.submit(c.ChannelReady("conv:c1", w.now)) == []
    assert closes(effects) == {}
