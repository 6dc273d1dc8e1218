"""The client's protocol logic, fed frames directly: no socket, no clock.

The scenarios (tests/client/scenarios.py) run here through the Python ``ClientState``
and in tests/client/test_js_state.py through the browser client's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.client.scenarios import SCENARIOS, assert_outputs, jwt
from tornado_gw.client.backoff import reconnect_delay_s
from tornado_gw.client.state import ClientState, Settings, token_expiry


def plain(value: Any) -> Any:
    return sorted(value) if isinstance(value, (set, frozenset)) else value


def snapshot(state: ClientState) -> dict[str, Any]:
    return {
        "phase": state.phase, "session_id": state.session_id, "last_seq": state.last_seq,
        "wanted": list(state.wanted), "live": sorted(state.live),
        "presence": {c: sorted(users) for c, users in state.presence.items()},
        "presence_count": dict(state.presence_count), "presence_pending": sorted(state.presence_pages),
        "deadline": state.deadline(), "refresh_at": state.refresh_at,
    }


def run(scenario: dict[str, Any]) -> list[Any]:
    state = ClientState(Settings(**scenario.get("settings", {})))
    outputs: list[Any] = []
    for step in scenario["steps"]:
        if "call" in step:
            outputs.append(plain(getattr(state, step["call"])(*step["args"])))
        elif "take" in step:
            frames, events, changes = state.take()
            outputs.append({"frames": frames, "events": [dataclasses.asdict(e) for e in events],
                            "changes": [dataclasses.asdict(c) for c in changes]})
        else:
            outputs.append(snapshot(state))
    return outputs


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_client_state_scenario(name: str) -> None:
    assert_outputs(name, run(SCENARIOS[name]))


def test_token_expiry_reads_exp_and_tolerates_junk() -> None:
    assert token_expiry(jwt(123.0)) == 123.0
    assert token_expiry(jwt(None)) is None
    assert token_expiry("not a token") is None
    assert token_expiry("a.!!!.c") is None


@pytest.mark.parametrize("attempt, ceiling", [(1, 0.5), (2, 1.0), (4, 4.0), (10, 30.0)])
def test_reconnect_delay_is_full_jitter_under_a_capped_exponential(attempt: int, ceiling: float) -> None:
    assert reconnect_delay_s(attempt, base_s=0.5, cap_s=30, jitter=0.0) == 0.0
    assert reconnect_delay_s(attempt, base_s=0.5, cap_s=30, jitter=0.999) == pytest.approx(ceiling * 0.999)
