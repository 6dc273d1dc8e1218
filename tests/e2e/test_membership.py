"""Membership from the members table (CONTRACT §1 ``authorization: members``,
§3 ``subscribe``): real gateways, relay, Postgres and Redis."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.harness import Client
from tests.e2e.test_durable import Cluster, joined, message, new_cluster, notice, numbered, replay, seqs

pytestmark = pytest.mark.e2e
cluster = pytest.fixture(new_cluster, name="cluster")


async def test_subscribe_grants_only_member_conversations_and_lists_the_denied(cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"), ("c2", "alice"), ("c3", "bob"))
    gateway = cluster.gateway()
    cluster.relay()
    alice = await Client.connect(gateway)
    await alice.auth("alice")
    assert await alice.subscribe("c1", "c3", "c2", "c4") == {"conversation_ids": ["c1", "c2"],
                                                             "denied": ["c3", "c4"]}
    await alice.send("typing", {"conversation_id": "c3"})
    assert (await alice.expect("error"))["payload"]["code"] == "forbidden"
    delivered = cluster.published(cluster.insert([message("c3", 0), message("c4", 1), message("c2", 2)]))
    assert seqs(await numbered(alice, 1)) == [delivered[2]]  # nothing of c3 or c4 came first
    await alice.close()


async def test_the_own_user_channel_needs_no_membership(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.relay()
    alice, _ = await joined(gateway, "alice")  # a member of nothing
    bob, _ = await joined(gateway, "bob")
    status, body = gateway.http("POST", "/publish", {"channel": "user:alice", "type": "notification.new",
                                                     "payload": {"n": 0}})
    assert status == 202, body
    for_bob = cluster.published(cluster.insert([notice("bob", 1)]))
    [frame] = await numbered(alice, 1)
    assert frame["type"] == "notification.new" and frame["payload"] == {"n": 0}
    assert [frame["seq"]] == cluster.published([body["id"]])
    assert seqs(await numbered(bob, 1)) == for_bob  # bob got his own, not alice's
    await alice.close()
    await bob.close()


async def test_a_resumed_session_does_not_regain_a_conversation_the_user_left(cluster: Cluster) -> None:
    cache_s = 0.5
    cluster.add_members(("c1", "alice"), ("c2", "alice"))
    gateway = cluster.gateway(membership_cache_s=cache_s)
    cluster.relay()
    alice, session = await joined(gateway, "alice", "c1", "c2")
    await alice.close()
    cluster.query("DELETE FROM {members} WHERE conversation_id = 'c2' AND user_id = 'alice'")
    away = cluster.published(cluster.insert([message("c2", 0), message("c1", 1)]))
    await asyncio.sleep(cache_s + 0.2)  # the cached grant of c2 has expired

    alice = await Client.connect(gateway)  # the same instance: the one with the cache
    auth = await alice.auth("alice", session_id=session, last_seq=0)
    assert auth["resumed"] is True and auth["conversation_ids"] == ["c1"]
    assert await replay(alice) == ([away[1]], {"count": 1, "recovered": True})
    live = cluster.published(cluster.insert([message("c2", 2), message("c1", 3)]))
    assert seqs(await numbered(alice, 1)) == [live[1]]
    await alice.send("presence.query", {"conversation_id": "c2"})
    assert (await alice.expect("error"))["payload"]["code"] == "forbidden"
    await alice.close()
