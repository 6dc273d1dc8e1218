"""Broker frames to connections, and typing (CONTRACT §3, §4; STYLE §4 fan-out)."""

from __future__ import annotations

from tests.core.support import (
    batch,
    broker,
    disconnect,
    error_codes,
    kinds,
    login,
    message,
    of,
    online_updates,
    room,
    seqs,
    subscribe,
    take,
    unsubscribe,
    world,
)
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.protocol import CloseCode


def test_fanout_delivers_each_event_once_to_all_targets() -> None:
    w = room("a", "b", "c")
    cmd = message("c1", "a", seq=1)
    effects = w.submit(cmd)
    assert len(effects) == 1
    deliver = effects[0]
    assert isinstance(deliver, fx.Deliver)
    assert sorted(deliver.conn_ids) == ["a", "b", "c"]
    assert deliver.data is cmd.data  # forwarded as it came: encoded once, not per recipient
    assert deliver.frame_type == "message.new"


def test_fanout_ignores_frames_that_are_not_objects_and_channels_nobody_wants() -> None:
    w = room("a")
    assert w.submit(c.BrokerMessage("conv:c1", b"[1]", None, w.now)) == []
    assert w.submit(message("elsewhere", "a", seq=1)) == []


def test_fanout_forwards_unnumbered_frames_every_time() -> None:
    w = room("a")
    cmd = broker("conv:c1", "custom.thing", {"x": 1})
    assert of(w.submit(cmd), fx.Deliver) == of(w.submit(cmd), fx.Deliver) != []


def test_fanout_drops_repeated_and_older_seqs_per_channel() -> None:
    w = room("a")
    subscribe(w, "a", "c2")
    delivered = [w.submit(message(cid, "x", seq=seq)) != [] for cid, seq in
                 [("c1", 5), ("c1", 5), ("c1", 4), ("c1", 6), ("c2", 3), ("c2", 3)]]
    assert delivered == [True, False, False, True, True, False]


def test_fanout_never_repeats_a_seq_after_unsubscribing_and_subscribing_again() -> None:
    """CONTRACT §4: per channel no duplicates, also when the relay retries an old event."""
    w = room("a")
    w.submit(message("c1", "x", seq=1))
    unsubscribe(w, "a", "c1")
    subscribe(w, "a", "c1")
    assert of(w.submit(message("c1", "x", seq=1)), fx.Deliver) == []


def test_fanout_treats_a_boolean_or_text_seq_as_no_seq() -> None:
    w = room("a")
    w.submit(message("c1", "x", seq=5))
    assert of(w.submit(broker("conv:c1", "message.new", {}, seq=True)), fx.Deliver) != []
    assert of(w.submit(broker("conv:c1", "message.new", {}, seq="9")), fx.Deliver) != []
    assert w.state.high_seq == 5
    assert [d.frame_type for d in of(w.submit(broker("conv:c1", 7, {})), fx.Deliver)] == [""]


def test_fanout_skips_closing_connections() -> None:
    w = room("a", "b")
    w.submit(c.CloseRequested("b", CloseCode.SLOW_CONSUMER, "slow consumer", w.now))
    assert [list(d.conn_ids) for d in of(w.submit(message("c1", "a", seq=1)), fx.Deliver)] == [["a"]]
    w.submit(c.CloseRequested("a", CloseCode.GOING_AWAY, "bye", w.now))
    assert w.submit(message("c1", "a", seq=2)) == []


def test_fanout_holds_frames_of_a_channel_being_subscribed_and_releases_them_after_the_reply() -> None:
    w = room("a")
    w.submit(c.Subscribe("a", ("c1", "c2"), None, w.now))  # c1 live, c2 not yet
    assert w.submit(message("c1", "x", seq=2)) == []
    assert w.submit(message("c1", "x", seq=1)) == []
    assert w.submit(broker("conv:c1", "custom", {})) == []
    w.submit(message("c1", "x", seq=2))  # a relay retry while held
    w.settle()
    batch(w)
    frames = take(w, "a")
    assert kinds(frames) == ["subscribed", "message.new", "message.new", "custom", "presence.diff"]
    assert seqs(frames) == [1, 2]
    assert of(w.submit(message("c1", "x", seq=2)), fx.Deliver) == []


def test_fanout_does_not_hold_other_channels_during_an_operation() -> None:
    w = room("a")
    w.submit(c.Subscribe("a", ("c2",), None, w.now))
    assert [list(d.conn_ids) for d in of(w.submit(message("c1", "x", seq=1)), fx.Deliver)] == [["a"]]


def test_fanout_user_channel_reaches_every_session_of_the_user() -> None:
    w = world()
    login(w, "a", "u1")
    login(w, "a2", "u1")
    login(w, "b", "u2")
    effects = w.submit(broker("user:u1", "notification", {"n": 1}, seq=1))
    assert sorted(of(effects, fx.Deliver)[0].conn_ids) == ["a", "a2"]


def test_typing_needs_a_subscription() -> None:
    w = room("a")
    assert error_codes(w.submit(c.Typing("a", "c2", w.now)), "a") == [("forbidden", "typing")]
    assert of(w.submit(c.Typing("a", "c1", w.now)), fx.StartTyping) == [
        fx.StartTyping("c1", "a", w.now + w.state.limits.typing_ttl_s)]


def test_typing_start_reaches_others_but_never_the_typists_own_sessions() -> None:
    w = room("a", "b")
    login(w, "a2", "a")
    subscribe(w, "a2", "c1")
    take(w, "a")
    take(w, "b")
    w.submit(c.Typing("a", "c1", w.now))
    w.settle()
    assert take(w, "b") == [{"type": "typing.start", "payload": {"conversation_id": "c1", "user_id": "a"}}]
    assert take(w, "a") == [] and take(w, "a2") == []


def test_typing_repeats_within_the_window_only_refresh() -> None:
    w = room("a", "b")
    w.submit(c.Typing("a", "c1", w.now))
    w.settle()
    w.now += 5
    w.submit(c.Typing("a", "c1", w.now))
    w.settle()
    assert kinds(take(w, "b")) == ["typing.start"]


def test_typing_stops_when_the_typist_sends_a_message() -> None:
    w = room("a", "b")
    w.submit(c.Typing("a", "c1", w.now))
    w.settle()
    assert of(w.submit(message("c1", "b", seq=1)), fx.StopTyping) == []
    effects = w.submit(message("c1", "a", seq=2))
    assert of(effects, fx.StopTyping) == [fx.StopTyping("c1", "a")]
    assert sorted(of(effects, fx.Deliver)[0].conn_ids) == ["a", "b"]  # the message reaches its sender
    w.settle()
    assert kinds(take(w, "b")) == ["typing.start", "message.new", "message.new", "typing.stop"]
    assert "c1" not in w.state.typing


def test_typing_stops_after_the_typing_window() -> None:
    w = room("a", "b")
    w.submit(c.Typing("a", "c1", w.now))
    w.settle()
    take(w, "b")
    w.advance(w.state.limits.typing_ttl_s - 1)
    assert take(w, "b") == []
    w.advance(1.0)
    assert kinds(take(w, "b")) == ["typing.stop"]


def test_typing_stops_when_the_typists_last_session_unsubscribes() -> None:
    w = room("a", "b")
    login(w, "a2", "a")
    subscribe(w, "a2", "c1")
    w.submit(c.Typing("a", "c1", w.now))
    w.settle()
    take(w, "b")
    unsubscribe(w, "a2", "c1")
    assert kinds(take(w, "b")) == []
    unsubscribe(w, "a", "c1")
    assert kinds(take(w, "b")) == ["typing.stop"]
    batch(w)
    assert online_updates(take(w, "b")) == [("c1", "a", "offline")]


def test_typing_stops_when_the_typist_disconnects() -> None:
    w = room("a", "b")
    w.submit(c.Typing("a", "c1", w.now))
    w.settle()
    take(w, "b")
    effects = w.submit(c.Disconnect("a", w.now))
    assert of(effects, fx.StopTyping) == [fx.StopTyping("c1", "a")]
    w.settle()
    assert kinds(take(w, "b")) == ["typing.stop"]


def test_typing_stops_when_the_typist_leaves_before_the_broker_echoes_the_start() -> None:
    """CONTRACT §3: ``typing.stop`` at once on the last disconnect, however fast it follows."""
    w = room("a", "b")
    w.submit(c.Typing("a", "c1", w.now))
    w.answer_stores()  # typing.start is stored and published; the broker has not echoed it yet
    w.submit(c.Disconnect("a", w.now))
    w.settle()
    assert w.typists("c1") == set()
    assert [f["type"] for f in take(w, "b") if f["type"].startswith("typing.")] == ["typing.start",
                                                                                    "typing.stop"]


def test_typing_of_someone_elsewhere_does_not_stop_on_local_leave() -> None:
    w = room("a", "b")
    w.submit(broker("conv:c1", "typing.start", {"conversation_id": "c1", "user_id": "remote"}))
    assert w.state.typing == {"c1": {"remote"}}
    disconnect(w, "a")
    assert of(w.submit(c.Unsubscribe("b", ("c1",), w.now)), fx.StopTyping) == []


def test_typing_frames_with_odd_payloads_are_forwarded_untracked() -> None:
    w = room("a")
    for payload in [{"user_id": 5}, {"conversation_id": "c1"}]:
        assert of(w.submit(broker("conv:c1", "typing.start", payload)), fx.Deliver) != []
    w.submit(broker("conv:c1", "typing.start", "a"))
    w.submit(broker("user:a", "typing.start", {"user_id": "a"}))
    w.submit(broker("conv:c1", "message.new", {"message": "text"}))
    w.submit(broker("conv:c1", "message.new", {"message": {"sender_id": 3}}))
    assert w.state.typing == {}
    assert kinds(take(w, "a")) == ["typing.start", "typing.start", "typing.start", "typing.start",
                                   "message.new", "message.new"]


def test_typing_stop_from_the_broker_clears_the_local_view() -> None:
    w = room("a")
    for user in ("x", "y"):
        w.submit(broker("conv:c1", "typing.start", {"conversation_id": "c1", "user_id": user}))
    w.submit(broker("conv:c1", "typing.stop", {"conversation_id": "c1", "user_id": "x"}))
    assert w.state.typing == {"c1": {"y"}}
    w.submit(broker("conv:c1", "typing.stop", {"conversation_id": "c1", "user_id": "y"}))
    assert w.state.typing == {}
    assert kinds(take(w, "a")) == ["typing.start"] * 2 + ["typing.stop"] * 2


def test_typists_of_a_conversation_nobody_here_watches_are_forgotten() -> None:
    """No ``typing.stop`` can arrive once the channel is unsubscribed (issue 9 §7)."""
    w = room("a", "b")
    w.submit(broker("conv:c1", "typing.start", {"conversation_id": "c1", "user_id": "remote"}))
    unsubscribe(w, "a", "c1")
    assert w.state.typing == {"c1": {"remote"}}  # b still watches
    disconnect(w, "b")
    assert w.state.typing == {}


def test_a_connection_keeps_delivered_seqs_of_its_current_channels_only() -> None:
    w = room("a")
    for n, cid in enumerate(["c2", "c3", "c4"], 1):
        subscribe(w, "a", cid)
        w.submit(message(cid, "x", seq=n))
        unsubscribe(w, "a", cid)
    assert set(w.state.connections["a"].delivered) <= {"conv:c1", "user:a"}
    subscribe(w, "a", "c5")
    assert of(w.submit(message("c5", "x", seq=3)), fx.Deliver) == []  # published before: dropped
    assert of(w.submit(message("c5", "x", seq=4)), fx.Deliver) != []
