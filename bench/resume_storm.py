"""Resume storm (issue 9): the clients of an instance that is SIGKILLed all resume at
once on the other instance, each with a few missed events. Figures, not assertions.

From the repository root, with the project's venv:

    .venv/bin/python -m bench.resume_storm                     10,000 clients (the target)
    .venv/bin/python -m bench.resume_storm --clients 200       a quick check that it runs

Real processes: a relay and two gateways (Redis at ``BENCH_REDIS_HOST`` or ``--redis``, else a
private ``redis-server`` so that the Redis figures count this run's commands only;
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
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import redis.asyncio as aredis
import ujson
from psycopg import sql

from bench import procstat
from bench.cli import raise_fd_limit
from bench.durable import DSN, Outbox, running
from bench.redis_server import bench_redis
from tests.e2e.harness import Client, GatewayProcess, token
from tornado_gw.core.ids import session_key

CONNECT_BATCH = 500  # clients opened at once while setting up (the listen backlog is finite)
PHASE_TIMEOUT_S = 120.0  # each setup phase, and the storm itself: past it, say how far it got
PROGRESS_EVERY_S = 5.0
PG_STATS_DELAY_S = 11.0  # an idle backend reports its transactions to pg_stat_database up to 10 s late
T = TypeVar("T")


@dataclass
class Resumer:
    """One client: its session before the kill, then what its resume brought."""

    user_id: str
    conversation_id: str
    session_id: str = ""
    last_seq: int = 0
    resumed: bool | None = None  # None: no ``auth.success`` (yet)
    conversation_ids: list[str] = field(default_factory=list)
    replayed: list[int] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)  # ``error`` frames and the like
    done: dict[str, Any] | None = None
    took_s: float = 0.0


class Stuck(Exception):
    """A phase did not finish in time or some of its clients failed; the message says how far it got."""


def _say(text: str) -> None:
    print(f"resume storm: {text}", file=sys.stderr, flush=True)


def _failures(results: list[Any]) -> str:
    kinds = Counter(f"{type(r).__name__}: {r}"[:160] for r in results if isinstance(r, BaseException))
    return "; ".join(f"{n} x {kind}" for kind, n in kinds.most_common(3))


def _outcome(future: asyncio.Future[Any]) -> Any:
    if future.cancelled():
        return TimeoutError(f"not done within {PHASE_TIMEOUT_S:.0f} s")
    return future.exception() or future.result()


async def _in_batches(what: str, make: Callable[[int], Awaitable[T]], count: int) -> list[T]:
    """``make(0..count-1)``, ``CONNECT_BATCH`` at a time; ``Stuck`` if any fails or the
    phase outlasts ``PHASE_TIMEOUT_S``."""
    results: list[Any] = []
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    for i in range(0, count, CONNECT_BATCH):
        batch = [asyncio.ensure_future(make(n)) for n in range(i, min(count, i + CONNECT_BATCH))]
        await asyncio.wait(batch, timeout=max(0.0, deadline - time.monotonic()))
        for future in batch:
            if not future.done():
                future.cancel()
        results += [_outcome(f) for f in batch]
        failed = _failures(results)
        if failed:
            ok = sum(not isinstance(r, BaseException) for r in results)
            raise Stuck(f"{what}: {ok} of {count} done, then: {failed}")
    _say(f"{what}: {count} done")
    return results


async def _joined(gateway: GatewayProcess, resumer: Resumer) -> Client:
    client = await Client.connect(gateway)
    resumer.session_id = (await client.auth(resumer.user_id))["session_id"]
    granted = await client.subscribe(resumer.conversation_id)
    if granted["conversation_ids"] != [resumer.conversation_id]:
        raise RuntimeError(f"{resumer.user_id} could not subscribe: {granted}")
    return client


async def _connected(gateway: GatewayProcess) -> Client:
    return await Client.connect(gateway, open_timeout=PHASE_TIMEOUT_S)


async def _snapshots_saved(redis: aredis.Redis, prefix: str, resumers: list[Resumer]) -> None:
    """Wait until every session snapshot in Redis holds its conversation: it is written just
    after ``subscribed`` (docs/operations.md), and a SIGKILL loses the ones not yet written,
    which would count as lost replays although the gateway never had them."""
    started = time.monotonic()
    while True:
        missing = 0
        for i in range(0, len(resumers), 1000):
            chunk = resumers[i:i + 1000]
            saved = await redis.mget([session_key(prefix, r.session_id) for r in chunk])
            for resumer, raw in zip(chunk, saved, strict=True):
                missing += raw is None or resumer.conversation_id not in ujson.loads(raw)["conversation_ids"]
        waited = time.monotonic() - started
        if not missing:
            _say(f"every session snapshot saved {waited:.1f} s after the last subscribe")
            return
        if waited > PHASE_TIMEOUT_S:
            raise Stuck(f"{missing} of {len(resumers)} session snapshots still lack their conversation "
                        f"after {waited:.0f} s")
        await asyncio.sleep(0.1)


async def _resume(client: Client, resumer: Resumer, began: float) -> None:
    """Send the resume ``auth``, then read up to ``replay.done``."""
    await client.send("auth", {"token": token(resumer.user_id), "session_id": resumer.session_id,
                               "last_seq": resumer.last_seq})
    subscribed = False
    while True:
        frame = await client.next(PHASE_TIMEOUT_S)
        if frame["type"] == "auth.success":
            resumer.resumed = frame["payload"]["resumed"]
            resumer.conversation_ids = frame["payload"]["conversation_ids"]
            if not resumer.resumed:  # a new session: recover as the contract says (CONTRACT §4)
                await client.send("subscribe", {"conversation_ids": [resumer.conversation_id],
                                                "last_seq": resumer.last_seq})
        elif frame["type"] == "subscribed":
            subscribed = True
        elif "seq" in frame:
            resumer.replayed.append(frame["seq"])
        elif frame["type"] == "replay.done" and (resumer.resumed or subscribed):
            resumer.done = frame["payload"]
            resumer.took_s = time.monotonic() - began
            return
        elif frame["type"] == "error":
            resumer.unexpected.append(frame)
            return
        elif frame["type"] != "replay.done" and not frame["type"].startswith("presence."):
            resumer.unexpected.append(frame)  # presence: the others coming back, expected


def _where(resumers: list[Resumer]) -> str:
    """How far the clients got, for a storm that did not finish."""
    authed = sum(r.resumed is not None for r in resumers)
    done = sum(r.done is not None for r in resumers)
    replaying = sum(r.resumed is not None and r.done is None and bool(r.replayed) for r in resumers)
    errors = Counter(str(f)[:120] for r in resumers for f in r.unexpected)
    where = f"{done} of {len(resumers)} got replay.done, {authed} auth.success, {replaying} part of a replay"
    return where + (f"; other frames: {dict(errors.most_common(3))}" if errors else "")


async def _progress(resumers: list[Resumer], began: float) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        _say(f"{time.monotonic() - began:.0f} s into the storm: {_where(resumers)}")


async def _run_storm(clients: list[Client], resumers: list[Resumer]) -> float:
    """Every resume at once; the seconds until the last ``replay.done``. ``Stuck`` (with how
    far the clients got) if it outlasts ``PHASE_TIMEOUT_S`` or a client fails."""
    began = time.monotonic()
    tasks = [asyncio.ensure_future(_resume(c, r, began)) for c, r in zip(clients, resumers, strict=True)]
    ticker = asyncio.ensure_future(_progress(resumers, began))
    try:
        _, pending = await asyncio.wait(tasks, timeout=PHASE_TIMEOUT_S)
    finally:
        ticker.cancel()
    wall_s = time.monotonic() - began
    for task in pending:
        task.cancel()
    failed = _failures([t.exception() for t in tasks if t.done() and not t.cancelled()])
    if pending or failed:
        raise Stuck(f"storm {'timed out' if pending else 'failed'} after {wall_s:.1f} s: {_where(resumers)}"
                    + (f"; failures: {failed}" if failed else ""))
    return wall_s


def _told(resumer: Resumer) -> bool:
    """The gateway said it could not (CONTRACT §4 v2): ``recovered: false`` (reload through
    the API) or ``error`` ``unavailable`` (try again), not a silent loss."""
    return bool((resumer.done and resumer.done.get("recovered") is False)
                or any(f.get("type") == "error" for f in resumer.unexpected))


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
            raise Stuck("the relay did not publish the missed events in time")
        time.sleep(0.05)


@contextmanager
def _profiled(pid: int, output: str | None) -> Iterator[None]:
    """``py-spy record`` of ``pid`` meanwhile, into ``output`` (None: no profile): collapsed
    stacks, or a speedscope profile (samples in time order) when it ends in ``.json``."""
    if output is None:
        yield
        return
    kind = "speedscope" if output.endswith(".json") else "raw"
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                            "--format", kind, "--rate", "200", "--output", output, "--nonblocking"],
                           stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the storm starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


async def _close_all(clients: list[Client]) -> None:
    for i in range(0, len(clients), CONNECT_BATCH):
        await asyncio.gather(*(c.close() for c in clients[i:i + CONNECT_BATCH]), return_exceptions=True)


async def storm(args: argparse.Namespace) -> dict[str, Any]:
    outbox = Outbox.fresh(args.redis)
    resumers = [Resumer(f"u{n}", f"s{n // args.per_conversation}") for n in range(args.clients)]
    conversations = sorted({r.conversation_id for r in resumers}, key=lambda cid: int(cid[1:]))
    host, _, port = args.redis.rpartition(":")
    redis = aredis.Redis(host=host, port=int(port))
    # Every client is connected before the first resume auth, which takes longer than the
    # default auth_timeout_s at 10,000 (4002 otherwise): the figure is the resume's, not the connect's.
    with running(outbox, gateways=2, auth_timeout_s=PHASE_TIMEOUT_S * 3) as (conn, (_, gateway_a, gateway_b)):
        members = sql.SQL("INSERT INTO {} SELECT 's' || (n / %s), 'u' || n FROM generate_series(0, %s) AS n")
        conn.execute(members.format(sql.Identifier(outbox.settings.members_table)),
                     (args.per_conversation, args.clients - 1))
        on_a = await _in_batches("joined on A", lambda n: _joined(gateway_a, resumers[n]), args.clients)
        await _snapshots_saved(redis, outbox.settings.prefix, resumers)
        assert gateway_a.proc is not None and gateway_b.proc is not None
        gateway_a.signal(signal.SIGKILL)
        gateway_a.proc.wait(10)
        await _close_all(on_a)  # their descriptors: the bench holds 2 per client otherwise
        rows = [(f"conv:{cid}",) for cid in conversations for _ in range(args.missed)]
        with conn.transaction():
            conn.cursor().executemany(
                sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES (%s, 'message.new', '{{}}')")
                .format(outbox.table()), rows)
        _published(conn, outbox, 60)
        expected = {cid: [row[0] for row in conn.execute(
            sql.SQL("SELECT seq FROM {} WHERE channel = %s ORDER BY seq").format(outbox.table()),
            (f"conv:{cid}",))] for cid in conversations}
        on_b = await _in_batches("connected to B", lambda _: _connected(gateway_b), args.clients)
        pids = procstat.tree(gateway_b.proc.pid)
        cpu0, pg0 = procstat.cpu_us(pids), _pg_statements(conn)
        redis0 = _redis_calls(await redis.info("commandstats"))
        with _profiled(gateway_b.proc.pid, args.py_spy):
            wall_s = await _run_storm(on_b, resumers)
        cpu_s = (procstat.cpu_us(pids) - cpu0) / 1e6
        redis_calls = _redis_calls(await redis.info("commandstats")) - redis0
        await asyncio.sleep(PG_STATS_DELAY_S)
        pg_calls = _pg_statements(conn) - pg0
        await _close_all(on_b)
    await redis.aclose()
    wrong = [r for r in resumers
             if r.replayed != expected[r.conversation_id] or r.unexpected
             or r.done != {"count": len(expected[r.conversation_id]), "recovered": True}]
    for r in wrong[:3]:
        print(f"  wrong: {r.user_id} in {r.conversation_id}: resumed {r.resumed} into {r.conversation_ids}, "
              f"replayed {r.replayed}, then {r.done}, other frames {r.unexpected}; "
              f"expected {expected[r.conversation_id]}")
    seen = [seq for r in resumers for seq in r.replayed]
    took = sorted(r.took_s * 1000 for r in resumers)
    return {"clients": args.clients, "missed_per_client": args.missed, "last_replay_done_s": wall_s,
            "per_client_median_ms": statistics.median(took),
            "per_client_p99_ms": took[max(0, int(len(took) * 0.99) - 1)], "per_client_max_ms": took[-1],
            "wrong": len(wrong), "wrong_and_told": sum(_told(r) for r in wrong),
            "new_session_then_subscribe": sum(r.resumed is False for r in resumers),
            "lost": sum(len(set(expected[r.conversation_id]) - set(r.replayed)) for r in resumers),
            "duplicated": len(seen) - sum(len(set(r.replayed)) for r in resumers),
            "gateway_cpu_s": cpu_s,
            "redis_commands_per_resume": redis_calls / args.clients,
            "postgres_transactions_per_resume": pg_calls / args.clients}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.resume_storm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--per-conversation", type=int, default=10, help="clients sharing a conversation")
    parser.add_argument("--missed", type=int, default=3, help="events each conversation gets while down")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_HOST"),
                        help="host:port (default: a private redis-server, the run's own)")
    parser.add_argument("--py-spy", metavar="FILE", help="profile gateway B during the storm: collapsed "
                        "stacks in FILE (needs py-spy in the venv; its sampling costs the gateway CPU)")
    args = parser.parse_args()
    raise_fd_limit()
    with ExitStack() as stack:
        if args.redis is None:
            logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="resume-storm-")))
            args.redis, _ = stack.enter_context(bench_redis(logdir))
        try:
            figures = asyncio.run(storm(args))
        except Stuck as exc:
            raise SystemExit(f"resume storm: {exc}") from None
    print(f"resume storm on {DSN.rsplit('@', 1)[-1]}, Redis {args.redis}")
    for name, value in figures.items():
        print(f"  {name}: {value:,.1f}" if isinstance(value, float) else f"  {name}: {value:,}")


if __name__ == "__main__":
    main()
