"""Timers driven by ``Tick``, the inbound rate limit and broker outages (CONTRACT §1, §3, §6)."""

from __future__ import annotations

from tests.core.support import (
    broker,
    closes,
    connect,
    error_codes,
    kinds,
    login,
    lose,
    message,
    numbered,
    of,
    room,
    saved,
    sent,
    seqs,
    subscribe,
    take,
    world,
)
from tests.core.world import World
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.protocol import CloseCode
from tornado_gw.core.records import SessionSnapshot


def test_tick_closes_4002_without_auth_in_time() -> None:
    w = world(auth_timeout_s=10.0)
    connect(w, "a")
    assert closes(w.submit(c.Tick(w.now + 9.9))) == {}
    effects = w.submit(c.Tick(w.now + 10.0))
    assert of(effects, fx.CloseConnection) == [fx.CloseConnection("a", CloseCode.AUTH_TIMEOUT,
                                                                  "no successful auth in time")]
    assert closes(w.submit(c.Tick(w.now + 11.0))) == {}  # closing: not closed twice


def test_tick_closes_4004_after_idle_time_and_frames_reset_it() -> None:
    w = world(idle_timeout_s=60.0)
    login(w, "a", "u1")
    w.now += 50.0
    w.submit(c.Ping("a", w.now))
    assert closes(w.submit(c.Tick(w.now + 59.0))) == {}
    assert closes(w.submit(c.Tick(w.now + 60.0))) == {"a": 4004}


def test_tick_closes_4003_when_the_token_expires() -> None:
    w = world(idle_timeout_s=1000.0)
    login(w, "a", "u1", expires_at=w.now + 30.0)
    login(w, "b", "u2", expires_at=None)
    assert closes(w.submit(c.Tick(w.now + 29.0))) == {}
    assert closes(w.submit(c.Tick(w.now + 30.0))) == {"a": 4003}
    assert closes(w.submit(c.Tick(w.now + 999.0))) == {}


def test_tick_closes_each_expired_connection_with_its_own_code() -> None:
    w = world(auth_timeout_s=10.0, idle_timeout_s=20.0)
    login(w, "idle", "u1")
    login(w, "expired", "u2", expires_at=w.now + 5.0)
    connect(w, "anonymous")
    login(w, "fresh", "u3")
    w.now += 15.0
    w.submit(c.Ping("fresh", w.now))
    w.submit(c.Ping("idle", w.now - 15.0))
    assert closes(w.submit(c.Tick(w.now + 5.0))) == {"idle": 4004, "expired": 4003, "anonymous": 4002}


def test_tick_sweeps_stale_presence_and_typing_every_time() -> None:
    w = world()
    for at in (1.0, 1.5, 2.0):
        assert of(w.submit(c.Tick(w.now + at)), fx.ExpireStale) == [fx.ExpireStale(w.now + at)]


def test_tick_refreshes_live_presence_and_sessions_every_third_of_the_ttl() -> None:
    w = world(presence_ttl_s=30.0, resume_window_s=120.0, idle_timeout_s=1000.0)
    login(w, "a", "u1")
    subscribe(w, "a", "c2", "c1")
    login(w, "quiet", "u3")
    login(w, "busy", "u2")
    w.submit(c.Subscribe("busy", ("c3",), None, w.now))  # still waiting for its channel
    connect(w, "anonymous")
    at = w.now + 1.0
    effects = w.submit(c.Tick(at))
    assert of(effects, fx.RejoinPresence) == [
        fx.RejoinPresence((("c1", "u1", "s-a"), ("c2", "u1", "s-a")), at + 30.0)]
    assert sorted(saved(effects), key=repr) == [
        (SessionSnapshot("s-a", "u1", ("c1", "c2"), "s-a"), 150.0),
        (SessionSnapshot("s-quiet", "u3", (), "s-quiet"), 150.0)]
    assert of(w.submit(c.Tick(at + 9.0)), fx.RejoinPresence) == []
    assert len(of(w.submit(c.Tick(at + 10.0)), fx.RejoinPresence)) == 1


def test_tick_refresh_without_subscriptions_saves_sessions_only() -> None:
    w = world()
    login(w, "a", "u1")
    effects = w.submit(c.Tick(w.now + 1.0))
    assert of(effects, fx.RejoinPresence) == [] and len(saved(effects)) == 1


def test_tick_keeps_a_live_user_online_past_the_presence_ttl() -> None:
    w = world(presence_ttl_s=30.0, idle_timeout_s=1000.0)
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    for _ in range(20):
        w.advance(5.0)
    assert w.online("c1") == ["u1"]


def test_rate_limit_warns_once_then_closes_4008() -> None:
    w = world(rate_limit_burst=3, rate_limit_per_s=1.0)
    connect(w, "a")
    for _ in range(3):
        assert sent(w.submit(c.Ping("a", w.now)), "a", "pong") == [{}]
    effects = w.submit(c.Ping("a", w.now))
    assert error_codes(effects, "a") == [("rate_limited", None)] and sent(effects, "a", "pong") == []
    assert w.submit(c.Ping("a", w.now + 0.5)) == [
        fx.CloseConnection("a", CloseCode.RATE_LIMITED, "inbound rate limit exceeded")]
    assert w.submit(c.Ping("a", w.now + 10.0)) == []


def test_rate_limit_refills_over_time() -> None:
    w = world(rate_limit_burst=2, rate_limit_per_s=2.0)
    connect(w, "a")
    for at in (0.0, 0.0, 0.5, 1.0, 1.5):
        assert sent(w.submit(c.Ping("a", w.now + at)), "a", "pong") == [{}]
    assert error_codes(w.submit(c.Ping("a", w.now + 1.5)), "a") == [("rate_limited", None)]
    assert sent(w.submit(c.Ping("a", w.now + 2.0)), "a", "pong") == [{}]  # a slower client is fine


def test_rate_limit_warns_again_after_a_full_refill() -> None:
    w = world(rate_limit_burst=2, rate_limit_per_s=1.0)
    connect(w, "a")
    for at in (0.0, 0.0, 0.0, 5.0, 5.0, 5.0):
        effects = w.submit(c.Ping("a", w.now + at))
    assert error_codes(effects, "a") == [("rate_limited", None)]
    assert closes(effects) == {}


def test_rate_limit_counts_every_inbound_frame() -> None:
    w = world(rate_limit_burst=2, rate_limit_per_s=1.0)
    connect(w, "a")
    w.submit(c.BadFrame("a", c.ErrorCode.INVALID_JSON, "bad", None, w.now))
    w.submit(c.Subscribe("a", ("c1",), None, w.now))
    assert error_codes(w.submit(c.Ping("a", w.now)), "a") == [("rate_limited", None)]


def test_rate_limit_is_not_drained_by_a_clock_that_steps_back() -> None:
    """Ticks and frames carry wall-clock time; an NTP step back is not a burst of frames."""
    w = world(rate_limit_burst=100, rate_limit_per_s=50.0)
    connect(w, "a")
    assert sent(w.submit(c.Ping("a", w.now - 5.0)), "a", "pong") == [{}]
    assert sent(w.submit(c.Ping("a", w.now - 5.0)), "a", "pong") == [{}]


def test_broker_back_up_reads_the_gap_from_where_the_stream_stopped() -> None:
    """One subscriber connection, publishes in seq order: at the outage every channel had
    everything up to the highest seq received on any of them (issue 9 item 1)."""
    w = world()
    login(w, "a", "u1")
    subscribe(w, "a", "c1", "c2")
    w.submit(message("c1", "x", seq=4))
    w.submit(message("c2", "x", seq=7))
    w.submit(message("gone", "x", seq=9))  # nobody here subscribes: not read back
    assert w.set_broker(False) == []
    w.submit(c.LogHeadKnown(50, w.now))  # learnt during the outage: not where the stream stopped
    assert w.set_broker(False) == []
    effects = w.set_broker(True)
    assert of(effects, fx.LoadGap) == [fx.LoadGap(("conv:c1", "conv:c2", "user:u1"), 9)]
    # presence transitions may have been lost too: every room learns its count again
    assert {e.conversation_id for e in of(effects, fx.AnnouncePresence)} == {"c1", "c2"}
    assert w.set_broker(True) == []  # up without a loss: nothing was missed


def test_a_quiet_conversation_does_not_pull_the_gap_back_to_its_last_event() -> None:
    """Issue 9 item 1: one quiet conversation and a busy one; the busy one's delivered
    history is not read again, and what the outage lost on both arrives."""
    w = room("a", cid="quiet")
    subscribe(w, "a", "busy")
    w.emit("conv:quiet", "message.new", {"n": 0})
    for n in range(200):
        w.emit("conv:busy", "message.new", {"n": n})
    w.settle()
    w.set_broker(False)
    lost = [w.emit("conv:quiet", "message.new", {}).seq, w.emit("conv:busy", "message.new", {}).seq]
    effects = w.set_broker(True)
    assert of(effects, fx.LoadGap) == [fx.LoadGap(("conv:busy", "conv:quiet", "user:a"), 201)]
    w.settle()
    assert numbered(w, "a")[-2:] == lost
    assert len(numbered(w, "a")) == len(set(numbered(w, "a"))) == 203


def test_a_gap_that_cannot_be_filled_is_announced_then_live_goes_on() -> None:
    """CONTRACT §4 (v2): ``replay.done {count: 0, recovered: false}``, then the live stream."""
    w = room("a", "b")
    subscribe(w, "b", "other")
    w.emit("conv:c1", "message.new", {"n": 1})
    w.settle()
    w.set_broker(False)
    w.emit("conv:c1", "message.new", {"n": 2})  # lost
    w.log_gap = True  # the log cannot give it back
    w.set_broker(True)
    w.settle()
    w.emit("conv:c1", "message.new", {"n": 3})
    w.settle()
    for conn_id in ("a", "b"):
        frames = [f for f in w.received[conn_id] if f["type"] in ("replay.done", "message.new")]
        assert [(f["type"], f.get("seq"), f["payload"].get("recovered")) for f in frames][-3:] == [
            ("message.new", 1, None), ("replay.done", None, False), ("message.new", 3, None)]
        assert frames[-2]["payload"]["count"] == 0


def test_broker_back_up_with_nothing_subscribed_reads_nothing() -> None:
    w = world()
    w.set_broker(False)
    assert w.set_broker(True) == []


def test_broker_gap_is_filled_with_what_the_outage_lost() -> None:
    w = room("a", "b")
    w.emit("conv:c1", "message.new", {"n": 1})
    w.settle()
    lose(w, "conv:c1")
    w.settle()
    w.emit("conv:c1", "message.new", {"n": 3})
    w.settle()
    assert numbered(w, "a") == numbered(w, "b") == [1, 2, 3]


def test_broker_gap_covers_channels_that_had_no_event_yet() -> None:
    """CONTRACT §6: after an outage clients miss nothing, also on a channel that was quiet."""
    w = room("a", cid="busy")
    subscribe(w, "a", "quiet")
    w.emit("conv:busy", "message.new", {"n": 1})
    w.settle()
    lose(w, "conv:quiet")
    w.settle()
    assert numbered(w, "a") == [1, 2]


def test_broker_gap_fill_is_not_dropped_behind_newer_live_events() -> None:
    """CONTRACT §4: per channel, strictly increasing, no gaps; the gap read is slow, live is not."""
    w = room("a")
    w.emit("conv:c1", "message.new", {"n": 1})
    w.settle()
    lose(w, "conv:c1")
    w.settle(slow=False)  # the gap read is in flight...
    w.emit("conv:c1", "message.new", {"n": 3})  # ...when live events flow again
    w.settle(slow=False)
    w.settle()
    assert numbered(w, "a") == [1, 2, 3]


def test_broker_gap_on_a_fresh_instance_whose_log_was_empty() -> None:
    """The log's head at start-up was 0 (known, not unknown): the first events can be read back."""
    w = room("a")  # the World tells the core the log head at start, as serve does: 0 here
    lose(w, "conv:c1")
    w.settle()
    assert numbered(w, "a") == [1]


def test_broker_gap_starts_at_the_log_head_learnt_at_start_up() -> None:
    w = world()
    for n in range(3):
        w.emit("conv:c1", "message.new", {"n": n})  # history from before this instance
    w.submit(c.LogHeadKnown(3, w.now))
    w.submit(c.LogHeadKnown(1, w.now))  # an older answer does not move it back
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    w.set_broker(False)
    w.emit("conv:c1", "message.new", {"n": 4})  # lost by the broker
    effects = w.set_broker(True)
    assert of(effects, fx.LoadGap) == [fx.LoadGap(("conv:c1", "user:u1"), 3)]
    w.settle()
    assert numbered(w, "a") == [4]


def outage_with_gap_read_pending() -> World:
    """``a`` and ``b`` in c1 saw seq 1; seq 2 was lost; the gap read has not answered yet."""
    w = room("a", "b")
    w.emit("conv:c1", "message.new", {"n": 1})
    w.settle()
    lose(w, "conv:c1")
    w.settle(slow=False)
    for conn_id in ("a", "b"):
        take(w, conn_id)
    return w


def test_broker_frames_wait_for_the_gap_then_go_out_in_seq_order() -> None:
    w = outage_with_gap_read_pending()
    held = [broker("conv:c1", "typing.start", {"conversation_id": "c1", "user_id": "z"}),
            message("c1", "x", seq=4), message("c1", "x", seq=3)]
    for cmd in held:
        assert w.submit(cmd) == []
    w.settle()
    for conn_id in ("a", "b"):
        frames = take(w, conn_id)
        assert kinds(frames) == ["message.new"] * 3 + ["typing.start"]
        assert seqs(frames) == [2, 3, 4]


def test_broker_frames_held_for_an_unreadable_gap_still_go_out() -> None:
    w = outage_with_gap_read_pending()
    w.log_gap = True
    w.submit(message("c1", "x", seq=3))
    w.settle()
    assert seqs(take(w, "a")) == [3]


def test_broker_frames_wait_for_every_outstanding_gap_read() -> None:
    w = outage_with_gap_read_pending()
    w.set_broker(False)
    w.set_broker(True)  # a second outage while the first read is still out
    w.settle(slow=False)
    assert len(w.slow) == 2
    w.emit("conv:c1", "message.new", {"n": 3})
    w.settle(slow=False)
    w.finish_slow(0)
    assert take(w, "a") == []
    w.finish_slow(0)
    assert seqs(take(w, "a")) == [2, 3]
