"""``GET /debug/sessions/{session_id}`` (issue 10): in development mode a session's state
and its last events, oldest first; 404 in production and for an unknown session. The
same events are in the DEBUG log."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.harness import Client, GatewayProcess


async def test_a_session_shows_its_state_and_the_events_of_its_auth_and_subscribe(
        gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    session_id = (await client.auth("alice"))["session_id"]
    await client.subscribe("c1")
    status, body = gateway.http("GET", f"/debug/sessions/{session_id}")
    assert status == 200, body
    assert body["state"]["phase"] == "authenticated"
    assert body["state"]["session_id"] == session_id
    assert body["state"]["conversations"] == ["c1"]
    assert body["state"]["operation"] is None
    types = [event["type"] for event in body["events"]]
    assert types[:3] == ["Connected", "FrameCounted", "Authenticated"]
    assert "SessionCreated" in types
    subscribe_at = types.index("OperationStarted", types.index("OperationFinished"))  # after the auth's
    assert types.index("Granted", subscribe_at) < types.index("OperationFinished", subscribe_at)
    assert len(body["events"]) <= 50
    assert "event Authenticated" in gateway.logs()  # the same events, in the DEBUG log
    assert gateway.http("GET", "/debug/sessions/no-such-session")[0] == 404
    await client.close()


async def test_there_is_no_debug_window_in_production(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MODE="production", authorization="none")
    client = await Client.connect(gateway)
    session_id = (await client.auth("alice"))["session_id"]
    assert gateway.http("GET", f"/debug/sessions/{session_id}")[0] == 404
    await client.close()
