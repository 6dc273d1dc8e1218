"""Presence in rooms of any size, on two instances sharing one Redis (CONTRACT §3 v2):
batched ``presence.diff`` frames, the cluster-wide count, large rooms, paged queries."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.cluster import Cluster, of_type, presence, presence_changes
from tests.e2e.harness import Client, GatewayProcess, T, async_wait_until, joined
from tests.support.tcp_proxy import ProxyThread

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(start_gateway: Callable[..., GatewayProcess], redis_host: str,
            redis_prefix: str) -> Iterator[Cluster]:
    yield from Cluster.running(start_gateway, redis_host, redis_prefix)


async def _observer(gateway: GatewayProcess) -> Client:
    """A client in c1 that has seen its own join (its first diff)."""
    observer = await joined(gateway, "observer", "c1")
    await presence_changes(observer, 1)
    return observer


async def test_joins_on_another_instance_arrive_together_in_one_batch(cluster: Cluster) -> None:
    a, b = cluster.start(2, presence_batch_ms=600)
    observer = await _observer(a)
    users = [f"u{n}" for n in range(6)]
    clients = await asyncio.gather(*(joined(b, user, "c1") for user in users))
    changes, count = await presence_changes(observer, len(users))
    assert sorted(changes) == [(user, "online") for user in users] and count == 7
    assert len(of_type(observer.received, "presence.diff")) <= 3  # its own, then one batch (two at a seam)
    await asyncio.gather(*(client.silent(0.8) for client in clients))
    for user, client in zip(users, clients, strict=True):  # joiners get the diff too, their own join in it
        assert (user, "online") in presence(client.received)
        assert of_type(client.received, "presence.diff")[-1]["payload"]["count"] == 7


async def test_a_user_who_joins_and_leaves_within_one_batch_is_in_neither_list(cluster: Cluster) -> None:
    a, b = cluster.start(2, presence_batch_ms=1000)
    observer = await _observer(a)
    ghost = await joined(b, "ghost", "c1")
    await ghost.send("unsubscribe", {"conversation_ids": ["c1"]})
    await ghost.expect("unsubscribed")
    await joined(b, "real", "c1")
    assert await presence_changes(observer, 1, timeout=T + 1) == ([("real", "online")], 2)
    assert presence(await observer.silent(1.2)) == []


async def test_a_leave_never_reaches_a_subscriber_before_the_join_it_follows(cluster: Cluster) -> None:
    a, b = cluster.start(2, presence_batch_ms=250)
    observer = await _observer(a)
    flicker = await joined(b, "flicker")
    # each join and leave a little more than a batch apart (250 ms, flushed within a quarter of
    # it): they go out in consecutive diffs, not netted away within one batch (CONTRACT §3)
    for _ in range(5):
        await flicker.subscribe("c1")
        await asyncio.sleep(0.35)
        await flicker.send("unsubscribe", {"conversation_ids": ["c1"]})
        await flicker.expect("unsubscribed")
        await asyncio.sleep(0.35)
    await observer.silent(1.0)
    statuses = [status for user, status in presence(observer.received) if user == "flicker"]
    assert statuses and statuses[0] == "online" and statuses[-1] == "offline"
    assert all(first != second for first, second in itertools.pairwise(statuses)), statuses
    assert of_type(observer.received, "presence.diff")[-1]["payload"]["count"] == 1


async def test_a_large_room_sends_counts_only_and_the_whole_list_when_it_shrinks(cluster: Cluster) -> None:
    """CONTRACT §3: above ``presence_list_max`` diffs carry the count only, at most once per
    ``presence_count_interval_s``; back under it, one ``presence.state`` with everyone."""
    a, b = cluster.start(2, presence_list_max=3, presence_count_interval_s=1)
    observer = await _observer(a)
    crowd = {user: await joined(b, user, "c1") for user in ("u1", "u2", "u3")}
    changes, count = await presence_changes(observer, 3)
    assert sorted(changes) == [("u1", "online"), ("u2", "online"), ("u3", "online")] and count == 4
    crowd["u4"] = await joined(b, "u4", "c1")
    crowd["u5"] = await joined(b, "u5", "c1")
    diff = await observer.expect("presence.diff", timeout=T)
    assert diff["payload"] == {"conversation_id": "c1", "joins": [], "leaves": [], "count": 6}
    for user in ("u5", "u4", "u3"):
        await crowd.pop(user).send("unsubscribe", {"conversation_ids": ["c1"]})
    state = await observer.expect("presence.state", timeout=T)
    assert state["payload"] == {"conversation_id": "c1", "user_ids": ["observer", "u1", "u2"], "count": 3,
                                "next": None}
    await crowd.pop("u2").send("unsubscribe", {"conversation_ids": ["c1"]})
    assert await presence_changes(observer, 1) == ([("u2", "offline")], 2)


async def test_typing_in_a_large_room_is_accepted_and_not_fanned_out(cluster: Cluster) -> None:
    a, b = cluster.start(2, presence_list_max=2)
    alice = await joined(a, "alice", "c1")
    bob = await joined(b, "bob", "c1")
    carol = await joined(b, "carol", "c1")
    await presence_changes(alice, 3)
    await alice.send("typing", {"conversation_id": "c1"})
    for client in (bob, carol, alice):
        quiet = await client.silent(0.5)
        assert [f for f in quiet if f["type"].startswith("typing") or f["type"] == "error"] == []


async def test_a_crashed_instances_users_leave_and_the_count_follows(cluster: Cluster) -> None:
    ttl_s = 1.5
    a, b = cluster.start(2, presence_ttl_s=ttl_s)
    observer = await _observer(a)
    for user in ("u1", "u2"):
        await joined(b, user, "c1")
    assert (await presence_changes(observer, 2))[1] == 3
    b.signal(signal.SIGKILL)
    changes, count = await presence_changes(observer, 2, timeout=ttl_s + T)
    assert sorted(changes) == [("u1", "offline"), ("u2", "offline")] and count == 1


async def test_an_instance_back_from_a_redis_outage_learns_the_count_first(
        cluster: Cluster, redis_host: str) -> None:
    """Transitions published while an instance was cut off are lost to it; the count it
    reads back when Redis returns is right, and so is its next diff."""
    with ProxyThread(redis_host) as proxy:
        [direct] = cluster.start(1)
        [behind] = cluster.start(1, redis_host=proxy.proxy.address, probe_interval_s=0.3, probe_timeout_s=0.5)
        observer = await _observer(behind)
        proxy.cut()
        await async_wait_until(lambda: behind.http("GET", "/health")[1]["status"] == "degraded",
                               "the instance behind the proxy to notice the outage")
        for user in ("u1", "u2"):
            await joined(direct, user, "c1")
        proxy.restore()
        diff = await observer.expect("presence.diff", timeout=3 * T)
        assert diff["payload"]["count"] == 3
        await observer.send("presence.query", {"conversation_id": "c1"})
        assert (await observer.expect("presence.state"))["payload"]["user_ids"] == ["observer", "u1", "u2"]


async def test_presence_query_pages_through_the_users_of_both_instances(cluster: Cluster) -> None:
    a, b = cluster.start(2)
    observer = await _observer(a)
    users = [f"u{n}" for n in range(6)]
    await asyncio.gather(*(joined(a if n % 2 else b, user, "c1") for n, user in enumerate(users)))
    await presence_changes(observer, len(users))
    pages, after = [], None
    for _ in range(4):
        await observer.send("presence.query", {"conversation_id": "c1", "limit": 3, "after": after})
        payload = (await observer.expect("presence.state"))["payload"]
        assert payload["count"] == 7
        pages.append(payload["user_ids"])
        after = payload["next"]
        if after is None:
            break
    assert pages == [["observer", "u0", "u1"], ["u2", "u3", "u4"], ["u5"]]
    await observer.send("presence.query", {"conversation_id": "c1", "limit": 1001})
    error = await observer.expect("error")
    assert error["payload"]["code"] == "invalid_message" and error["payload"]["ref_type"] == "presence.query"
