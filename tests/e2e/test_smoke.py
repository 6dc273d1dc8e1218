"""The first minute of a new user: connect, auth, subscribe, receive."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Client, GatewayProcess

pytestmark = pytest.mark.e2e


async def test_published_event_reaches_subscriber_with_seq(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    auth = await client.auth("alice")
    assert auth["user_id"] == "alice" and auth["resumed"] is False and auth["session_id"]
    assert await client.subscribe("c1") == {"conversation_ids": ["c1"], "denied": []}
    status, body = gateway.http("POST", "/publish", {"channel": "conv:c1", "type": "message.new",
                                                     "payload": {"conversation_id": "c1"}})
    assert status == 202 and body == {"seq": 1}
    frame = await client.expect("message.new")
    assert frame == {"type": "message.new", "payload": {"conversation_id": "c1"}, "seq": 1}
    await client.close()
