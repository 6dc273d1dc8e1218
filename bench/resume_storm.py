"""Resume storm (issue 9): the clients of an instance that is SIGKILLed all resume at
once on the other instance, each with a few missed events. Figures, not assertions.

From the repository root, with the project's venv:

    .venv/bin/python -m bench.resume_storm                     10,000 clients (the target)
    .venv/bin/python -m bench.resume_storm --clients 200       a quick check that it runs

Real processes: a relay and two gateways (Redis at ``BENCH_REDIS_HOST`` or ``--redis``,
Postgres at ``BENCH_POSTGRES_DSN``; tables and prefix of this run's own, dropped at the
end). Every client authenticates and subscribes to its conversation (``--per-conversation``
clients share one) on gateway A. A is SIGKILLed, ``--missed`` events per conversation are
committed and published, then every client sends its resume ``auth`` to gateway B at once.

Reported: time from the first resume ``auth`` to the last ``replay.done``; per client, the
time from its ``auth`` to its ``replay.done`` (median, p99, max); clients whose replay was
not exactly their conversation's missed events, in order, with ``recovered: true``; CPU of
gateway B during the storm; Redis commands (``INFO commandstats``) and Postgres statements
(``pg_stat_database`` transactions of the database, so other users of it count too) per
resume. Target on a 2-core box: 10,000 clients within 5 s, none lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis.asyncio as aredis
from psycopg import sql

from bench import procstat
from bench.cli import raise_fd_limit
from bench.durable import DSN, Outbox, running
from tests.e2e.harness import Client, GatewayProcess, token

CONNECT_BATCH = 500  # clients opened at once while setting up (the listen backlog is finite)
STORM_TIMEOUT_S = 120.0


@dataclass
class Resumer:
    """One client: its session before the kill, then what its resume brought."""

    user_id: str
    conversation_id: str
    session_id: str = ""
    last_seq: int = 0
    resumed: bool = False
    replayed: list[int] = field(default_factory=list)
    done: dict[str, Any] | None = None
    took_s: float = 0.0


async def _joined(gateway: GatewayProcess, resumer: Resumer) -> Client:
    client = await Client.connect(gateway)
    resumer.session_id = (await client.auth(resumer.user_id))["session_id"]
    granted = await client.subscribe(resumer.conversation_id)
    if granted["conversation_ids"] != [resumer.conversation_id]:
        raise RuntimeError(f"{resumer.user_id} could not subscribe: {granted}")
    return client


async def _resume(gateway: GatewayProcess, resumer: Resumer, connected: list[int],
                  start: asyncio.Event) -> Client:
    client = await Client.connect(gateway, open_timeout=STORM_TIMEOUT_S)
    connected.append(1)
    await start.wait()
    started = time.monotonic()
    await client.send("auth", {"token": token(resumer.user_id), "session_id": resumer.session_id,
                               "last_seq": resumer.last_seq})
    while True:
        frame = await client.next(STORM_TIMEOUT_S)
        if frame["type"] == "auth.success":
            resumer.resumed = frame["payload"]["resumed"]
        elif "seq" in frame:
            resumer.replayed.append(frame["seq"])
        elif frame["type"] == "replay.done":
            resumer.done = frame["payload"]
            resumer.took_s = time.monotonic() - started
            return client


async def _in_batches(coros: list[Any]) -> list[Any]:
    results: list[Any] = []
    for i in range(0, len(coros), CONNECT_BATCH):
        results += await asyncio.gather(*coros[i:i + CONNECT_BATCH])
    return results


def _redis_calls(info: dict[str, Any]) -> int:
    return sum(int(stats["calls"]) for name, stats in info.items() if name.startswith("cmdstat_"))


def _pg_statements(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                       "WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def _published(conn: psycopg.Connection, outbox: Outbox, timeout_s: float) -> None:
    unpublished = sql.SQL("SELECT count(*) FROM {} WHERE published_at IS NULL").format(outbox.table())
    deadline = time.monotonic() + timeout_s
    while (conn.execute(unpublished).fetchone() or (1,))[0]:
        if time.monotonic() > deadline:
            raise TimeoutError("the relay did not publish the missed events in time")
        time.sleep(0.05)


async def storm(args: argparse.Namespace) -> dict[str, Any]:
    outbox = Outbox.fresh(args.redis)
    resumers = [Resumer(f"u{n}", f"s{n // args.per_conversation}") for n in range(args.clients)]
    conversations = sorted({r.conversation_id for r in resumers}, key=lambda cid: int(cid[1:]))
    host, _, port = args.redis.rpartition(":")
    redis = aredis.Redis(host=host, port=int(port))
    with running(outbox, gateways=2) as (conn, (_, gateway_a, gateway_b)):
        members = sql.SQL("INSERT INTO {} SELECT 's' || (n / %s), 'u' || n FROM generate_series(0, %s) AS n")
        conn.execute(members.format(sql.Identifier(outbox.settings.members_table)),
                     (args.per_conversation, args.clients - 1))
        await _in_batches([_joined(gateway_a, r) for r in resumers])
        await asyncio.sleep(1.0)  # session snapshots are written just after `subscribed` (docs/operations.md)
        assert gateway_a.proc is not None
        gateway_a.signal(signal.SIGKILL)
        gateway_a.proc.wait(10)
        rows = [(f"conv:{cid}",) for cid in conversations for _ in range(args.missed)]
        with conn.transaction():
            conn.cursor().executemany(
                sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES (%s, 'message.new', '{{}}')")
                .format(outbox.table()), rows)
        _published(conn, outbox, 60)
        expected = {cid: [row[0] for row in conn.execute(
            sql.SQL("SELECT seq FROM {} WHERE channel = %s ORDER BY seq").format(outbox.table()),
            (f"conv:{cid}",))] for cid in conversations}

        start, connected = asyncio.Event(), []
        opening = [asyncio.ensure_future(_resume(gateway_b, r, connected, start)) for r in resumers]
        while len(connected) < len(resumers):  # every client connected to B, none has sent auth
            await asyncio.sleep(0.05)
        pids = procstat.tree(gateway_b.proc.pid) if gateway_b.proc else []
        cpu0, pg0 = procstat.cpu_us(pids), _pg_statements(conn)
        redis0 = _redis_calls(await redis.info("commandstats"))
        began = time.monotonic()
        start.set()
        clients = await asyncio.wait_for(asyncio.gather(*opening), STORM_TIMEOUT_S)
        wall_s = time.monotonic() - began
        cpu_s = (procstat.cpu_us(pids) - cpu0) / 1e6
        redis_calls = _redis_calls(await redis.info("commandstats")) - redis0
        pg_calls = _pg_statements(conn) - pg0
        for client in clients:
            await client.close()
    await redis.aclose()
    wrong = [r for r in resumers
             if r.replayed != expected[r.conversation_id]
             or r.done != {"count": len(expected[r.conversation_id]), "recovered": True}]
    for r in wrong[:3]:
        print(f"  wrong: {r.user_id} in {r.conversation_id}: resumed {r.resumed}, replayed {r.replayed}, "
              f"then {r.done}; expected {expected[r.conversation_id]}")
    took = sorted(r.took_s * 1000 for r in resumers)
    return {"clients": args.clients, "missed_per_client": args.missed, "last_replay_done_s": wall_s,
            "per_client_median_ms": statistics.median(took),
            "per_client_p99_ms": took[max(0, int(len(took) * 0.99) - 1)], "per_client_max_ms": took[-1],
            "wrong": len(wrong), "gateway_cpu_s": cpu_s,
            "redis_commands_per_resume": redis_calls / args.clients,
            "postgres_transactions_per_resume": pg_calls / args.clients}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.resume_storm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--per-conversation", type=int, default=10, help="clients sharing a conversation")
    parser.add_argument("--missed", type=int, default=3, help="events each conversation gets while down")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_HOST", "127.0.0.1:6379"))
    args = parser.parse_args()
    raise_fd_limit()
    figures = asyncio.run(storm(args))
    print(f"resume storm on {DSN.rsplit('@', 1)[-1]}, Redis {args.redis}")
    for name, value in figures.items():
        print(f"  {name}: {value:,.1f}" if isinstance(value, float) else f"  {name}: {value:,}")


if __name__ == "__main__":
    main()
