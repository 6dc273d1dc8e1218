"""Issue 4 figures: relay throughput (commit -> PUBLISH) and replay time for 1,000 missed events.

Run from the repository root:  .venv/bin/python -m bench.durable
Real processes (relay, two gateways), local Postgres and Redis; own tables and prefix, dropped at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from uuid import uuid4

import psycopg
import redis.asyncio
import ujson
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.e2e.harness import Client, GatewayProcess, token, wait_until
from tornado_gw.migrate import migrate_sync
from tornado_gw.settings import Settings

DSN = "postgresql://root@127.0.0.1:5432/postgres"
REDIS = "127.0.0.1:6379"
SUFFIX = uuid4().hex[:8]
S = Settings(postgres_dsn=DSN, outbox_table=f"outbox_m{SUFFIX}", members_table=f"members_m{SUFFIX}",
             prefix=f"m{SUFFIX}:")
ENV = {"REDIS_HOST": REDIS, "POSTGRES_DSN": DSN, "prefix": S.prefix, "outbox_table": S.outbox_table,
       "members_table": S.members_table, "LOGGER_LEVEL": "warning"}
INSERT = sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES (%s, %s, %s) RETURNING id").format(
    sql.Identifier(S.outbox_table))


def insert(rows: int, channel: str, conn: psycopg.Connection) -> float:
    """Commit ``rows`` rows in one transaction; returns the commit time."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(INSERT, [(channel, "message.new", Jsonb({"n": n})) for n in range(rows)])
    return time.monotonic()


async def throughput(conn: psycopg.Connection, rows: int) -> float:
    """rows/s from the COMMIT of ``rows`` rows to the last of them PUBLISHed (seen by a subscriber)."""
    client = redis.asyncio.Redis.from_url(f"redis://{REDIS}")
    pubsub = client.pubsub()
    await pubsub.subscribe(S.prefix + "conv:tp")
    await pubsub.get_message(timeout=2)  # confirmation
    committed = insert(rows, "conv:tp", conn)
    seen = 0
    while seen < rows:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
        assert message is not None, f"only {seen}/{rows} published"
        seen += 1
    elapsed = time.monotonic() - committed
    await pubsub.aclose()
    await client.aclose()
    return rows / elapsed


async def latency(conn: psycopg.Connection, rate: int, seconds: float) -> list[float]:
    """Commit-to-receipt latency (ms) of single-row transactions at ``rate`` rows/s."""
    client = redis.asyncio.Redis.from_url(f"redis://{REDIS}")
    pubsub = client.pubsub()
    await pubsub.subscribe(S.prefix + "conv:lat")
    await pubsub.get_message(timeout=2)
    committed: dict[int, float] = {}
    received: dict[int, float] = {}

    async def reader() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                received[ujson.loads(message["data"])["payload"]["n"]] = time.monotonic()

    task = asyncio.create_task(reader())
    total = int(rate * seconds)
    for n in range(total):
        with conn.transaction():
            conn.execute(INSERT, ("conv:lat", "message.new", Jsonb({"n": n})))
        committed[n] = time.monotonic()
        await asyncio.sleep(1 / rate)
    deadline = time.monotonic() + 10
    while len(received) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    await pubsub.aclose()
    await client.aclose()
    return sorted((received[n] - committed[n]) * 1000 for n in committed if n in received)


async def replay_times(gateways: list[GatewayProcess], conn: psycopg.Connection, rounds: int) -> list[float]:
    """Seconds from sending a resume ``auth`` to ``replay.done`` with 1,000 missed events."""
    client = await Client.connect(gateways[0])
    session = (await client.auth("alice"))["session_id"]
    await client.subscribe("r1")
    last_seq = 0
    times = []
    for round_no in range(rounds):
        await client.close()
        insert(1000, "conv:r1", conn)
        wait_until(lambda: conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE channel = 'conv:r1' AND "
                                                "published_at IS NULL").format(
            sql.Identifier(S.outbox_table))).fetchone()[0] == 0, "published", 30)
        client = await Client.connect(gateways[(round_no + 1) % 2])  # the other instance each time
        started = time.monotonic()
        await client.send("auth", {"token": token("alice"),
                                   "session_id": session, "last_seq": last_seq})
        while True:
            frame = await client.next(30)
            if "seq" in frame:
                last_seq = frame["seq"]
            elif frame["type"] == "replay.done":
                break
        times.append(time.monotonic() - started)
        assert frame["payload"] == {"count": 1000, "recovered": True}, frame
    await client.close()
    return times


def _median(values: list[float], unit: str) -> str:
    return f"median {statistics.median(values):,.0f} {unit} (runs: {', '.join(f'{v:,.0f}' for v in values)})"


async def main() -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        migrate_sync(conn, S)
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('r1', 'alice')").format(sql.Identifier(S.members_table)))
        relay = GatewayProcess("relay", **ENV).start(wait=False)
        gateways = [GatewayProcess(**ENV).start(), GatewayProcess(**ENV).start()]
        time.sleep(1)
        try:
            lat = await latency(conn, 200, 5)
            print("commit -> PUBLISH latency at 200 single-row commits/s: "
                  f"median {statistics.median(lat):.1f} ms, "
                  f"p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms, max {lat[-1]:.1f} ms ({len(lat)} rows)")
            for rows in (1000, 20000, 20000):
                rates = [await throughput(conn, rows) for _ in range(3)]
                print(f"relay throughput, backlog of {rows} rows committed at once: "
                      f"{_median(rates, 'rows/s')}")
            table = sql.Identifier(S.outbox_table)
            conn.execute(sql.SQL("ANALYZE {}").format(table))
            kept = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
            rates = [await throughput(conn, 20000) for _ in range(3)]
            print(f"after ANALYZE ({kept[0] if kept else 0:,} rows in the table): {_median(rates, 'rows/s')}")
            times = [t * 1000 for t in await replay_times(gateways, conn, 5)]
            print(f"resume auth -> replay.done, 1,000 missed events, other instance: {_median(times, 'ms')}")
        finally:
            for process in (relay, *gateways):
                process.stop()
            conn.execute(sql.SQL("DROP TABLE {}, {}").format(sql.Identifier(S.outbox_table),
                                                             sql.Identifier(S.members_table)))


asyncio.run(main())
