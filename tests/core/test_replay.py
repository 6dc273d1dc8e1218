"""Replay and resume (CONTRACT §4): reply, missed events in ``seq`` order, ``replay.done``, live."""

from __future__ import annotations

from tests.core.support import connect, disconnect, kinds, login, seqs, subscribe, take, world
from tests.core.world import World
from tornado_gw.core import commands as c
from tornado_gw.core.records import LoggedEvent
from tornado_gw.core.replay import merge_replay


def logged(seq: int, channel: str = "conv:a") -> LoggedEvent:
    return LoggedEvent(seq, channel, f"replayed {seq}".encode())


def test_merge_orders_by_seq_and_drops_duplicates() -> None:
    delivered = {"conv:a": 1}
    buffered = [(2, "conv:a", b"live 2", "message.new"), (None, "conv:a", b"typing", "typing.start"),
                (4, "conv:a", b"live 4", "message.new"), (1, "conv:a", b"live 1", "message.new")]
    ordered, count, raised = merge_replay([logged(3), logged(1), logged(2)], buffered, delivered)
    assert ordered == [("conv:a", b"replayed 2", "replay"), ("conv:a", b"replayed 3", "replay"),
                       ("conv:a", b"live 4", "message.new"), ("conv:a", b"typing", "typing.start")]
    assert count == 3
    assert raised == {"conv:a": 4}
    assert delivered == {"conv:a": 1}  # only read: the caller records the change


def test_merge_filters_each_channel_by_what_it_already_has() -> None:
    delivered = {"conv:a": 5}
    ordered, count, raised = merge_replay([logged(4), logged(3, "conv:b"), logged(6)], [], delivered)
    assert [data for _, data, _ in ordered] == [b"replayed 3", b"replayed 6"]
    assert count == 2
    assert raised == {"conv:a": 6, "conv:b": 3}


def test_merge_of_nothing_is_nothing() -> None:
    assert merge_replay([], [], {}) == ([], 0, {})


def resumable(**limits: float) -> World:
    """u1 saw seq 1 on c1, then its connection ``a`` dropped; more was published meanwhile."""
    w = world(**limits)
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    w.emit("conv:c1", "message.new", {"n": 1})
    w.settle()
    disconnect(w, "a")
    w.emit("conv:c1", "message.new", {"n": 2})
    w.emit("conv:other", "message.new", {"n": 3})
    w.emit("user:u1", "notification", {"n": 4})
    return w


def resume(w: World, conn_id: str, last_seq: int) -> None:
    """Send the resuming ``auth`` and let everything but the log read finish."""
    connect(w, conn_id)
    w.submit(c.Authenticate(conn_id, "u1", None, "s-a", last_seq, f"s-{conn_id}", w.now))
    w.settle(slow=False)


def test_resume_replays_missed_events_merged_with_live_ones_then_goes_live() -> None:
    w = resumable()
    resume(w, "b", 1)
    assert kinds(take(w, "b")) == ["auth.success"]
    w.emit("conv:c1", "message.new", {"n": 5})  # live while the log is being read
    w.broadcast("conv:c1", w.log[1].data)  # a relay retry of seq 2
    w.broadcast("conv:c1", w.log[0].data)  # and of seq 1, which the client had
    w.settle(slow=False)
    assert take(w, "b") == []
    w.settle()
    frames = take(w, "b")
    assert seqs(frames) == [2, 4, 5]
    assert frames[-1] == {"type": "replay.done", "payload": {"count": 3, "recovered": True}}
    w.emit("conv:c1", "message.new", {"n": 6})
    w.settle()
    assert seqs(take(w, "b")) == [6]


def test_resume_reply_comes_first_and_lists_the_restored_conversations() -> None:
    w = resumable()
    resume(w, "b", 1)
    w.settle()
    frames = take(w, "b")
    assert frames[0]["payload"] == {"user_id": "u1", "session_id": "s-a", "resumed": True,
                                    "conversation_ids": ["c1"]}
    assert kinds(frames) == ["auth.success", "message.new", "notification", "replay.done"]


def test_resume_the_log_cannot_fill_is_not_recovered() -> None:
    w = resumable()
    w.log_gap = True
    resume(w, "b", 1)
    w.emit("conv:c1", "message.new", {"n": 5})
    w.settle()
    frames = take(w, "b")
    assert kinds(frames) == ["auth.success", "message.new", "replay.done"]
    assert frames[-1]["payload"]["recovered"] is False
    w.emit("conv:c1", "message.new", {"n": 6})
    w.settle()
    assert seqs(take(w, "b")) == [6]


def test_resume_past_replay_max_events_is_not_recovered() -> None:
    w = resumable(replay_max_events=1)
    resume(w, "b", 1)
    w.settle()
    assert take(w, "b")[-1] == {"type": "replay.done", "payload": {"count": 0, "recovered": False}}


def test_resume_with_nothing_missed_reports_zero() -> None:
    w = resumable()
    resume(w, "b", 4)
    w.settle()
    assert take(w, "b")[1:] == [{"type": "replay.done", "payload": {"count": 0, "recovered": True}}]


def test_subscribe_with_last_seq_replays_the_listed_conversations() -> None:
    w = world()
    login(w, "a", "u1")
    for n in (1, 2, 3):
        w.emit(f"conv:c{n}", "message.new", {"n": n})
    frames = subscribe(w, "a", "c1", "c3", last_seq=0)
    assert kinds(frames)[0] == "subscribed"
    assert seqs(frames) == [1, 3]
    assert [f for f in frames if f["type"] == "replay.done"] == [
        {"type": "replay.done", "payload": {"count": 2, "recovered": True}}]


def test_subscribe_with_last_seq_never_repeats_what_the_connection_has() -> None:
    w = world()
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    for n in (1, 2, 3):
        w.emit("conv:c1", "message.new", {"n": n})
    w.settle()
    take(w, "a")
    frames = subscribe(w, "a", "c1", last_seq=1)
    assert seqs(frames) == []
    assert frames[-1] == {"type": "replay.done", "payload": {"count": 0, "recovered": True}}


def test_replay_result_without_a_waiting_operation_is_ignored() -> None:
    w = world()
    login(w, "a", "u1")
    assert w.submit(c.ReplayLoaded("a", (LoggedEvent(1, "user:u1", b"{}"),), w.now)) == []
    assert w.submit(c.ReplayLoaded("ghost", None, w.now)) == []
    assert take(w, "a") == []
