"""Durable delivery end to end (CONTRACT §4, §5, §6): real gateway and relay
processes over real Postgres and Redis.

The helpers here (``Cluster``, ``Writer``, ``replay``...) are shared by
the other durable test modules: test_membership, test_pg_outage and
test_durable_chaos. Each test gets its own outbox and members tables and its
own Redis prefix (``pg_settings``), so tests never see each other's events.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import ujson
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from tests.e2e.harness import ROOT, SECRET, Client, GatewayProcess, T, async_wait_until, wait_until
from tests.support.tcp_proxy import ProxyThread
from tornado_gw.settings import Settings

pytestmark = pytest.mark.e2e

Event = tuple[str, str, dict[str, Any]]  # (channel, event_type, payload) as an API server writes it

# Short timers so outages and caches play out in seconds; a test overrides what it checks.
DURABLE = {"membership_cache_s": 0.5, "relay_poll_interval_s": 0.2, "probe_interval_s": 0.5,
           "probe_timeout_s": 1.5}
_INSERT = "INSERT INTO {outbox} (channel, event_type, payload) VALUES (%s, %s, %s) RETURNING id"


def message(conversation_id: str, n: int) -> Event:
    return (f"conv:{conversation_id}", "message.new", {"conversation_id": conversation_id, "n": n})


def notice(user_id: str, n: int) -> Event:
    return (f"user:{user_id}", "notification.new", {"user_id": user_id, "n": n})


def seqs(frames: Iterable[dict[str, Any]]) -> list[int]:
    return [frame["seq"] for frame in frames if "seq" in frame]


@dataclass
class Cluster:
    """Gateways, relays and the API server's writes over one test's tables and prefix."""

    settings: Settings
    redis_host: str
    start: Callable[..., GatewayProcess]

    def env(self, **overrides: Any) -> dict[str, Any]:
        settings = self.settings
        return {"REDIS_HOST": self.redis_host, "POSTGRES_DSN": settings.postgres_dsn,
                "prefix": settings.prefix, "outbox_table": settings.outbox_table,
                "members_table": settings.members_table, **DURABLE, **overrides}

    def gateway(self, **overrides: Any) -> GatewayProcess:
        return self.start(**self.env(**overrides))

    def relay(self, **overrides: Any) -> GatewayProcess:
        """A relay process, returned once it holds the lock (it serves no /health)."""
        relay = self.start("relay", wait=False, **self.env(**overrides))
        wait_until(lambda: "this relay is active" in relay.logs(), "the relay to take the lock",
                   check=relay._still_running)
        return relay

    def query(self, template: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        statement = sql.SQL(template).format(outbox=sql.Identifier(self.settings.outbox_table),
                                             members=sql.Identifier(self.settings.members_table))
        with psycopg.connect(self.settings.postgres_dsn or "", autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def insert(self, events: Iterable[Event]) -> list[int]:
        """Append outbox rows in one transaction, as an API server does; returns their ids."""
        statement = sql.SQL(_INSERT).format(outbox=sql.Identifier(self.settings.outbox_table))
        with psycopg.connect(self.settings.postgres_dsn or "", autocommit=True) as conn, conn.transaction():
            return [_one(conn.execute(statement, (ch, kind, Jsonb(payload)))) for ch, kind, payload in events]

    def add_members(self, *pairs: tuple[str, str]) -> None:
        """``(conversation_id, user_id)`` rows in the members table."""
        for conversation_id, user_id in pairs:
            self.query("INSERT INTO {members} VALUES (%s, %s) ON CONFLICT DO NOTHING",
                       (conversation_id, user_id))

    def published(self, ids: Sequence[int], timeout: float = 2 * T) -> list[int]:
        """The seqs of rows ``ids`` (in that order), once the relay has published them all."""
        found: dict[int, int] = {}

        def done() -> bool:
            rows = self.query("SELECT id, seq FROM {outbox} WHERE id = ANY(%s) AND published_at IS NOT NULL",
                              (list(ids),))
            found.update(rows)
            return len(found) == len(set(ids))

        wait_until(done, f"the relay to publish rows {ids[:3]}...", timeout)
        return [found[row_id] for row_id in ids]

    def channel_seqs(self, *channels: str) -> list[int]:
        """Every numbered seq on ``channels``, ascending."""
        rows = self.query("SELECT seq FROM {outbox} WHERE channel = ANY(%s) AND seq IS NOT NULL ORDER BY seq",
                          (list(channels),))
        return [row[0] for row in rows]

    def emit(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m tornado_gw emit ARGS`` with this cluster's Postgres and tables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WSGATEWAY_", "REDIS_", "POSTGRES_"))}
        # The gateway's environment; settings refuse POSTGRES_DSN without REDIS_HOST.
        env.update({"JWT_SECRET": SECRET, "POSTGRES_DSN": self.settings.postgres_dsn or "",
                    "REDIS_HOST": self.redis_host, "WSGATEWAY_OUTBOX_TABLE": self.settings.outbox_table})
        return subprocess.run([sys.executable, "-m", "tornado_gw", "emit", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=2 * T)


def _one(cur: psycopg.Cursor[Any]) -> int:
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def new_cluster(pg_settings: Settings, redis_host: str,
                start_gateway: Callable[..., GatewayProcess]) -> Cluster:
    """The ``cluster`` fixture of every durable test module (each declares
    ``cluster = pytest.fixture(new_cluster, name="cluster")``): this test's tables and prefix."""
    return Cluster(pg_settings, redis_host, start_gateway)


cluster = pytest.fixture(new_cluster, name="cluster")


def postgres_address(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    return f"{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}"


def through(proxy: ProxyThread, dsn: str) -> str:
    """``dsn`` pointed at ``proxy``."""
    host, _, port = proxy.proxy.address.rpartition(":")
    return make_conninfo(dsn, host=host, port=port)


async def joined(gateway: GatewayProcess, user_id: str, *conversation_ids: str) -> tuple[Client, str]:
    """A client authenticated as ``user_id`` and subscribed; returns it and its session id."""
    client = await Client.connect(gateway)
    session_id = (await client.auth(user_id))["session_id"]
    if conversation_ids:
        granted = await client.subscribe(*conversation_ids)
        assert granted["conversation_ids"] == list(conversation_ids), granted
    return client, session_id


async def replay(client: Client, timeout: float = T) -> tuple[list[int], dict[str, Any]]:
    """The seqs a client receives up to ``replay.done``, and that frame's payload."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = await client.next(max(0.01, deadline - time.monotonic()))
        if frame["type"] == "replay.done":
            return seqs(got), frame["payload"]
        got.append(frame)


async def numbered(client: Client, count: int, timeout: float = T) -> list[dict[str, Any]]:
    """The next ``count`` frames that carry a seq (presence and typing frames are skipped)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        frame = await client.next(max(0.01, deadline - time.monotonic()))
        if "seq" in frame:
            got.append(frame)
    return got


class Writer:
    """An API server that keeps committing outbox rows, round robin over ``channels``
    (which the test may extend while it runs)."""

    def __init__(self, cluster: Cluster, *channels: str, pause_s: float = 0.0) -> None:
        self.cluster = cluster
        self.channels = list(channels)
        self.pause_s = pause_s
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2 * T)

    def _run(self) -> None:
        statement = sql.SQL(_INSERT).format(outbox=sql.Identifier(self.cluster.settings.outbox_table))
        with psycopg.connect(self.cluster.settings.postgres_dsn or "", autocommit=True) as conn:
            while not self._stop.is_set():
                channel = self.channels[self.written % len(self.channels)]
                conn.execute(statement, (channel, "message.new", Jsonb({"n": self.written})))
                self.written += 1
                time.sleep(self.pause_s)


async def got_all(client: Client, cluster: Cluster, *channels: str) -> tuple[list[int], list[int]]:
    """Once every outbox row is published: the seqs ``client`` received on ``channels``
    (read until the last one arrived), and the seqs it should have, from the outbox."""
    cluster.published([row[0] for row in cluster.query("SELECT id FROM {outbox}")])
    expected = cluster.channel_seqs(*channels)
    wanted = set(expected)
    received = [seq for seq in seqs(client.received) if seq in wanted]
    while expected and (not received or received[-1] < expected[-1]):
        received += [seq for seq in seqs(await numbered(client, 1)) if seq in wanted]
    return received, expected


# --- outbox writers reach clients ---------------------------------------------------------

async def test_emit_and_publish_write_outbox_rows_the_relay_delivers_with_seq(cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"))
    gateway = cluster.gateway()
    cluster.relay()
    alice, _ = await joined(gateway, "alice", "c1")

    done = await asyncio.to_thread(cluster.emit, "--conversation", "c1", "--type", "message.new",
                                   "--payload", '{"text": "from emit"}')
    assert done.returncode == 0, done.stderr
    emitted = ujson.loads(done.stdout)["id"]
    status, body = gateway.http("POST", "/publish", {"channel": "conv:c1", "type": "message.new",
                                                     "payload": {"text": "from publish"}})
    assert status == 202 and set(body) == {"id"}, body
    published = body["id"]
    assert published > emitted

    frames = await numbered(alice, 2)
    assert [f["payload"] for f in frames] == [{"text": "from emit"}, {"text": "from publish"}]
    assert all(f["type"] == "message.new" for f in frames)
    assert seqs(frames) == cluster.published([emitted, published])
    await alice.close()


# --- replay from Postgres -----------------------------------------------------------------

async def test_resume_on_the_other_instance_replays_exactly_the_missed_events(cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"), ("c2", "alice"), ("c3", "alice"))
    first, second = cluster.gateway(), cluster.gateway()
    cluster.relay()
    alice, session = await joined(first, "alice", "c1", "c2")
    cluster.insert([message("c1", 0), message("c2", 1)])
    seen = seqs(await numbered(alice, 2))
    await alice.close()
    # While alice is away: her two conversations, her user channel, and what she must not get.
    away = [message("c1", 2), notice("alice", 3), message("c3", 4), message("c2", 5), notice("bob", 6),
            message("c1", 7)]
    mine = {"conv:c1", "conv:c2", "user:alice"}
    numbered_away = zip(cluster.published(cluster.insert(away)), away, strict=True)
    missed = [seq for seq, (channel, _, _) in numbered_away if channel in mine]

    alice = await Client.connect(second)
    auth = await alice.auth("alice", session_id=session, last_seq=seen[-1])
    assert auth["resumed"] is True and auth["session_id"] == session
    assert sorted(auth["conversation_ids"]) == ["c1", "c2"]
    replayed, done = await replay(alice)
    assert replayed == missed
    assert done == {"count": len(missed), "recovered": True}
    live = cluster.published(cluster.insert([message("c2", 8)]))
    assert seqs(await numbered(alice, 1)) == live
    await alice.close()


async def test_subscribe_with_last_seq_replays_that_conversation_from_postgres(cluster: Cluster) -> None:
    cluster.add_members(("c1", "bob"), ("c2", "bob"))
    gateway = cluster.gateway()
    cluster.relay()
    everything = cluster.published(cluster.insert(
        [message("c1", 0), message("c2", 1), message("c1", 2), notice("bob", 3), message("c1", 4)]))
    bob = await Client.connect(gateway)
    await bob.auth("bob")  # a new session: nothing to resume, only last_seq
    await bob.send("subscribe", {"conversation_ids": ["c1"], "last_seq": everything[0]})
    assert (await bob.expect("subscribed"))["payload"]["conversation_ids"] == ["c1"]
    replayed, done = await replay(bob)
    assert replayed == [everything[2], everything[4]]  # c1 only: the listed conversations
    assert done == {"count": 2, "recovered": True}
    await bob.close()


async def test_live_events_during_a_resume_are_neither_lost_nor_duplicated(cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"))
    first, second = cluster.gateway(), cluster.gateway()
    cluster.relay()
    alice, session = await joined(first, "alice", "c1")
    with Writer(cluster, "conv:c1", pause_s=0.002) as writer:
        before = seqs(await numbered(alice, 20))
        await alice.close()
        written = writer.written
        await async_wait_until(lambda: writer.written >= written + 20, "events while alice is away")
        alice = await Client.connect(second)
        await alice.auth("alice", session_id=session, last_seq=before[-1])
        replayed, done = await replay(alice)  # the relay keeps publishing meanwhile
        assert done == {"count": len(replayed), "recovered": True} and replayed
        await numbered(alice, 20)
    after, expected = await got_all(alice, cluster, "conv:c1")
    assert before + after == expected, "a gap, a duplicate or disorder"
    await alice.close()


async def test_replay_past_replay_max_events_says_not_recovered(cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"))
    first, second = cluster.gateway(), cluster.gateway(replay_max_events=5)
    cluster.relay()
    alice, session = await joined(first, "alice", "c1")
    await alice.close()
    cluster.published(cluster.insert([message("c1", n) for n in range(6)]))
    alice = await Client.connect(second)
    await alice.auth("alice", session_id=session, last_seq=0)
    assert await replay(alice) == ([], {"count": 0, "recovered": False})
    live = cluster.published(cluster.insert([message("c1", 6)]))
    assert seqs(await numbered(alice, 1)) == live
    await alice.close()


# --- Redis outage: gap fill from Postgres --------------------------------------------------

async def test_events_published_while_redis_was_cut_reach_connected_clients_once_in_order(
        cluster: Cluster) -> None:
    cluster.add_members(("c1", "alice"), ("c2", "alice"), ("c1", "bob"))
    with ProxyThread(cluster.redis_host) as proxy:
        gateway = cluster.gateway(REDIS_HOST=proxy.proxy.address)
        cluster.relay()  # its own, direct Redis: it keeps publishing during the cut
        alice, _ = await joined(gateway, "alice", "c1", "c2")
        bob, _ = await joined(gateway, "bob", "c1")
        with Writer(cluster, "conv:c1", "conv:c2") as writer:
            await numbered(alice, 10)
            proxy.cut()
            writer.channels.append("user:alice")  # a channel with no event before the cut
            wait_until(lambda: gateway.http("GET", "/health")[1]["checks"]["redis"] == "unreachable",
                       "/health to report Redis unreachable")
            wait_until(lambda: len(cluster.channel_seqs("user:alice")) >= 20,
                       "the relay to publish events while the gateway is cut off")
            proxy.restore()
            wait_until(lambda: gateway.http("GET", "/health")[1]["status"] == "ok", "/health to be ok again",
                       2 * T)
            written = writer.written
            await async_wait_until(lambda: writer.written >= written + 50, "more events after the outage")
        for client, channels in ((alice, ("conv:c1", "conv:c2", "user:alice")), (bob, ("conv:c1",))):
            received, expected = await got_all(client, cluster, *channels)
            assert received == expected, f"{client}: missing {sorted(set(expected) - set(received))[:10]}"
