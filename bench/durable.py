"""The outbox figures: relay throughput (COMMIT -> PUBLISH) and resume replay time.

From the repository root, with the project's venv (psycopg, the e2e harness):

    .venv/bin/python -m bench.durable            all figures, 3 runs each, as text
    .venv/bin/python -m bench.durable relay      one run of one scenario as one JSON line
    .venv/bin/python -m bench.durable resume     (what ``python -m bench relay resume`` calls)

Real processes (relay, two gateways), Postgres at ``BENCH_POSTGRES_DSN`` (default: the
local server), Redis at ``BENCH_REDIS_HOST`` or ``--redis``; tables and prefix of this
run's own, dropped at the end. Postgres unreachable: the JSON says ``skipped`` and why.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import psycopg
import ujson
from psycopg import sql
from psycopg.types.json import Jsonb

from bench import procstat
from tests.e2e.harness import Client, GatewayProcess, token, wait_until
from tornado_gw.migrate import migrate_sync
from tornado_gw.settings import Settings

DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://root@127.0.0.1:5432/postgres")
BACKLOGS = (1000, 20_000, 100_000)  # then the second again, on the table the three have grown
SMOKE_BACKLOGS = (100, 1000, 2000)
MISSED = 1000
RESUME_ROUNDS = 5
_MESSAGE = b"$7\r\nmessage\r\n"  # how each Pub/Sub message starts on the wire (RESP2)


@dataclass(frozen=True)
class Outbox:
    """One run's tables, prefix and processes' environment."""

    settings: Settings
    redis_host: str

    @classmethod
    def fresh(cls, redis_host: str) -> Outbox:
        suffix = uuid4().hex[:8]
        settings = Settings(postgres_dsn=DSN, outbox_table=f"outbox_b{suffix}",
                            members_table=f"members_b{suffix}", prefix=f"b{suffix}:")
        return cls(settings, redis_host)

    def env(self) -> dict[str, str]:
        return {"REDIS_HOST": self.redis_host, "POSTGRES_DSN": DSN, "prefix": self.settings.prefix,
                "outbox_table": self.settings.outbox_table, "members_table": self.settings.members_table,
                "LOGGER_LEVEL": "warning"}

    def table(self) -> sql.Identifier:
        return sql.Identifier(self.settings.outbox_table)

    def commit_rows(self, conn: psycopg.Connection, rows: int, channel: str) -> float:
        """Commit ``rows`` rows in one transaction; returns the commit time."""
        conn.execute(sql.SQL("INSERT INTO {} (channel, event_type, payload) SELECT %s, 'message.new', "
                             "jsonb_build_object('n', n) FROM generate_series(1, %s) AS n")
                     .format(self.table()), (channel, rows))
        return time.monotonic()

    def count(self, conn: psycopg.Connection) -> int:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.table())).fetchone()
        return row[0] if row else 0


@contextmanager
def running(outbox: Outbox, gateways: int,
            **settings: Any) -> Iterator[tuple[psycopg.Connection, list[GatewayProcess]]]:
    """Migrated tables, a relay and ``gateways`` gateways (the relay first, ``settings`` for
    the gateways only); all gone on exit."""
    with psycopg.connect(DSN, autocommit=True, connect_timeout=5) as conn:
        migrate_sync(conn, outbox.settings)
        processes = [GatewayProcess("relay", **outbox.env()).start(wait=False)]
        try:
            processes += [GatewayProcess(**outbox.env(), **settings).start() for _ in range(gateways)]
            time.sleep(1)  # the relay has taken its lock
            yield conn, processes
        finally:
            for process in processes:
                process.stop()
            conn.execute(sql.SQL("DROP TABLE {}, {}").format(outbox.table(),
                                                             sql.Identifier(outbox.settings.members_table)))


class Subscriber:
    """Counts the messages on one channel from the raw socket: the counting costs
    next to nothing, so the figure is the relay's (redis-py's ``get_message``, one
    message at a time, drains ~25k/s here with its Python parser)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._tail = b""

    @classmethod
    async def on(cls, redis_host: str, channel: str) -> Subscriber:
        host, _, port = redis_host.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel.encode()))
        await reader.readuntil(b":1\r\n")  # the subscription's confirmation
        return cls(reader, writer)

    async def receive(self, count: int, timeout_s: float) -> None:
        """Return once ``count`` more messages arrived; TimeoutError after ``timeout_s``."""
        await asyncio.wait_for(self._count(count), timeout_s)

    async def _count(self, count: int) -> None:
        seen = 0
        while seen < count:
            data = self._tail + await self.reader.read(1 << 20)
            if len(data) == len(self._tail):
                raise ConnectionError("Redis closed the subscriber's connection")
            seen += data.count(_MESSAGE)
            self._tail = data[-(len(_MESSAGE) - 1):]

    def close(self) -> None:
        self.writer.close()


async def throughput(outbox: Outbox, conn: psycopg.Connection, subscriber: Subscriber, relay: GatewayProcess,
                     rows: int) -> tuple[float, float]:
    """rows/s from the COMMIT of ``rows`` rows to the last of them PUBLISHed, and the relay's
    CPU µs per row meanwhile (which, unlike the rate, does not move with the load on the box)."""
    assert relay.proc is not None
    cpu_us = procstat.tree_cpu_us(relay.proc.pid)
    committed = outbox.commit_rows(conn, rows, "conv:tp")
    await subscriber.receive(rows, timeout_s=60 + rows / 1000)
    rate = rows / (time.monotonic() - committed)
    return rate, (procstat.tree_cpu_us(relay.proc.pid) - cpu_us) / rows


async def relay_run(outbox: Outbox, smoke: bool = False) -> dict[str, Any]:
    """One run of the ``relay`` scenario: rows/s for each backlog, then once more on the grown table."""
    backlogs = SMOKE_BACKLOGS if smoke else BACKLOGS
    metrics: dict[str, Any] = {}
    with running(outbox, gateways=0) as (conn, (relay, *_)):
        subscriber = await Subscriber.on(outbox.redis_host, outbox.settings.prefix + "conv:tp")
        try:
            for rows in backlogs:
                metrics[f"rows_per_s_{rows}"], metrics[f"relay_cpu_us_{rows}"] = await throughput(
                    outbox, conn, subscriber, relay, rows)
            metrics["grown_table_rows"] = outbox.count(conn)
            metrics["grown_backlog"] = backlogs[1]
            metrics["rows_per_s_grown"], metrics["relay_cpu_us_grown"] = await throughput(
                outbox, conn, subscriber, relay, backlogs[1])
        finally:
            subscriber.close()
    return metrics


async def latency(outbox: Outbox, conn: psycopg.Connection, rate: int, seconds: float) -> list[float]:
    """Commit-to-receipt latency (ms) of single-row transactions at ``rate`` rows/s."""
    subscriber = await Subscriber.on(outbox.redis_host, outbox.settings.prefix + "conv:lat")
    insert = sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES ('conv:lat', 'message.new', %s)")
    latencies = []
    try:
        for n in range(int(rate * seconds)):
            conn.execute(insert.format(outbox.table()), (Jsonb({"n": n}),))
            committed = time.monotonic()
            await subscriber.receive(1, timeout_s=10)
            latencies.append((time.monotonic() - committed) * 1000)
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - committed)))
    finally:
        subscriber.close()
    return sorted(latencies)


async def resume_run(outbox: Outbox, smoke: bool = False) -> dict[str, Any]:
    """One run of the ``resume`` scenario: ms from a resume ``auth`` to ``replay.done`` with
    ``MISSED`` missed events, resumed on the other gateway each round."""
    rounds = 1 if smoke else RESUME_ROUNDS
    with running(outbox, gateways=2) as (conn, (_, *gateways)):
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('r1', 'alice')").format(
            sql.Identifier(outbox.settings.members_table)))
        times = await replay_times(outbox, gateways, conn, rounds)
    return {"resume_ms": statistics.median(times), "resume_max_ms": max(times), "rounds": rounds}


async def replay_times(outbox: Outbox, gateways: list[GatewayProcess], conn: psycopg.Connection,
                       rounds: int) -> list[float]:
    """Milliseconds from sending a resume ``auth`` to ``replay.done``, one per round."""
    unpublished = sql.SQL("SELECT count(*) FROM {} WHERE published_at IS NULL").format(outbox.table())
    client = await Client.connect(gateways[0])
    session = (await client.auth("alice"))["session_id"]
    await client.subscribe("r1")
    last_seq = 0
    times = []
    for round_no in range(rounds):
        await client.close()
        outbox.commit_rows(conn, MISSED, "conv:r1")
        wait_until(lambda: (conn.execute(unpublished).fetchone() or (1,))[0] == 0, "published", 30)
        client = await Client.connect(gateways[(round_no + 1) % 2])  # the other instance each time
        started = time.monotonic()
        await client.send("auth", {"token": token("alice"), "session_id": session, "last_seq": last_seq})
        while True:
            frame = await client.next(30)
            if "seq" in frame:
                last_seq = frame["seq"]
            elif frame["type"] == "replay.done":
                break
        times.append((time.monotonic() - started) * 1000)
        if frame["payload"] != {"count": MISSED, "recovered": True}:
            raise RuntimeError(f"unexpected replay.done: {frame}")
    await client.close()
    return times


RUNS = {"relay": relay_run, "resume": resume_run}


def postgres_problem() -> str | None:
    """Why Postgres cannot be used for the figures, or None."""
    try:
        psycopg.connect(DSN, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return f"Postgres unreachable at {DSN} (set BENCH_POSTGRES_DSN): {' '.join(str(exc).split())}"
    return None


def _median(values: list[float], unit: str) -> str:
    return f"median {statistics.median(values):,.0f} {unit} (runs: {', '.join(f'{v:,.0f}' for v in values)})"


async def report(redis_host: str, runs: int) -> None:
    """Every figure as text: latency, relay throughput and resume, ``runs`` runs each."""
    outbox = Outbox.fresh(redis_host)
    with running(outbox, gateways=0) as (conn, _):
        lat = await latency(outbox, conn, 200, 5)
    print(f"commit -> PUBLISH latency at 200 single-row commits/s: median {statistics.median(lat):.1f} ms, "
          f"p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms, max {lat[-1]:.1f} ms ({len(lat)} rows)", flush=True)
    relay = [await relay_run(Outbox.fresh(redis_host)) for _ in range(runs)]
    for key in relay[0]:
        if key.startswith("rows_per_s_"):
            backlog = key.rsplit("_", 1)[1]
            label = (f"{relay[0]['grown_backlog']:,} rows on a table of {relay[0]['grown_table_rows']:,}"
                     if backlog == "grown" else f"{int(backlog):,} rows")
            cpu = statistics.median(run[f"relay_cpu_us_{backlog}"] for run in relay)
            print(f"relay throughput, backlog of {label} committed at once: "
                  f"{_median([run[key] for run in relay], 'rows/s')}; relay CPU {cpu:.1f} µs/row", flush=True)
    resume = [(await resume_run(Outbox.fresh(redis_host)))["resume_ms"] for _ in range(runs)]
    print(f"resume auth -> replay.done, {MISSED:,} missed events, other instance "
          f"(median of {RESUME_ROUNDS} rounds per run): {_median(resume, 'ms')}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.durable", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", choices=sorted(RUNS),
                        help="one run of this scenario, as one JSON line (default: every figure as text)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_HOST", "127.0.0.1:6379"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check that it works")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure in the text report")
    args = parser.parse_args()
    problem = postgres_problem()
    if args.scenario is None:
        if problem:
            raise SystemExit(problem)
        asyncio.run(report(args.redis, args.runs))
    elif problem:
        print(ujson.dumps({"skipped": problem}, escape_forward_slashes=False))
    else:
        print(ujson.dumps(asyncio.run(RUNS[args.scenario](Outbox.fresh(args.redis), args.smoke))))


if __name__ == "__main__":
    main()
