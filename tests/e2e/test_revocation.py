"""Access that changes while clients are connected, end to end (CONTRACT §2, §3 v2): real
gateways (two where it matters), relay, Postgres and Redis.

The API server removes a member and writes ``membership.removed`` in one transaction
(``remove_member``, the SQL of docs/delivery.md); the removed user then gets the
conversation's events below the removal, the removal, and nothing above it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.e2e.harness import Client, GatewayProcess, T, token, wait_until
from tests.e2e.test_durable import Cluster, joined, message, new_cluster, numbered, replay, seqs
from tests.support.tcp_proxy import ProxyThread
from tornado_gw.core.ids import connections_key

pytestmark = pytest.mark.e2e
cluster = pytest.fixture(new_cluster, name="cluster")
REMOVED = "membership.removed"


def remove_member(cluster: Cluster, conversation_id: str, user_id: str) -> int:
    """The API server's transaction (docs/delivery.md): the member row goes and the event is
    written together, so the relay numbers the removal after every event the user may see."""
    names = {"outbox": sql.Identifier(cluster.settings.outbox_table),
             "members": sql.Identifier(cluster.settings.members_table)}
    statement = sql.SQL(
        "WITH removed AS (DELETE FROM {members} WHERE conversation_id = %(cid)s AND user_id = %(user)s "
        "RETURNING user_id) "
        "INSERT INTO {outbox} (channel, event_type, payload) "
        "SELECT 'user:' || user_id, 'membership.removed', %(payload)s FROM removed RETURNING id")
    params = {"cid": conversation_id, "user": user_id, "payload": Jsonb({"conversation_id": conversation_id})}
    with psycopg.connect(cluster.settings.postgres_dsn or "", autocommit=True) as conn:
        row = conn.execute(statement.format(**names), params).fetchone()  # one statement: one transaction
    assert row is not None, f"{user_id} was not a member of {conversation_id}"
    return int(row[0])


def removal_then(cluster: Cluster, user: str, cid: str, before: int = 1, after: int = 1,
                 elsewhere: str = "c2") -> tuple[list[int], int, list[int], int]:
    """Messages of ``cid``, its removal for ``user``, more of ``cid``, one of ``elsewhere``:
    their seqs once the relay has published them all."""
    first = cluster.insert([message(cid, n) for n in range(before)])
    cut = remove_member(cluster, cid, user)
    rest = cluster.insert([message(cid, 100 + n) for n in range(after)] + [message(elsewhere, 200)])
    published = cluster.published([*first, cut, *rest])
    return published[:before], published[before], published[before + 1:-1], published[-1]


def two_gateways(cluster: Cluster, **settings: Any) -> tuple[GatewayProcess, GatewayProcess]:
    """Alice a member of c1 and c2; two gateways and a relay."""
    cluster.add_members(("c1", "alice"), ("c2", "alice"))
    first, second = cluster.gateway(**settings), cluster.gateway(**settings)
    cluster.relay()
    return first, second


async def online(client: Client, cid: str, expected: list[str]) -> list[str]:
    """``presence.query`` until it answers ``expected`` or ``T`` passes (each instance writes
    its own connections' leaves); the last answer."""
    deadline = time.monotonic() + T
    while True:
        await client.send("presence.query", {"conversation_id": cid})
        users: list[str] = (await client.expect("presence.state"))["payload"]["user_ids"]
        if users == expected or time.monotonic() > deadline:
            return users
        await asyncio.sleep(0.05)


def kinds_and_seqs(frames: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(f["type"], f["seq"]) for f in frames if "seq" in f]


async def test_a_live_removal_cuts_the_stream_on_every_connection_of_both_instances(cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"), ("c2", "alice"), ("c1", "bob"))
    # Grants cached far longer than the test: the removal must drop alice's, not its expiry.
    first, second = cluster.gateway(membership_cache_s=60), cluster.gateway(membership_cache_s=60)
    cluster.relay()
    a1, _ = await joined(first, "alice", "c1", "c2")
    a2, _ = await joined(second, "alice", "c1", "c2")
    bob, _ = await joined(second, "bob", "c1")
    below, removal, above, other = removal_then(cluster, "alice", "c1")
    for client in (a1, a2):
        got = await numbered(client, 3)
        assert kinds_and_seqs(got) == [("message.new", below[0]), (REMOVED, removal), ("message.new", other)]
        assert got[1]["payload"] == {"conversation_id": "c1"}
    assert seqs(await numbered(bob, 2)) == [below[0], above[0]]
    assert await online(bob, "c1", ["bob"]) == ["bob"]  # alice has left, on both instances
    later = cluster.published(cluster.insert([message("c1", 300), message("c2", 301)]))
    assert seqs(await numbered(a1, 1)) == [later[1]]  # nothing more of c1

    assert (await a1.subscribe("c1"))["denied"] == ["c1"]  # no cached grant brings it back
    cluster.add_members(("c1", "alice"))  # re-added: a new subscribe works
    assert (await a1.subscribe("c1"))["conversation_ids"] == ["c1"]
    again = cluster.published(cluster.insert([message("c1", 400)]))
    assert seqs(await numbered(a1, 1)) == again
    for client in (a1, a2, bob):
        await client.close()


async def test_a_removal_while_offline_is_replayed_up_to_its_place_on_resume(cluster: Cluster) -> None:
    """Issue 12: the resume used to re-check membership and drop the events below the removal."""
    first, second = two_gateways(cluster)
    alice, session = await joined(first, "alice", "c1", "c2")
    await alice.close()
    below, removal, _above, other = removal_then(cluster, "alice", "c1", before=2)

    alice = await Client.connect(second)
    auth = await alice.auth("alice", session_id=session, last_seq=0)
    assert auth["resumed"] is True and auth["conversation_ids"] == ["c2"]
    assert await replay(alice) == ([*below, removal, other], {"count": 4, "recovered": True})
    live = cluster.published(cluster.insert([message("c1", 500), message("c2", 501)]))
    assert seqs(await numbered(alice, 1)) == [live[1]]
    await alice.close()


async def test_a_removal_written_during_a_resume_replay_cuts_at_its_place(cluster: Cluster) -> None:
    """Wherever the removal lands (before the membership check, in the replay read, or held
    live while the replay loads), the client sees the same stream."""
    # A Postgres read slower than probe_timeout_s (1.5 s here) is a recovered: false, which
    # a loaded machine can reach with 300 rows; this test is about the cut, not outages.
    first, second = two_gateways(cluster, probe_timeout_s=5)
    alice, session = await joined(first, "alice", "c1", "c2")
    await alice.close()
    below = cluster.published(cluster.insert([message("c1", n) for n in range(300)]))
    alice = await Client.connect(second)
    await alice.send("auth", {"token": token("alice"), "session_id": session, "last_seq": 0})
    cut = cluster.published([remove_member(cluster, "c1", "alice")])[0]
    above = cluster.published(cluster.insert([message("c1", 1000 + n) for n in range(5)]))
    last = cluster.published(cluster.insert([message("c2", 2000)]))[0]
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1].get("seq") != last:
        frames.append(await alice.next(timeout=2 * T))
    numbered_frames = kinds_and_seqs(frames)
    done = [f["payload"] for f in frames if f["type"] == "replay.done"]
    assert numbered_frames == [("message.new", s) for s in below] + [(REMOVED, cut), ("message.new", last)], (
        f"replay.done {done}, the other frames: {[f for f in frames if 'seq' not in f]}")
    assert not set(above) & {seq for _, seq in numbered_frames}
    await alice.close()


async def test_subscribe_with_last_seq_replays_up_to_the_removal(cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"), ("c2", "alice"))
    gateway = cluster.gateway()
    cluster.relay()
    below, removal, _above, _other = removal_then(cluster, "alice", "c1")
    alice, _ = await joined(gateway, "alice")
    await alice.send("subscribe", {"conversation_ids": ["c1"], "last_seq": 0})
    assert (await alice.next())["payload"] == {"conversation_ids": [], "denied": ["c1"]}
    assert await replay(alice) == ([*below, removal], {"count": 2, "recovered": True})
    await alice.close()


async def test_a_removal_during_a_redis_outage_is_applied_by_the_gap_fill(cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"), ("c2", "alice"), ("c1", "bob"))
    with ProxyThread(cluster.redis_host) as proxy:
        gateway = cluster.gateway(REDIS_HOST=proxy.proxy.address)
        cluster.relay()  # its own, direct Redis: it publishes during the cut
        alice, _ = await joined(gateway, "alice", "c1", "c2")
        bob, _ = await joined(gateway, "bob", "c1")
        proxy.cut()
        wait_until(lambda: gateway.http("GET", "/health")[1]["checks"]["redis"] == "unreachable",
                   "/health to report Redis unreachable")
        below, removal, above, other = removal_then(cluster, "alice", "c1")
        proxy.restore()
        got = await numbered(alice, 3, timeout=3 * T)
        assert kinds_and_seqs(got) == [("message.new", below[0]), (REMOVED, removal), ("message.new", other)]
        assert seqs(await numbered(bob, 2, timeout=3 * T)) == [below[0], above[0]]
        after = cluster.published(cluster.insert([message("c1", 600), message("c2", 601)]))
        assert seqs(await numbered(alice, 1)) == [after[1]]
        await alice.close()
        await bob.close()


async def test_server_unsubscribe_and_disconnect_reach_both_instances(cluster: Cluster) -> None:
    first, second = two_gateways(cluster)
    a1, session = await joined(first, "alice", "c1", "c2")
    a2, _ = await joined(second, "alice", "c1", "c2")
    status, body = first.http("POST", "/unsubscribe", {"user_id": "alice", "conversation_ids": ["c1"]})
    assert (status, body) == (202, {})
    for client in (a1, a2):
        frame = await client.expect("unsubscribed", timeout=1.0)  # within a second, on both
        assert frame["payload"] == {"conversation_ids": ["c1"], "reason": "server"}
    live = cluster.published(cluster.insert([message("c1", 0), message("c2", 1)]))
    assert seqs(await numbered(a2, 1)) == [live[1]]

    status, _ = second.http("POST", "/disconnect", {"user_id": "alice", "reason": "banned"})
    assert status == 202
    for client in (a1, a2):
        assert await client.closed(timeout=1.0) == (4010, "banned")
    again = await Client.connect(first)
    assert (await again.auth("alice", session_id=session, last_seq=0))["resumed"] is False
    await again.close()


def _slots_held(cluster: Cluster, user_id: str) -> int:
    """The user's live connection slots in Redis, every instance's."""
    host, _, port = cluster.redis_host.rpartition(":")
    with redis.Redis(host, int(port)) as client:
        return int(client.zcard(connections_key(cluster.settings.prefix, user_id)))


async def test_the_connection_cap_counts_both_instances_and_heals_after_a_kill(cluster: Cluster) -> None:
    ttl_s = 2.0
    first, second = (cluster.gateway(max_connections_per_user=2, presence_ttl_s=ttl_s) for _ in range(2))
    on_first, _ = await joined(first, "alice")
    await joined(second, "alice")
    # a claim never holds up `auth` (runtime/slots.py): the cap counts the slots once they landed
    wait_until(lambda: _slots_held(cluster, "alice") == 2, "both instances' claims to land")
    third = await Client.connect(first)
    await third.auth("alice")
    assert (await third.closed())[0] == 4011
    bob, _ = await joined(first, "bob")  # another user is not affected

    assert second.proc is not None
    second.proc.send_signal(signal.SIGKILL)  # its slot is never released...
    second.proc.wait(T)
    await asyncio.sleep(ttl_s + 0.5)  # ...and expires
    healed = await Client.connect(first)
    await healed.auth("alice")
    assert await healed.silent(0.5) == []  # not closed
    for client in (on_first, bob, healed):
        await client.close()


async def test_a_drained_instance_gives_its_slots_back_at_once(cluster: Cluster) -> None:
    first, second = (cluster.gateway(max_connections_per_user=1) for _ in range(2))  # slots live 90 s
    alice, _ = await joined(first, "alice")
    first.signal(signal.SIGTERM)
    assert (await alice.closed())[0] == 1001
    assert first.wait_exit(2 * T) == 0
    again = await Client.connect(second)  # the client reconnects elsewhere at once
    await again.auth("alice")
    assert await again.silent(0.5) == [] and again.ws.close_code is None
    await again.close()
