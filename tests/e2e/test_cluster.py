"""Many gateway instances on one Redis behave as one service (CONTRACT §3, §4, §6).

Clients of one conversation are spread over two or three real gateway
processes; frames come from Redis the way any projection worker sends them.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.cluster import Cluster, of_type, presence, presence_changes, quiet, settle
from tests.e2e.harness import Client, GatewayProcess, T, joined

pytestmark = pytest.mark.e2e

FRAMES = 200


@pytest.fixture
def cluster(start_gateway: Callable[..., GatewayProcess], redis_host: str,
            redis_prefix: str) -> Iterator[Cluster]:
    yield from Cluster.running(start_gateway, redis_host, redis_prefix)


def _numbers(client: Client, conversation_id: str) -> list[int]:
    """The ``n`` of every ``test.n`` frame of ``conversation_id`` received, in order."""
    return [f["payload"]["n"] for f in of_type(client.received, "test.n")
            if f["payload"]["conversation_id"] == conversation_id]


def _typing(client: Client) -> list[tuple[str, dict[str, str]]]:
    return [(f["type"], f["payload"]) for f in client.received if f["type"].startswith("typing.")]


async def _receive_all(client: Client, count: int) -> None:
    while len(of_type(client.received, "test.n")) < count:
        await client.next()


async def test_a_frame_published_to_redis_reaches_every_subscriber_on_every_instance_and_nobody_else(
        cluster: Cluster) -> None:
    a, b, c = cluster.start(3)
    async with cluster.redis() as redis:
        await settle(lambda: cluster.subscriber_counts(redis), [1, 1, 1], "one Pub/Sub connection each")
        assert await cluster.channels(redis) == set()
        alice = await joined(a, "alice", "x")
        dave = await joined(a, "dave", "y")  # alice's instance, another conversation
        bob = await joined(b, "bob", "x", "y")
        carol = await joined(c, "carol", "y")  # an instance with no subscriber of x
        assert await cluster.channels(redis) == {"conv:x", "conv:y", "user:alice", "user:bob", "user:carol",
                                                 "user:dave"}
        # a: conv:x, conv:y, user:alice, user:dave, its probe; b: conv:x, conv:y, user:bob, probe;
        # c: conv:y, user:carol, probe
        assert await cluster.subscriber_counts(redis) == [3, 4, 5]
        assert await redis.pubsub_numsub(cluster.prefix + "conv:x", cluster.prefix + "conv:y") == [
            ((cluster.prefix + "conv:x").encode(), 2), ((cluster.prefix + "conv:y").encode(), 3)]

        pipe = redis.pipeline(transaction=False)
        for n in range(FRAMES):
            for conversation_id in ("x", "y"):
                pipe.publish(f"{cluster.prefix}conv:{conversation_id}",
                             f'{{"type":"test.n","payload":{{"conversation_id":"{conversation_id}","n":{n}}}}}')
        await pipe.execute()
        expected = list(range(FRAMES))
        await asyncio.wait_for(asyncio.gather(*(_receive_all(client, count) for client, count in (
            (alice, FRAMES), (bob, 2 * FRAMES), (carol, FRAMES), (dave, FRAMES)))), T)
        assert _numbers(alice, "x") == _numbers(bob, "x") == expected
        assert _numbers(bob, "y") == _numbers(carol, "y") == _numbers(dave, "y") == expected
        await quiet((alice, bob, carol, dave), 0.2)
        assert _numbers(alice, "y") == _numbers(carol, "x") == _numbers(dave, "x") == []
        assert len(of_type(bob.received, "test.n")) == 2 * FRAMES  # each frame exactly once

        await bob.send("unsubscribe", {"conversation_ids": ["x"]})
        await bob.expect("unsubscribed")
        await settle(lambda: cluster.subscriber_counts(redis), [3, 3, 5], "b unsubscribed conv:x")
        await alice.close()
        await settle(lambda: cluster.channels(redis), {"conv:y", "user:bob", "user:carol", "user:dave"},
                     "conv:x and user:alice gone with their last local subscriber")
        assert await cluster.subscriber_counts(redis) == [3, 3, 3]
        assert await cluster.publish(redis, "x", "test.n", n=-1) == 0  # nobody listens to x any more
        assert await cluster.publish(redis, "y", "test.n", n=FRAMES) == 3
        for client in (bob, carol, dave):
            assert (await client.expect("test.n"))["payload"]["n"] == FRAMES
        # /metrics: each instance counted what it took from Redis
        assert a.metric("gateway_broker_received_total") >= 2 * FRAMES
        assert b.metric("gateway_broker_received_total") >= 2 * FRAMES
        assert FRAMES <= c.metric("gateway_broker_received_total") < 2 * FRAMES


async def test_presence_and_typing_agree_on_every_instance_and_each_transition_is_announced_once(
        cluster: Cluster) -> None:
    ttl_s = 2.0
    a, b, c = cluster.start(3, presence_ttl_s=ttl_s, typing_ttl_s=1)
    carol = await joined(c, "carol", "c1")
    await presence_changes(carol, 1)
    alice = await joined(a, "alice", "c1")
    await presence_changes(carol, 1)  # alice online: announced before bob comes
    bob = await joined(b, "bob", "c1")
    await presence_changes(carol, 1)
    bob_laptop = await joined(a, "bob", "c1")  # bob's second session, on another instance
    dave = await joined(b, "dave", "c1")
    everyone = (carol, alice, bob, bob_laptop, dave)
    await quiet(everyone, 0.6)
    online = [("carol", "online"), ("alice", "online"), ("bob", "online"), ("dave", "online")]
    assert presence(carol.received) == online  # one announcement per transition, cluster-wide
    assert presence(alice.received) == online[1:]
    for client in everyone:  # the count each one saw last is the cluster-wide count
        assert of_type(client.received, "presence.diff")[-1]["payload"]["count"] == 4

    for client in (alice, bob, carol):
        await client.send("presence.query", {"conversation_id": "c1"})
        state = await client.expect("presence.state")
        assert state["payload"] == {"conversation_id": "c1", "user_ids": ["alice", "bob", "carol", "dave"],
                                    "count": 4, "next": None}

    await alice.send("typing", {"conversation_id": "c1"})
    await alice.send("typing", {"conversation_id": "c1"})  # a repeat only refreshes
    for client in (bob, bob_laptop, carol, dave):
        await client.expect("typing.stop", timeout=T)
    await quiet(everyone, 0.3)
    typing = [("typing.start", {"conversation_id": "c1", "user_id": "alice"}),
              ("typing.stop", {"conversation_id": "c1", "user_id": "alice"})]
    for client in (bob, bob_laptop, carol, dave):
        assert _typing(client) == typing
    assert _typing(alice) == []  # never to the typist's own sessions

    b.signal(signal.SIGKILL)  # bob and dave's sessions on b vanish without a word
    killed_at = time.monotonic()
    assert await presence_changes(carol, 1, timeout=ttl_s + T) == ([("dave", "offline")], 3)
    assert time.monotonic() - killed_at <= ttl_s + 0.8  # the expiry, then one batch
    await quiet((carol, alice), 0.5)
    for client in (carol, alice):
        assert presence(client.received)[-1:] == [("dave", "offline")]
        assert presence(client.received).count(("dave", "offline")) == 1
        assert ("bob", "offline") not in presence(client.received)  # bob's laptop on a is alive
    await carol.send("presence.query", {"conversation_id": "c1"})
    assert (await carol.expect("presence.state"))["payload"]["user_ids"] == ["alice", "bob", "carol"]


async def test_a_session_resumes_on_another_instance_without_a_durable_log(
        cluster: Cluster) -> None:
    a, b, c = cluster.start(3, resume_window_s=30)
    async with cluster.redis() as redis:
        client = await Client.connect(a)
        session = (await client.auth("alice"))["session_id"]
        await client.subscribe("c1", "c2")
        # a's snapshot is written after the reply, before these announcements are published
        assert (await presence_changes(client, 2))[0] == [("alice", "online")] * 2
        await client.close()

        client = await Client.connect(b)  # a clean close on a, the resume on b
        auth = await client.auth("alice", session_id=session, last_seq=5)
        assert auth == {"user_id": "alice", "session_id": session, "resumed": True,
                        "conversation_ids": ["c1", "c2"]}
        # Redis without Postgres: nothing to replay from, said honestly (CONTRACT §4)
        assert await client.next() == {"type": "replay.done", "payload": {"count": 0, "recovered": False}}
        await cluster.publish(redis, "c2", "message.new", n=1)
        assert (await client.expect("message.new"))["payload"] == {"conversation_id": "c2", "n": 1}

        b.signal(signal.SIGKILL)  # no close, no snapshot on the way out: the live snapshot must do
        await client.closed()
        client = await Client.connect(c)
        auth = await client.auth("alice", session_id=session)
        assert auth["resumed"] is True and auth["conversation_ids"] == ["c1", "c2"]
        await cluster.publish(redis, "c1", "message.new", n=2)
        assert (await client.expect("message.new"))["payload"] == {"conversation_id": "c1", "n": 2}
        assert a.http("GET", "/health")[1]["checks"] == {"redis": "ok"}
