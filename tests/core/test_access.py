"""Access that changes while clients are connected (CONTRACT §2, §3 v2): ordered revocation
live and in every replay, the server's unsubscribe and disconnect, connections per user."""

from __future__ import annotations

import json
from typing import Any

from tests.core.support import (
    connect,
    disconnect,
    kinds,
    login,
    numbered,
    subscribe,
    take,
    world,
)
from tests.core.world import World, _now, encode
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core import frames
from tornado_gw.core.records import LoggedEvent

REMOVED = "membership.removed"


def remove(w: World, user: str, cid: str) -> int:
    """What the API server does: delete the member row and write the event, in one transaction."""
    if w.members is not None:
        w.members[user].discard(cid)
    return w.emit(f"user:{user}", REMOVED, {"conversation_id": cid}).seq


def say(w: World, cid: str, n: int) -> int:
    return w.emit(f"conv:{cid}", "message.new", {"conversation_id": cid, "n": n}).seq


def seen(frames_: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(f["type"], f["seq"]) for f in frames_ if "seq" in f]


def members(**rooms: str) -> dict[str, set[str]]:
    return {user: set(cids.split(",")) for user, cids in rooms.items()}


def gone_offline() -> World:
    """Alice, a member of c1 and c2, subscribed to both on connection "a", which closed."""
    w = world(check_membership=True, members=members(alice="c1,c2"))
    login(w, "a", "alice")
    subscribe(w, "a", "c1", "c2")
    disconnect(w, "a")
    return w


def test_a_removal_ends_the_conversation_at_its_place_in_the_stream_on_every_connection() -> None:
    w = world(check_membership=True, members=members(alice="c1,c2", bob="c1"))
    for conn, user in (("a1", "alice"), ("a2", "alice"), ("b", "bob")):
        login(w, conn, user)
        subscribe(w, conn, "c1", "c2")
        take(w, conn)
    before = say(w, "c1", 0)
    removal = remove(w, "alice", "c1")
    after = say(w, "c1", 1)
    other = say(w, "c2", 2)
    w.settle()
    for conn in ("a1", "a2"):
        assert seen(take(w, conn)) == [("message.new", before), (REMOVED, removal), ("message.new", other)]
    assert numbered(w, "b") == [before, after]
    assert w.state.connections["a1"].conversations == {"c2"}
    assert "alice" not in w.online("c1")  # presence shows her leaving
    snapshot = _now(w.sessions.load("s-a1"))
    assert snapshot is not None and snapshot.conversation_ids == ("c2",)  # a resume will not bring c1 back


def test_a_later_re_add_and_subscribe_works() -> None:
    w = world(check_membership=True, members=members(alice="c1"))
    login(w, "a", "alice")
    subscribe(w, "a", "c1")
    remove(w, "alice", "c1")
    w.settle()
    assert kinds(take(w, "a")) == [REMOVED]
    w.members["alice"].add("c1")  # type: ignore[index]
    assert subscribe(w, "a", "c1")[0]["payload"] == {"conversation_ids": ["c1"], "denied": []}
    again = say(w, "c1", 5)
    w.settle()
    assert seen(take(w, "a")) == [("message.new", again)]


def test_a_resume_after_a_removal_while_offline_replays_up_to_the_removal() -> None:
    """Issue 12: the resume used to drop the events below the removal too."""
    w = gone_offline()
    below = say(w, "c1", 0)
    removal = remove(w, "alice", "c1")
    above = say(w, "c1", 1)
    kept = say(w, "c2", 2)
    got = login(w, "a2", "alice", session_id="s-a", last_seq=0)
    assert got[0]["payload"]["resumed"] is True and got[0]["payload"]["conversation_ids"] == ["c2"]
    assert seen(got) == [("message.new", below), (REMOVED, removal), ("message.new", kept)]
    assert got[-1]["payload"] == {"count": 3, "recovered": True}
    assert above not in numbered(w, "a2")


def test_subscribe_with_last_seq_to_a_conversation_the_user_was_removed_from() -> None:
    w = world(check_membership=True, members=members(alice="c1"))
    login(w, "a", "alice")
    subscribe(w, "a", "c1")
    disconnect(w, "a")
    below = say(w, "c1", 0)
    removal = remove(w, "alice", "c1")
    say(w, "c1", 1)
    never = say(w, "c9", 2)  # never a member: nothing of it
    login(w, "fresh", "alice")
    got = subscribe(w, "fresh", "c1", "c9", last_seq=0)
    assert got[0]["payload"] == {"conversation_ids": [], "denied": ["c1", "c9"]}
    assert seen(got) == [("message.new", below), (REMOVED, removal)]
    assert never not in numbered(w, "fresh")
    assert got[-1]["payload"] == {"count": 2, "recovered": True}


def test_a_removal_during_a_subscribe_leaves_the_conversation_out() -> None:
    w = world(check_membership=True, members=members(alice="c1"))
    login(w, "a", "alice")
    w.submit(c.Subscribe("a", ("c1",), None, w.now))  # the membership check is in flight
    remove(w, "alice", "c1")
    w.settle()
    got = take(w, "a")
    assert kinds(got) == [REMOVED, "subscribed"]
    assert got[1]["payload"] == {"conversation_ids": [], "denied": ["c1"]}
    say(w, "c1", 1)
    w.settle()
    assert take(w, "a") == [] and w.state.connections["a"].conversations == set()


def test_a_removal_lost_in_a_broker_outage_is_applied_by_the_gap_fill() -> None:
    w = world(check_membership=True, members=members(alice="c1", bob="c1"))
    for user in ("alice", "bob"):
        login(w, user, user)
        subscribe(w, user, "c1")
        take(w, user)
    w.set_broker(False)
    below = say(w, "c1", 0)
    removal = remove(w, "alice", "c1")
    above = say(w, "c1", 1)
    w.set_broker(True)
    w.settle()
    assert seen(take(w, "alice")) == [("message.new", below), (REMOVED, removal)]
    assert numbered(w, "bob") == [below, above]
    assert w.state.connections["alice"].conversations == set()


def test_a_removal_on_a_conversation_channel_revokes_nothing() -> None:
    w = world()
    login(w, "a", "alice")
    subscribe(w, "a", "c1")
    take(w, "a")
    w.emit("conv:c1", REMOVED, {"conversation_id": "c1"})
    w.settle()
    assert w.state.connections["a"].conversations == {"c1"}


def server(w: World, user: str, frame: dict[str, Any]) -> None:
    """``POST /unsubscribe`` or ``/disconnect`` arriving through the broker."""
    w.broadcast(f"user:{user}", encode(frame))
    w.settle()


def test_server_unsubscribe_leaves_on_every_connection_and_says_why() -> None:
    w = world()
    for conn in ("a1", "a2"):
        login(w, conn, "alice")
        subscribe(w, conn, "c1", "c2")
        take(w, conn)
    server(w, "alice", frames.server_unsubscribe(["c1", "c3"]))
    for conn in ("a1", "a2"):
        assert take(w, conn) == [{"type": "unsubscribed",
                                  "payload": {"conversation_ids": ["c1"], "reason": "server"}}]
        assert w.state.connections[conn].conversations == {"c2"}
    assert "alice" not in w.online("c1")
    say(w, "c1", 0)
    w.settle()
    assert numbered(w, "a1") == []


def test_server_disconnect_closes_4010_and_the_session_cannot_be_resumed() -> None:
    w = world()
    login(w, "a", "alice")
    subscribe(w, "a", "c1")
    login(w, "b", "bob")
    server(w, "alice", frames.server_disconnect("banned"))
    assert w.closed == {"a": 4010}
    assert "alice" not in w.online("c1")  # at once, no grace
    got = login(w, "a2", "alice", session_id="s-a", last_seq=0)
    assert got[0]["payload"]["resumed"] is False


def test_server_commands_are_never_delivered_to_a_client() -> None:
    w = world()
    login(w, "a", "alice")
    subscribe(w, "a", "c1")
    take(w, "a")
    w.broadcast("conv:c1", encode(frames.server_disconnect("x")))
    w.settle()
    assert take(w, "a") == [] and w.closed == {}


def test_connections_over_the_cap_are_closed_4011_and_a_slot_frees_on_close() -> None:
    w = world(max_connections_per_user=2)
    login(w, "a1", "alice")
    login(w, "a2", "alice")
    login(w, "b", "bob")
    login(w, "a3", "alice")
    assert w.closed == {"a3": 4011}
    w.settle()
    disconnect(w, "a1")
    login(w, "a4", "alice")
    assert w.closed == {"a3": 4011}


def test_no_cap_when_zero() -> None:
    w = world(max_connections_per_user=0)
    for n in range(5):
        login(w, f"a{n}", "alice")
    assert w.closed == {}
    connect(w, "x")


def test_a_removal_that_arrives_while_the_resume_replay_loads_cuts_the_replay_too() -> None:
    w = gone_offline()
    below = say(w, "c1", 0)
    connect(w, "a2")
    w.submit(c.Authenticate("a2", "alice", None, "s-a", 0, "s-a2", w.now))
    w.answer_stores()
    w.settle(slow=False)  # membership granted, channels live, reply sent, the replay read still out
    assert any(isinstance(effect, fx.LoadReplay) for effect in w.slow)
    removal = remove(w, "alice", "c1")  # arrives live: held with the operation
    above = say(w, "c1", 1)
    kept = say(w, "c2", 2)
    w.settle()
    got = take(w, "a2")
    assert got[0]["payload"]["conversation_ids"] == ["c1", "c2"]  # granted before the removal
    assert seen(got) == [("message.new", below), (REMOVED, removal), ("message.new", kept)]
    assert above not in numbered(w, "a2")
    assert w.state.connections["a2"].conversations == {"c2"}
    assert "alice" not in w.online("c1")


def test_a_replay_reads_the_user_channel_only_to_find_removals_of_denied_conversations() -> None:
    w = world(check_membership=True, members=members(alice="c1"))
    login(w, "a", "alice")
    w.submit(c.Subscribe("a", ("c1",), 0, w.now))
    w.answer_stores()
    w.settle(slow=False)
    reads = [effect.channels for effect in w.slow if isinstance(effect, fx.LoadReplay)]
    assert reads == [("conv:c1",)]
    w.settle()
    w.submit(c.Subscribe("a", ("c9",), 0, w.now))
    w.answer_stores()
    w.settle(slow=False)
    reads = [effect.channels for effect in w.slow if isinstance(effect, fx.LoadReplay)]
    assert reads == [("conv:c9", "user:alice")]


def test_a_removal_before_the_channel_is_live_still_answers_the_subscribe() -> None:
    w = world(check_membership=True, members=members(alice="c1,c2"))
    login(w, "a", "alice")
    w.submit(c.Subscribe("a", ("c1", "c2"), None, w.now))
    w.answer_stores()  # granted; the broker has not confirmed conv:c1 yet
    assert w.state.connections["a"].op is not None
    event = LoggedEvent(1, "user:alice", encode({"type": REMOVED, "payload": {"conversation_id": "c1"},
                                                 "seq": 1}))
    w.members["alice"].discard("c1")  # type: ignore[index]
    w.log.append(event)
    w.submit(c.BrokerMessage(event.channel, event.data, json.loads(event.data), w.now))
    w.settle()
    got = [f for f in take(w, "a") if not f["type"].startswith("presence.")]
    assert kinds(got) == [REMOVED, "subscribed"]
    assert got[1]["payload"] == {"conversation_ids": ["c2"], "denied": ["c1"]}
    assert w.state.connections["a"].op is None and "alice" not in w.online("c1")


def test_server_unsubscribe_during_a_resume_still_answers_it() -> None:
    w = gone_offline()
    connect(w, "a2")
    w.submit(c.Authenticate("a2", "alice", None, "s-a", None, "s-a2", w.now))
    w.answer_stores()  # the session is back, its channels not yet live
    w.submit(c.BrokerMessage("user:alice", encode(frames.server_unsubscribe(["c1"])),
                             frames.server_unsubscribe(["c1"]), w.now))
    w.settle()
    got = take(w, "a2")
    assert [f["type"] for f in got] == ["unsubscribed", "auth.success"]
    assert got[1]["payload"]["conversation_ids"] == ["c2"]
    assert w.state.connections["a2"].op is None


def test_a_removed_conversation_replayed_twice_sends_its_events_once() -> None:
    """State rule 3 with revocation: the events below a removal, replayed to a client that
    was no longer a member, are not sent again when it asks with the same last_seq."""
    w = world(check_membership=True, members=members(alice="c1"))
    login(w, "a", "alice")
    say(w, "c1", 1)
    removal = remove(w, "alice", "c1")
    first = subscribe(w, "a", "c1", last_seq=0)
    assert sorted(seen(first)) == [("membership.removed", removal), ("message.new", 1)]
    again = subscribe(w, "a", "c1", last_seq=0)
    assert seen(again) == [] and kinds(again)[-1] == "replay.done"


def test_a_resume_reads_its_replay_again_until_a_committed_removal_is_numbered() -> None:
    """The member row is gone (the API server's transaction committed) but the relay has not
    numbered its ``membership.removed`` when the resume reads the replay: sent then, the
    replay would drop the events below the removal. It is read again until the removal is
    there (tests/e2e/test_revocation.py hit this window now and then)."""
    w = gone_offline()
    below = say(w, "c1", 0)
    kept = say(w, "c2", 1)
    assert w.members is not None
    w.members["alice"].discard("c1")  # committed; the relay numbers it a moment later
    got = login(w, "a2", "alice", session_id="s-a", last_seq=0)
    assert [f["type"] for f in got] == ["auth.success"]  # no replay yet: waiting for the removal
    w.advance(0.1)
    assert take(w, "a2") == []
    removal = w.emit("user:alice", REMOVED, {"conversation_id": "c1"}).seq
    w.advance(0.2)
    got = take(w, "a2")
    assert seen(got) == [("message.new", below), ("message.new", kept), (REMOVED, removal)]
    assert got[-1]["payload"] == {"count": 3, "recovered": True}


def test_a_resume_whose_removal_is_not_there_after_one_more_read_goes_on_without_it() -> None:
    """A user who left while offline (the member row deleted, no removal event): the resume
    reads its replay once more, at the next tick, then goes on without the conversation."""
    w = gone_offline()
    say(w, "c1", 0)
    kept = say(w, "c2", 1)
    assert w.members is not None
    w.members["alice"].discard("c1")
    got = login(w, "a2", "alice", session_id="s-a", last_seq=0)
    assert [f["type"] for f in got] == ["auth.success"]
    w.advance(1.0)  # the next tick
    got = take(w, "a2")
    assert seen(got) == [("message.new", kept)]
    assert got[-1]["payload"] == {"count": 1, "recovered": True}
