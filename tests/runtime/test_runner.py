"""The runtime with hung and failing dependencies: every request is still answered
(CONTRACT §4 v2), and reads do not wait behind writes (issue 9 item 3)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from tests.runtime.rig import Fail, Hang, RoundTrips, Runtime
from tornado_gw.adapters.memory import AllowAllMembership, MemorySessions
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core import operations
from tornado_gw.core.records import SessionSnapshot
from tornado_gw.core.state import Limits
from tornado_gw.runtime import effects
from tornado_gw.runtime.clock import now

FAST_DEADLINE_S = 0.2


@pytest.fixture(autouse=True)
def fast_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(effects, "READ_DEADLINE_S", FAST_DEADLINE_S)
    monkeypatch.setattr(effects, "REPLAY_DEADLINE_S", FAST_DEADLINE_S)
    monkeypatch.setattr(effects, "WRITE_DEADLINE_S", FAST_DEADLINE_S)
    monkeypatch.setattr(operations, "OP_DEADLINE_S", FAST_DEADLINE_S)


def error_codes(rt: Runtime, conn_id: str) -> list[tuple[str, str]]:
    return [(f["payload"]["code"], f["payload"]["ref_type"]) for f in rt.frames(conn_id, "error")]


async def test_a_resume_whose_session_store_hangs_gets_a_new_session_in_time() -> None:
    sessions = Hang()
    async with Runtime(sessions=sessions) as rt:
        a = rt.connect()
        rt.auth(a, "alice", session_id="s-old", last_seq=3)
        [success] = await rt.wait_for(a, "auth.success", timeout_s=1.0)
        assert success["payload"]["resumed"] is False
        assert success["payload"]["session_id"] != "s-old"
        assert sessions.calls >= 1


async def test_a_resume_whose_membership_check_is_late_gets_a_new_session_and_keeps_its_snapshot() -> None:
    """Not ``resumed: true`` without its conversations, which a client takes for removals
    and does not subscribe again (the resume storm lost 3,000 of 5,000 replays so)."""
    sessions = MemorySessions()
    await sessions.save([SessionSnapshot("s-old", "alice", ("c1",))], 60.0)
    async with Runtime(Limits(check_membership=True), sessions=sessions, membership=Hang()) as rt:
        await rt.publish("c1")
        b = rt.connect()
        rt.auth(b, "alice", session_id="s-old", last_seq=0)
        [success] = await rt.wait_for(b, "auth.success", timeout_s=1.0)
        assert success["payload"]["resumed"] is False
        assert success["payload"]["session_id"] != "s-old"
        assert success["payload"]["conversation_ids"] == []
        await rt.wait_for(b, "replay.done")
        await rt.settle()
        kept = await sessions.load("s-old")
        assert kept is not None and kept.conversation_ids == ("c1",)  # a later resume still has it


async def test_a_resume_does_not_wait_behind_hung_presence_and_typing_writes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(effects, "WRITE_DEADLINE_S", 60.0)  # the hung writes stay hung throughout
    async with Runtime(presence=Hang(), typing=Hang()) as rt:
        a = rt.connect()
        rt.auth(a, "alice")
        session = (await rt.wait_for(a, "auth.success"))[0]["payload"]["session_id"]
        rt.subscribe(a, "c1")
        await rt.wait_for(a, "subscribed")
        for _ in range(50):  # typing writes pile up behind a store that never answers
            rt.submit(c.Typing(a, "c1", now()))
        rt.submit(c.Disconnect(a, now()))
        b = rt.connect()
        rt.auth(b, "alice", session_id=session, last_seq=0)
        [success] = await rt.wait_for(b, "auth.success", timeout_s=2.0)
        assert success["payload"]["resumed"] is True
        assert success["payload"]["conversation_ids"] == ["c1"]
        await rt.wait_for(b, "replay.done")


async def test_a_presence_query_while_presence_hangs_is_answered_unavailable() -> None:
    async with Runtime(presence=Hang()) as rt:
        a = rt.connect()
        rt.auth(a, "alice")
        rt.subscribe(a, "c1")
        await rt.wait_for(a, "subscribed")
        rt.submit(c.PresenceQuery(a, "c1", None, 500, now()))
        await rt.wait_for(a, "error", timeout_s=1.0)
        assert error_codes(rt, a) == [("unavailable", "presence.query")]


async def test_a_subscribe_whose_membership_check_fails_is_answered_unavailable() -> None:
    async with Runtime(Limits(check_membership=True), membership=Fail()) as rt:
        a = rt.connect()
        rt.auth(a, "alice")
        await rt.wait_for(a, "auth.success")
        rt.subscribe(a, "c1")
        await rt.wait_for(a, "error")
        assert error_codes(rt, a) == [("unavailable", "subscribe")]
        assert "conv:c1" not in rt.dispatcher.state.subscribers
        rt.submit(c.Ping(a, now()))  # the connection goes on
        await rt.wait_for(a, "pong")


async def test_an_unconfirmed_subscription_is_answered_and_read_back_once_live() -> None:
    """With a log that fills what is published meanwhile, the normal reply goes out."""
    async with Runtime() as rt:
        a = rt.connect()
        rt.auth(a, "alice")
        await rt.wait_for(a, "auth.success")
        rt.broker.confirming = False  # Redis accepts SUBSCRIBE and never answers
        rt.subscribe(a, "c1")
        await rt.settle(FAST_DEADLINE_S + 0.05)
        rt.tick()
        [subscribed] = await rt.wait_for(a, "subscribed")
        assert subscribed["payload"]["conversation_ids"] == ["c1"]
        missed = await rt.publish("c1")  # the broker is not subscribed yet: lost there
        rt.broker.confirming = True
        rt.broker.subscribe("conv:c1")  # the confirmation arrives late
        await rt.wait_for(a, "message.new")
        live = await rt.publish("c1")
        await rt.wait_for(a, "message.new", 2)
        assert rt.seqs(a) == [missed, live]


async def test_without_a_durable_log_an_unconfirmed_subscribe_and_auth_are_answered_unavailable() -> None:
    async with Runtime(Limits(durable_log=False)) as rt:
        a = rt.connect()
        rt.auth(a, "alice")
        await rt.wait_for(a, "auth.success")
        rt.broker.confirming = False
        rt.subscribe(a, "c1")
        b = rt.connect()
        rt.auth(b, "bob")
        await rt.settle(FAST_DEADLINE_S + 0.05)
        rt.tick()
        await rt.wait_for(a, "error")
        await rt.wait_for(b, "error")
        assert error_codes(rt, a) == [("unavailable", "subscribe")]
        assert error_codes(rt, b) == [("unavailable", "auth")]
        state = rt.dispatcher.state
        assert "conv:c1" not in state.subscribers and "user:bob" not in state.subscribers
        assert state.connections[a].conversations == set()
        rt.broker.confirming = True  # the broker is back: bob may authenticate again
        rt.auth(b, "bob")
        await rt.wait_for(b, "auth.success")


async def test_commands_waiting_for_a_running_operation_are_bounded() -> None:
    async with Runtime(Limits(check_membership=True), membership=Hang()) as rt:
        a = rt.connect()
        rt.auth(a, "alice")
        await rt.wait_for(a, "auth.success")
        rt.subscribe(a, "c1")  # waits for the membership check
        for _ in range(70):
            rt.submit(c.Unsubscribe(a, ("c9",), now()))
        assert error_codes(rt, a) == [("unavailable", "unsubscribe")] * 6
        await rt.wait_for(a, "error", 7, timeout_s=1.0)  # then the check is late: unavailable
        assert error_codes(rt, a)[-1] == ("unavailable", "subscribe")
        await rt.wait_for(a, "unsubscribed", 64)


async def test_writes_that_fail_are_reported_and_the_runtime_keeps_serving() -> None:
    async with Runtime(sessions=Fail(), presence=Fail(), typing=Fail()) as rt:
        a = rt.connect()
        rt.auth(a, "alice")
        rt.subscribe(a, "c1")
        await rt.wait_for(a, "subscribed")
        seq = await rt.publish("c1")
        await rt.wait_for(a, "message.new")
        assert rt.seqs(a) == [seq]
        await asyncio.wait_for(rt.runner.stop(1.0), 2.0)


class CountingSessions(MemorySessions):
    """The in-process sessions with a round trip, counting loads in progress at once
    (a Redis client's pool refuses connections past its size)."""

    def __init__(self) -> None:
        super().__init__()
        self.loading = self.most = 0

    async def load(self, session_id: str) -> SessionSnapshot | None:
        self.loading += 1
        self.most = max(self.most, self.loading)
        await asyncio.sleep(0.01)
        self.loading -= 1
        return await super().load(session_id)


async def test_a_resume_storm_keeps_each_store_within_its_share_of_connections() -> None:
    sessions = CountingSessions()
    async with Runtime(sessions=sessions) as rt:
        conns = [rt.connect() for _ in range(200)]
        for n, conn_id in enumerate(conns):
            rt.auth(conn_id, f"u{n}", session_id=f"gone-{n}")
        await rt.wait_for(conns[-1], "auth.success", timeout_s=3.0)
        await asyncio.gather(*(rt.wait_for(conn_id, "auth.success") for conn_id in conns))
        assert 1 < sessions.most <= effects.READS_PER_STORE


async def test_a_resume_storm_is_answered_in_batches_within_the_read_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 resumes at once with stores 20 ms away: one read per turn (32 turns) needs
    0.6 s, past the deadline; the reads waiting for a turn go together when one gets it."""
    monkeypatch.setattr(effects, "READ_DEADLINE_S", 0.5)
    monkeypatch.setattr(operations, "OP_DEADLINE_S", 5.0)
    stored = MemorySessions()
    await stored.save([SessionSnapshot(f"s{n}", f"u{n}", ("c1",)) for n in range(1000)], 60.0)
    sessions, membership = RoundTrips(stored, 0.02), RoundTrips(AllowAllMembership(), 0.02)
    async with Runtime(Limits(check_membership=True), sessions=sessions, membership=membership) as rt:
        conns = [rt.connect() for _ in range(1000)]
        for n, conn_id in enumerate(conns):
            rt.auth(conn_id, f"u{n}", session_id=f"s{n}", last_seq=0)
        for conn_id in conns:
            await rt.wait_for(conn_id, "replay.done", timeout_s=5.0)
        answers = [rt.frames(conn_id, "auth.success")[0]["payload"] for conn_id in conns]
        assert [(a["resumed"], a["conversation_ids"]) for a in answers] == [(True, ["c1"])] * 1000
        reads = sessions.calls["load"] + sessions.calls["load_many"]
        reads += membership.calls["allowed"] + membership.calls["allowed_many"]
        assert reads <= 200  # of 2,000 reads


async def test_session_saves_queued_behind_a_slow_write_merge_in_linear_time_and_the_newest_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume storm queues one save per client behind the running one (10,000 took the
    event loop seconds when each merge rebuilt the queued write)."""
    monkeypatch.setattr(effects, "WRITE_DEADLINE_S", 10.0)
    stored = MemorySessions()
    sessions = RoundTrips(stored, 0.05)
    async with Runtime(sessions=sessions) as rt:
        started = time.perf_counter()
        for n in range(20_000):
            rt.runner.perform([fx.SaveSession((SessionSnapshot(f"s{n % 10_000}", "u", (f"c{n}",)),), 60.0)])
        assert time.perf_counter() - started < 2.0
        await rt.runner.stop(5.0)
    assert sessions.calls["save"] == 1 + 10_000 // effects.SESSION_CHUNK  # the first, then the merged ones
    assert [(await stored.load(f"s{n}")) for n in (0, 9_999)] == [
        SessionSnapshot("s0", "u", ("c10000",)), SessionSnapshot("s9999", "u", ("c19999",))]


def test_failures_of_one_kind_are_logged_once_a_second_with_how_many_were_kept_quiet(
        caplog: pytest.LogCaptureFixture) -> None:
    failures = effects.FailureLog(every_s=0.05)
    with caplog.at_level(logging.WARNING, logger=effects.log.name):
        for _ in range(1000):
            failures.warn("JoinPresence", "store lane full")
        failures.warn("LoadSession", "no answer within 4 s")
        time.sleep(0.06)
        failures.warn("JoinPresence", "store lane full")
    assert [r.getMessage() for r in caplog.records] == [
        "! JoinPresence failed: store lane full", "! LoadSession failed: no answer within 4 s",
        "! JoinPresence failed: store lane full (and 999 more since the last warning of its kind)"]


class SlowSavingSessions(MemorySessions):
    """The in-process sessions with a round trip per save, recording each save's sessions."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[list[str]] = []

    async def save(self, snapshots: Sequence[SessionSnapshot], ttl_s: float) -> None:
        self.saves.append([s.session_id for s in snapshots])
        await asyncio.sleep(0.02)
        await super().save(snapshots, ttl_s)


async def test_session_snapshots_of_a_storm_are_saved_together_the_newest_of_each_winning() -> None:
    sessions = SlowSavingSessions()
    async with Runtime(sessions=sessions) as rt:
        conns = [rt.connect() for _ in range(50)]
        for n, conn_id in enumerate(conns):
            rt.auth(conn_id, f"u{n}")
        await asyncio.gather(*(rt.wait_for(conn_id, "auth.success") for conn_id in conns))
        for conn_id in conns:
            rt.subscribe(conn_id, "c1")
        await asyncio.gather(*(rt.wait_for(conn_id, "subscribed") for conn_id in conns))
        await rt.runner.stop(2.0)
        assert len(sessions.saves) <= 4  # a call per batch, not one per auth and subscribe
        for conn_id in conns:
            [success] = rt.frames(conn_id, "auth.success")
            snapshot = await MemorySessions.load(sessions, success["payload"]["session_id"])
            assert snapshot is not None and snapshot.conversation_ids == ("c1",)
