"""The dispatcher applies the reducer's events (issue 10): a bug while applying one
closes that connection with 1011 and leaves every other connection as it was; the
debug trail keeps a session's last events, bounded, across a resume."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.runtime.rig import Runtime
from tornado_gw.core import commands as c
from tornado_gw.core import events as ev
from tornado_gw.core.state import Gateway
from tornado_gw.runtime import trail
from tornado_gw.runtime.clock import now
from tornado_gw.runtime.trail import Trail


async def test_a_failing_evolve_closes_that_connection_with_1011_and_spares_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with Runtime() as rt:
        a, b = rt.connect(), rt.connect()
        for conn_id, user in ((a, "alice"), (b, "bob")):
            rt.auth(conn_id, user)
            await rt.wait_for(conn_id, "auth.success")
            rt.subscribe(conn_id, "c1")
            await rt.wait_for(conn_id, "subscribed")
        before = copy.deepcopy(rt.dispatcher.state.connections[b])
        typing_seen = ev._EVOLVE[ev.TypingSeen]

        def broken(state: Gateway, event: Any) -> None:
            if state.connections.get(a) is not None and event.user_id == "alice":
                raise RuntimeError("a bug in evolve")
            typing_seen(state, event)

        monkeypatch.setitem(ev._EVOLVE, ev.TypingSeen, broken)
        rt.submit(c.Typing(a, "c1", now()))
        assert rt.sockets.closed == {a: 1011}
        assert rt.dispatcher.state.connections[b] == before
        assert rt.dispatcher.state.journal == []  # nothing left over for the next command
        seq = await rt.publish("c1")
        [frame] = await rt.wait_for(b, "message.new")
        assert frame["seq"] == seq


async def test_the_trail_keeps_a_sessions_last_events_across_a_resume() -> None:
    async with Runtime() as rt:
        window = Trail(rt.dispatcher.state)
        rt.dispatcher.observe = window.observe
        a = rt.connect()
        rt.auth(a, "alice")
        session_id = (await rt.wait_for(a, "auth.success"))[0]["payload"]["session_id"]
        rt.subscribe(a, "c1")
        await rt.wait_for(a, "subscribed")
        seq = await rt.publish("c1")
        await rt.wait_for(a, "message.new")
        view = window.view(session_id)
        assert view is not None
        [message] = [event for event in view["events"] if event["type"] == "BrokerMessageApplied"]
        assert (message["channel"], message["seq"], message["delivered"]) == ("conv:c1", seq, [a])
        rt.submit(c.Disconnect(a, now()))
        assert window.view(session_id) == {"state": None, "events": window.view(session_id)["events"]}
        b = rt.connect()
        rt.auth(b, "alice", session_id=session_id)
        await rt.wait_for(b, "auth.success")
        view = window.view(session_id)
        assert view is not None and view["state"]["conn_id"] == b
        assert view["state"]["conversations"] == ["c1"]
        events = [(event["type"], event.get("conn_id")) for event in view["events"]]
        assert events.index(("Disconnected", a)) < events.index(("SessionResumed", b))
        for _ in range(trail.RING):
            rt.submit(c.Ping(b, now()))
        view = window.view(session_id)
        assert view is not None and len(view["events"]) == trail.RING  # bounded, the newest kept
        assert view["events"][-1] == {"type": "FrameCounted", "conn_id": b, "at": view["events"][-1]["at"],
                                      "tokens": view["events"][-1]["tokens"], "warned": False}
        assert window.view("s-unknown") is None


async def test_the_trail_forgets_the_oldest_sessions_past_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Development mode under many short connections: rings and names stay bounded."""
    monkeypatch.setattr(trail, "MAX_RINGS", 3)
    async with Runtime() as rt:
        window = Trail(rt.dispatcher.state)
        rt.dispatcher.observe = window.observe
        sessions = []
        for user in ("u1", "u2", "u3", "u4", "u5"):
            conn_id = rt.connect()
            rt.auth(conn_id, user)
            sessions.append((await rt.wait_for(conn_id, "auth.success"))[0]["payload"]["session_id"])
            rt.submit(c.Disconnect(conn_id, now()))
        assert [window.view(s) is not None for s in sessions] == [False, False, True, True, True]
        assert len(window._rings) == 3 and len(window._named) == 3
