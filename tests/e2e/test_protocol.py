"""Every client message of CONTRACT §3 and its reply, on one embedded gateway."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.harness import SECRET, Client, GatewayProcess, joined, publish, token
from tornado_gw.web.auth import mint_token

pytestmark = pytest.mark.e2e


async def _close(*clients: Client) -> None:
    """Close cleanly, so the gateway's drain at teardown need not wait for dead peers."""
    for client in clients:
        await client.close()


async def _error_for(client: Client, raw: str) -> dict[str, Any]:
    await client.send_raw(raw)
    return (await client.expect("error"))["payload"]


async def test_auth_success_names_user_session_and_conversations(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    payload = await client.auth("alice")
    assert set(payload) == {"user_id", "session_id", "resumed", "conversation_ids"}
    assert payload["user_id"] == "alice" and payload["resumed"] is False and payload["conversation_ids"] == []
    assert isinstance(payload["session_id"], str) and payload["session_id"]
    other = await Client.connect(gateway)
    assert (await other.auth("alice"))["session_id"] != payload["session_id"]
    await _close(client, other)


async def test_subscribe_grants_lists_denied_and_the_stream_is_live(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    await client.auth("alice")
    await client.send("subscribe", {"conversation_ids": ["c1", "c2", "c1"]})
    assert await client.next() == {"type": "subscribed", "payload": {"conversation_ids": ["c1", "c2"],
                                                                     "denied": []}}
    seq = publish(gateway, "c2", 1)
    frame = await client.expect("message.new")
    assert frame == {"type": "message.new", "payload": {"conversation_id": "c2", "n": 1}, "seq": seq}
    await _close(client)


async def test_unsubscribe_replies_and_stops_that_conversation_only(gateway: GatewayProcess) -> None:
    client = await joined(gateway, "alice", "c1", "c2")
    await client.send("unsubscribe", {"conversation_ids": ["c1"]})
    assert await client.expect("unsubscribed") == {"type": "unsubscribed",
                                                   "payload": {"conversation_ids": ["c1"]}}
    publish(gateway, "c1", 1)
    kept = publish(gateway, "c2", 2)
    assert (await client.expect("message.new"))["seq"] == kept
    await client.silent(0.3)
    events = [f for f in client.received if f["type"] == "message.new"]
    assert [f["payload"]["conversation_id"] for f in events] == ["c2"]
    await _close(client)


async def test_typing_needs_a_subscription_and_reaches_only_others(gateway: GatewayProcess) -> None:
    alice = await joined(gateway, "alice", "c1")
    bob = await joined(gateway, "bob", "c1")
    await alice.send("typing", {"conversation_id": "c2"})
    error = (await alice.expect("error"))["payload"]
    assert (error["code"], error["ref_type"]) == ("forbidden", "typing")
    await alice.send("typing", {"conversation_id": "c1"})
    start = await bob.expect("typing.start")
    assert start == {"type": "typing.start", "payload": {"conversation_id": "c1", "user_id": "alice"}}
    assert [f for f in await alice.silent(0.3) if f["type"].startswith("typing")] == []
    await _close(alice, bob)


async def test_presence_query_answers_presence_state(gateway: GatewayProcess) -> None:
    alice = await joined(gateway, "alice", "c1")
    bob = await joined(gateway, "bob", "c1")
    await alice.send("presence.query", {"conversation_id": "c1"})
    state = await alice.expect("presence.state")
    assert state["payload"]["conversation_id"] == "c1"
    assert sorted(state["payload"]["user_ids"]) == ["alice", "bob"]
    await alice.send("presence.query", {"conversation_id": "elsewhere"})
    error = (await alice.expect("error"))["payload"]
    assert (error["code"], error["ref_type"]) == ("forbidden", "presence.query")
    await _close(alice, bob)


async def test_ping_gets_pong_before_and_after_auth(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    await client.send("ping")
    assert await client.next() == {"type": "pong", "payload": {}}
    await client.auth("alice")
    await client.send("ping", {})
    assert await client.next() == {"type": "pong", "payload": {}}
    await _close(client)


async def test_each_bad_frame_gets_its_error_code_and_the_connection_lives(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    subscribe_c1 = '{"type": "subscribe", "payload": {"conversation_ids": ["c1"]}}'
    before_auth = await _error_for(client, subscribe_c1)
    await client.auth("alice")
    cases = {
        "truncated JSON": '{"type": "subscribe"',
        "ids not a list": '{"type": "subscribe", "payload": {"conversation_ids": "c1"}}',
        "type not a string": '{"type": 7}',
        "unknown type": '{"type": "dance", "payload": {}}',
    }
    seen = {name: await _error_for(client, raw) for name, raw in cases.items()}
    codes = {name: (p["code"], p["ref_type"]) for name, p in {**seen, "before auth": before_auth}.items()}
    assert codes == {
        "before auth": ("unauthenticated", "subscribe"),
        "truncated JSON": ("invalid_json", None),
        "ids not a list": ("invalid_message", "subscribe"),
        "type not a string": ("invalid_message", None),
        "unknown type": ("unknown_type", "dance"),
    }
    assert all(isinstance(p["message"], str) and p["message"] for p in seen.values())
    await client.subscribe("c1")
    seq = publish(gateway, "c1", 1)
    assert (await client.expect("message.new"))["seq"] == seq
    await _close(client)


async def test_subscriptions_past_the_limit_are_refused(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(max_subscriptions=2)
    client = await joined(gateway, "alice")
    await client.send("subscribe", {"conversation_ids": ["c1", "c2", "c3"]})
    error = (await client.expect("error"))["payload"]
    assert (error["code"], error["ref_type"]) == ("too_many_subscriptions", "subscribe")
    assert await client.subscribe("c1", "c2") == {"conversation_ids": ["c1", "c2"], "denied": []}
    await client.send("subscribe", {"conversation_ids": ["c3"]})
    assert (await client.expect("error"))["payload"]["code"] == "too_many_subscriptions"
    assert (await client.subscribe("c2"))["conversation_ids"] == ["c2"]  # already held: no new slot
    seq = publish(gateway, "c1", 1)
    assert (await client.expect("message.new"))["seq"] == seq
    await _close(client)


async def test_second_auth_of_the_same_user_refreshes_the_token(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    first_expires = time.time() + 1.5
    first = await client.auth("alice", token=token("alice", ttl_s=1.5))
    await client.subscribe("c1")
    await client.send("auth", {"token": token("alice", ttl_s=3600.0)})
    refreshed = (await client.expect("auth.success"))["payload"]
    assert refreshed["session_id"] == first["session_id"] and refreshed["conversation_ids"] == ["c1"]
    # the first token's exp passes: the refreshed lifetime keeps the connection open
    quiet = await client.silent(first_expires + 0.3 - time.time())
    assert [f for f in quiet if f["type"] != "presence.diff"] == []
    seq = publish(gateway, "c1", 1)
    assert (await client.expect("message.new"))["seq"] == seq
    await _close(client)


async def test_another_users_token_on_a_live_connection_closes_4001(gateway: GatewayProcess) -> None:
    client = await joined(gateway, "alice", "c1")
    await client.send("auth", {"token": token("mallory")})
    error = await client.expect("auth.error")
    assert set(error["payload"]) == {"code", "message"}
    assert (await client.closed())[0] == 4001


@pytest.mark.parametrize("bad_token", [
    "not-a-jwt",
    token("alice", secret="some-other-secret-0123456789abcdef0123"),
    mint_token(SECRET, "alice", 1.0, time.time() - 3600),
], ids=["garbage", "wrong-secret", "expired"])
async def test_invalid_token_gets_auth_error_then_4001(gateway: GatewayProcess, bad_token: str) -> None:
    client = await Client.connect(gateway)
    await client.send("auth", {"token": bad_token})
    error = await client.next()
    assert error["type"] == "auth.error" and isinstance(error["payload"]["message"], str)
    assert (await client.closed())[0] == 4001


async def test_token_expiry_closes_4003_and_spares_others(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(jwt_leeway_s=0)  # closed at exp + leeway (test_access.py has a leeway)
    alice = await joined(gateway, "alice", "c1")
    minted = time.time()
    bob = await Client.connect(gateway)
    await bob.auth("bob", token=token("bob", ttl_s=1.0))
    code, _ = await bob.closed()
    assert code == 4003 and time.time() - minted >= 0.9
    seq = publish(gateway, "c1", 1)
    assert (await alice.expect("message.new"))["seq"] == seq
    await _close(alice)
