"""The promise of issue 4, under fire: two gateways, one relay, Postgres and Redis.

API-server writers keep committing outbox rows (some transactions held open, so
ids commit out of order). Meanwhile every client drops its connection at random
moments, cleanly or not, and resumes on the OTHER instance with its session and
the highest seq it has seen; the relay is SIGKILLed once and restarted. At the
end each client must have received every seq of its channels exactly once and
in order, as the outbox numbered them (CONTRACT §4). ``CHAOS_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.e2e.harness import Client, GatewayProcess, T
from tests.e2e.test_durable import Cluster, joined, new_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
cluster = pytest.fixture(new_cluster, name="cluster")

USERS = 20
CONVERSATIONS = 4
WRITE_S = 15.0
WRITERS = 2


@dataclass
class Participant:
    """One user's client as it roams between the gateways; ``seqs`` spans all its connections."""

    user_id: str
    conversations: tuple[str, ...]
    client: Client
    session_id: str
    home: int
    seqs: list[int] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)

    @property
    def channels(self) -> list[str]:
        return [f"conv:{cid}" for cid in self.conversations] + [f"user:{self.user_id}"]

    def record(self, frame: dict[str, Any]) -> None:
        if "seq" in frame:
            self.seqs.append(frame["seq"])
        elif frame["type"] == "replay.done":
            self.replays.append(frame["payload"])


def conversations_of(index: int) -> tuple[str, ...]:
    return (f"c{index % CONVERSATIONS}", f"c{(index + 1) % CONVERSATIONS}")


def write(cluster: Cluster, rng: random.Random, stop: threading.Event) -> None:
    """An API server: small transactions, now and then one held open while others commit."""
    statement = sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES (%s, %s, %s)").format(
        sql.Identifier(cluster.settings.outbox_table))
    with psycopg.connect(cluster.settings.postgres_dsn or "", autocommit=True) as conn:
        while not stop.is_set():
            with conn.transaction():
                for _ in range(rng.randint(1, 3)):
                    if rng.random() < 0.8:
                        channel = f"conv:c{rng.randrange(CONVERSATIONS)}"
                    else:
                        channel = f"user:u{rng.randrange(USERS)}"
                    conn.execute(statement, (channel, "message.new", Jsonb({"r": rng.random()})))
                if rng.random() < 0.05:
                    time.sleep(0.05)  # a late commit: higher ids are committed meanwhile (PITFALLS 3)
            time.sleep(rng.uniform(0.005, 0.02))


async def read_for(participant: Participant, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            participant.record(await participant.client.next(left))
        except (asyncio.TimeoutError, TimeoutError):
            return


async def resume_elsewhere(participant: Participant, gateways: Sequence[GatewayProcess]) -> None:
    participant.home = 1 - participant.home
    client = await Client.connect(gateways[participant.home])
    auth = await client.auth(participant.user_id, session_id=participant.session_id,
                             last_seq=max(participant.seqs, default=0))
    assert auth["resumed"] is True and auth["session_id"] == participant.session_id, auth
    assert auth["conversation_ids"] == sorted(participant.conversations), auth
    participant.client = client


async def roam(participant: Participant, gateways: Sequence[GatewayProcess], rng: random.Random,
               until: float) -> None:
    """Read, drop the connection (close or abort), come back on the other instance; repeat."""
    while time.monotonic() < until:
        await read_for(participant, rng.uniform(0.3, 2.5))
        if rng.random() < 0.5:
            await participant.client.close()
        else:
            participant.client.ws.transport.abort()  # no close frame: as a dropped network
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        await resume_elsewhere(participant, gateways)


async def kill_relay_once(cluster: Cluster, relay: GatewayProcess, at: float) -> GatewayProcess:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    relay.signal(signal.SIGKILL)
    await asyncio.to_thread(relay.wait_exit)
    return await asyncio.to_thread(cluster.relay)


async def read_until_complete(participant: Participant, expected: list[int]) -> None:
    """Read until the last expected seq arrived (bounded: a missing one fails the comparison)."""
    deadline = time.monotonic() + 4 * T
    wanted = set(expected)
    while expected and not wanted.issubset(participant.seqs) and time.monotonic() < deadline:
        await read_for(participant, 0.2)


async def test_every_client_gets_every_seq_once_in_order_through_roaming_and_a_relay_kill(
        cluster: Cluster) -> None:
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    users = [(f"u{i}", conversations_of(i)) for i in range(USERS)]
    cluster.add_members(*((cid, user_id) for user_id, cids in users for cid in cids))
    gateways = [cluster.gateway(), cluster.gateway()]
    relay = cluster.relay()
    participants = []
    for index, (user_id, cids) in enumerate(users):
        client, session_id = await joined(gateways[index % 2], user_id, *cids)
        participants.append(Participant(user_id, cids, client, session_id, index % 2))

    stop = threading.Event()
    writers = [asyncio.ensure_future(asyncio.to_thread(write, cluster, random.Random(rng.random()), stop))
               for _ in range(WRITERS)]
    until = time.monotonic() + WRITE_S
    killer = asyncio.ensure_future(kill_relay_once(cluster, relay, until - WRITE_S * rng.uniform(0.3, 0.7)))
    await asyncio.gather(*(roam(p, gateways, random.Random(rng.random()), until) for p in participants))
    stop.set()
    await asyncio.gather(*writers, killer)

    rows = cluster.query("SELECT id FROM {outbox}")
    cluster.published([row[0] for row in rows], timeout=6 * T)
    # The run did what it claims: late commits numbered out of id order, everyone roamed.
    late = cluster.query("SELECT count(*) FROM (SELECT seq < lag(seq) OVER (ORDER BY id) AS back "
                         "FROM {outbox}) AS numbered WHERE back")
    assert late[0][0] > 0, f"seed {seed}: no transaction committed late"
    assert all(p.replays for p in participants), f"seed {seed}: a client never resumed"
    channel_of = dict(cluster.query("SELECT seq, channel FROM {outbox}"))
    for p in participants:
        expected = cluster.channel_seqs(*p.channels)
        await read_until_complete(p, expected)
        for channel in p.channels:
            got = [seq for seq in p.seqs if channel_of[seq] == channel]
            wanted = cluster.channel_seqs(channel)
            assert got == wanted, (f"seed {seed}: {p.user_id} on {channel}: missing "
                                   f"{sorted(set(wanted) - set(got))[:5]}, duplicates or disorder")
        assert len(p.seqs) == len(expected), f"seed {seed}: {p.user_id} got events of other channels"
        assert all(r["recovered"] for r in p.replays), (seed, p.user_id, p.replays)
        await p.client.close()
