"""The transition table (``core/transitions.py``) and the events' own description."""

from __future__ import annotations

import pytest

from tests.core.support import error_codes
from tornado_gw.core import commands as c
from tornado_gw.core import events as ev
from tornado_gw.core import transitions
from tornado_gw.core.errors import Unauthenticated
from tornado_gw.core.reducer import handle
from tornado_gw.core.state import Gateway, Phase

AT = 1_000.0


def test_a_refused_transition_names_the_command_and_the_phase() -> None:
    state = Gateway()
    handle(state, c.Connect("a", AT))
    outcome = handle(state, c.Subscribe("a", ("c1",), None, AT))
    assert error_codes(outcome.effects, "a") == [("unauthenticated", "subscribe")]
    [error] = [fx.frame for fx in outcome.effects if hasattr(fx, "frame")]
    assert error["payload"]["message"].startswith("can't subscribe: connection is connecting")
    assert [type(e) for e in outcome.events] == [ev.FrameCounted]  # refused: only the frame counted


@pytest.mark.parametrize(("cmd", "phase"), [
    (c.Typing("a", "c1", AT), Phase.CONNECTING),
    (c.Subscribe("a", ("c1",), None, AT), Phase.CLOSING),
    (c.Ping("a", AT), Phase.CLOSING),
])
def test_what_the_table_does_not_list_is_refused(cmd: c.Command, phase: Phase) -> None:
    with pytest.raises(Unauthenticated, match=f"connection is {phase.value}"):
        transitions.require(cmd, phase)


def test_an_auth_leads_from_connecting_to_authenticated() -> None:
    assert transitions.require(c.Ping("a", AT), Phase.CONNECTING) is Phase.CONNECTING
    auth = c.Authenticate("a", "u1", None, None, None, "s1", AT)
    assert transitions.require(auth, Phase.CONNECTING) is Phase.AUTHENTICATED


def test_a_result_is_accepted_only_in_the_step_that_waits_for_it() -> None:
    state = Gateway()
    handle(state, c.Connect("a", AT))
    assert not transitions.accepts(state.connections["a"], c.ReplayLoaded("a", (), AT))  # no operation
    handle(state, c.Authenticate("a", "u1", None, "s-old", None, "s1", AT))
    conn = state.connections["a"]
    assert transitions.step(conn) == "session"
    assert transitions.accepts(conn, c.SessionLoaded("a", None, AT))
    assert not transitions.accepts(conn, c.ReplayLoaded("a", (), AT))


def test_an_event_is_described_as_plain_data_with_its_type() -> None:
    event = ev.Granted("a", ("c1",), (), ("c1",), frozenset({"conv:c1", "user:u1"}), frozenset())
    assert ev.describe(event) == {"type": "Granted", "conn_id": "a", "granted": ["c1"], "denied": [],
                                  "added": ["c1"], "channels": ["conv:c1", "user:u1"], "waiting": []}
    held = ev.BrokerMessageApplied("conv:c1", 3, b'{"seq":3}', "message.new", ["a"], ())
    assert ev.describe(held)["data"] == '{"seq":3}'
    queued = ev.describe(ev.CommandQueued("a", c.Ping("a", AT)))
    assert queued["command"] == "Ping"
