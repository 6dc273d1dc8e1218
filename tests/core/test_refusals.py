"""A refused command changes nothing (issue 10): ``refusals.refuse`` decides on a
read-only view before any event, and no other core module raises a ``ClientError``."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tests.core.support import error_codes, login, subscribe, world
from tornado_gw.core import commands as c
from tornado_gw.core import errors
from tornado_gw.core import events as ev
from tornado_gw.core.reducer import handle
from tornado_gw.core.state import Gateway

AT = 1_000.0
CORE = Path(__file__).resolve().parents[2] / "tornado_gw" / "core"
REFUSING = {"refusals.py", "transitions.py"}


def _subscribed_to_c1() -> Gateway:
    w = world(max_subscriptions=2)
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    assert w.state.connections["a"].op is None and w.state.connections["a"].conversations == {"c1"}
    return w.state


@pytest.mark.parametrize(("cmd", "code", "ref"), [
    (c.Subscribe("a", ("c2", "c3"), None, AT), "too_many_subscriptions", "subscribe"),
    (c.Typing("a", "elsewhere", AT), "forbidden", "typing"),
    (c.PresenceQuery("a", "elsewhere", None, 10, AT), "forbidden", "presence.query"),
])
def test_a_refused_command_records_nothing_but_the_frame_it_counted(cmd: c.Command, code: str,
                                                                      ref: str) -> None:
    state = _subscribed_to_c1()
    outcome = handle(state, cmd)
    assert error_codes(outcome.effects, "a") == [(code, ref)]
    assert [type(e) for e in outcome.events] == [ev.FrameCounted]
    assert state.connections["a"].conversations == {"c1"} and state.connections["a"].op is None


def _client_errors() -> set[str]:
    return {name for name, value in vars(errors).items()
            if inspect.isclass(value) and issubclass(value, errors.ClientError)}


def test_only_the_refusals_raise_client_errors() -> None:
    """A handler that raised one after recording events would leave state half-changed."""
    refusing = _client_errors()
    found = []
    for path in sorted(CORE.glob("*.py")):
        if path.name in REFUSING:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                    and isinstance(node.exc.func, ast.Name) and node.exc.func.id in refusing:
                found.append(f"{path.name}:{node.lineno} raises {node.exc.func.id}")
    assert found == []
    assert {"Forbidden", "TooManySubscriptions", "Unauthenticated"} <= refusing
