"""Presence and typing on one instance, as CONTRACT §3 describes them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.cluster import presence, presence_changes
from tests.e2e.harness import Client, GatewayProcess, joined

pytestmark = pytest.mark.e2e


async def _no_presence_change(client: Client, seconds: float) -> None:
    assert presence(await client.silent(seconds)) == []


async def test_presence_online_when_first_session_joins_and_offline_on_unsubscribe(
        gateway: GatewayProcess) -> None:
    alice = await joined(gateway, "alice", "c1")
    assert await presence_changes(alice, 1) == ([("alice", "online")], 1)
    bob = await joined(gateway, "bob", "c1")
    assert await presence_changes(alice, 1) == ([("bob", "online")], 2)
    bob_laptop = await joined(gateway, "bob", "c1")
    await bob.send("presence.query", {"conversation_id": "c1"})
    state = await bob.expect("presence.state")
    assert state["payload"] == {"conversation_id": "c1", "user_ids": ["alice", "bob"], "count": 2,
                                "next": None}
    await bob_laptop.send("unsubscribe", {"conversation_ids": ["c1"]})
    await bob_laptop.expect("unsubscribed")
    await _no_presence_change(alice, 0.6)  # bob's other session is still there
    await bob.send("unsubscribe", {"conversation_ids": ["c1"]})
    assert await presence_changes(alice, 1) == ([("bob", "offline")], 1)
    await _no_presence_change(alice, 0.6)


async def test_offline_comes_after_the_grace_period_unless_the_session_resumes(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(presence_grace_s=0.6)
    alice = await joined(gateway, "alice", "c1")
    bob = await Client.connect(gateway)
    session = (await bob.auth("bob"))["session_id"]
    await bob.subscribe("c1")
    assert (await presence_changes(alice, 2))[0] == [("alice", "online"), ("bob", "online")]
    await bob.close()
    bob = await Client.connect(gateway)
    assert (await bob.auth("bob", session_id=session))["resumed"] is True
    await _no_presence_change(alice, 1.0)
    await bob.close()
    assert await presence_changes(alice, 1, timeout=3) == ([("bob", "offline")], 1)


async def test_typing_reaches_others_but_never_the_typist(gateway: GatewayProcess) -> None:
    alice = await joined(gateway, "alice", "c1")
    alice_phone = await joined(gateway, "alice", "c1")
    bob = await joined(gateway, "bob", "c1")
    await alice.send("typing", {"conversation_id": "c1"})
    start = await bob.expect("typing.start")
    assert start["payload"] == {"conversation_id": "c1", "user_id": "alice"}
    await alice.send("typing", {"conversation_id": "c1"})  # a repeat only refreshes
    assert [f for f in await bob.silent(0.3) if f["type"].startswith("typing")] == []
    for own in (alice, alice_phone):
        assert [f for f in await own.silent(0.1) if f["type"].startswith("typing")] == []


async def test_typing_stops_after_ttl(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(typing_ttl_s=0.5)
    alice = await joined(gateway, "alice", "c1")
    bob = await joined(gateway, "bob", "c1")
    await alice.send("typing", {"conversation_id": "c1"})
    await bob.expect("typing.start")
    stop = await bob.expect("typing.stop", timeout=2)
    assert stop["payload"] == {"conversation_id": "c1", "user_id": "alice"}


async def test_typing_stops_at_once_when_the_typist_sends_a_message(gateway: GatewayProcess) -> None:
    alice = await joined(gateway, "alice", "c1")
    bob = await joined(gateway, "bob", "c1")
    await alice.send("typing", {"conversation_id": "c1"})
    await bob.expect("typing.start")
    message = {"conversation_id": "c1", "message": {"id": "m1", "sender_id": "alice", "content": "hi"}}
    assert gateway.http("POST", "/publish", {"channel": "conv:c1", "type": "message.new",
                                             "payload": message})[0] == 202
    assert (await bob.next())["type"] == "message.new"
    stop = await bob.next(timeout=1)
    assert stop == {"type": "typing.stop", "payload": {"conversation_id": "c1", "user_id": "alice"}}


async def test_typing_stops_when_the_typists_last_session_leaves(gateway: GatewayProcess) -> None:
    alice = await joined(gateway, "alice", "c1", "c2")
    bob = await joined(gateway, "bob", "c1", "c2")
    await alice.send("typing", {"conversation_id": "c1"})
    await alice.send("typing", {"conversation_id": "c2"})
    await bob.expect("typing.start")
    await bob.expect("typing.start")
    await alice.send("unsubscribe", {"conversation_ids": ["c1"]})
    assert (await bob.expect("typing.stop"))["payload"] == {"conversation_id": "c1", "user_id": "alice"}
    await alice.close()
    assert (await bob.expect("typing.stop"))["payload"] == {"conversation_id": "c2", "user_id": "alice"}


async def test_a_late_close_of_a_resumed_sessions_old_connection_keeps_the_user_online(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(presence_grace_s=0.5)
    observer = await joined(gateway, "observer", "c1")
    old = await Client.connect(gateway)
    session = (await old.auth("alice"))["session_id"]
    await old.subscribe("c1")
    assert (await presence_changes(observer, 2))[0] == [("observer", "online"), ("alice", "online")]
    new = await Client.connect(gateway)
    assert (await new.auth("alice", session_id=session))["resumed"] is True
    await old.close()  # the half-open old connection is noticed only now
    await _no_presence_change(observer, 1.5)
    await observer.send("presence.query", {"conversation_id": "c1"})
    assert (await observer.expect("presence.state"))["payload"]["user_ids"] == ["alice", "observer"]
