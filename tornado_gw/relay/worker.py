"""``python -m tornado_gw relay``: the outbox relay, Postgres outbox -> Redis Pub/Sub.

Theory of operation (the rules it relies on are in ``adapters/pg_sql.py``):

- One session holds the relay's advisory lock; a standby polls for it every
  ``LOCK_RETRY_S`` and takes over as soon as the holder's session ends (process
  killed, host gone, SIGTERM).
- On taking over, rows numbered but never marked published are published
  again first, with the seq they already have.
- Then, in a loop: number a batch and COMMIT (one autocommit statement, the
  last seq kept in memory while the lock is held); PUBLISH its frames (one
  Redis command for the batch); mark them published. Postgres and Redis work
  overlap: while batch N is PUBLISHed, batch N-1 is marked and batch N+1
  numbered and committed. A crash anywhere leaves rows either unnumbered
  (numbered later) or numbered and unmarked (at most two batches, published
  again with the same seq).
- It wakes on NOTIFY from the outbox trigger (a second connection LISTENs) and,
  as a fallback, every ``relay_poll_interval_s``.
- Retention deletes published rows older than ``outbox_retention_s``.
- Redis or Postgres down: retry with capped exponential backoff and jitter,
  one log line per state change, nothing lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import redis.asyncio
import ujson
from psycopg.types.json import set_json_loads
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tornado_gw.adapters import pg_sql as sql
from tornado_gw.adapters.backoff import backoff_s
from tornado_gw.adapters.pg_sql import one_line
from tornado_gw.adapters.redis_broker import redis_options
from tornado_gw.relay.plan import Delivery, OutboxRow, in_seq_order, publishable
from tornado_gw.settings import Settings

log = logging.getLogger(__name__)

LOCK_RETRY_S = 0.5  # how soon a standby notices that the active relay is gone
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0
RETENTION_BATCH = 1000
RETENTION_BATCHES_PER_PASS = 10  # then publishing resumes; the rest waits for the next pass
STATEMENT_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 5
# A dead peer is noticed in ~10 s even while the session is idle.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                              "keepalives_count": 3}
# One command and one reply per batch instead of one per frame: a pipeline of
# PUBLISHes cost the relay about a third more CPU per row, even with hiredis.
PUBLISH_ALL = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end"
DEPENDENCY_ERRORS = (psycopg.Error, OSError)
_ROLE_LINES = {
    "active": "= relay lock acquired: this relay is active for %s",
    "standby": "= another relay is active for %s; standing by",
}


class _Dependency:
    """Tracks one dependency so that the log has one line per state change, not per retry."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0

    def failed(self, exc: BaseException) -> int:
        """Record a failure; returns the retry attempt number (1, 2, ...)."""
        if not self.failures:
            log.warning("! %s failed, retrying with backoff: %s", self.name, one_line(exc))
        self.failures += 1
        return self.failures

    def recovered(self) -> None:
        if self.failures:
            log.info("= %s recovered after %d failed attempts", self.name, self.failures)
        self.failures = 0


class Relay:
    """The relay loop. ``await relay.run(stop)`` serves until ``stop`` is set;
    then ``await relay.close()``. Several may run: one is active, the others stand by."""

    def __init__(self, settings: Settings, *, rand: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self._names = sql.names(settings)
        self._rand = rand
        self._redis = _redis_client(settings)
        self._publish_all = self._redis.register_script(PUBLISH_ALL)
        self._postgres_state = _Dependency("postgres")
        self._redis_state = _Dependency("redis")
        self._wake = asyncio.Event()
        self._recovering = True
        self._last_seq = 0  # the highest seq assigned; read again on every lock acquisition
        self._recovered_seq = 0  # the highest seq republished while recovering
        self._next_retention = 0.0
        self._role = ""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set. Outages are retried, never raised."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except DEPENDENCY_ERRORS as exc:
                attempt = self._postgres_state.failed(exc)
                await _wait(self._backoff_s(attempt), stop)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _session(self, stop: asyncio.Event) -> None:
        """One Postgres session: wait for the lock, then lead until stopped or broken.
        Closing the session (normally or not) releases the lock."""
        async with await _connect(self._settings) as conn:
            await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            if not await self._acquire_lock(conn, stop):
                return
            listener = asyncio.create_task(self._listen())
            try:
                await self._lead(conn, stop)
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _acquire_lock(self, conn: psycopg.AsyncConnection, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            cur = await conn.execute(sql.TRY_LOCK, {"key": self._names.lock_key})
            row = await cur.fetchone()
            if row is not None and row[0]:
                self._become("active")
                return True
            self._postgres_state.recovered()
            self._become("standby")
            await _wait(LOCK_RETRY_S, stop)
        return False

    def _become(self, role: str) -> None:
        """Log the role once per change, not once per session or retry."""
        if role != self._role:
            self._role = role
            log.info(_ROLE_LINES[role], self._settings.outbox_table)

    async def _lead(self, conn: psycopg.AsyncConnection, stop: asyncio.Event) -> None:
        """Number, PUBLISH, mark, overlapped: while Redis takes one batch, Postgres
        marks the batch before it and numbers the next one, whose numbering is
        committed before any of its frames is published (rule 3)."""
        cur = await conn.execute(self._names.render(sql.HEAD))
        row = await cur.fetchone()
        self._last_seq = row[0] if row else 0
        self._recovering = True
        self._recovered_seq = 0
        published: list[Delivery] = []  # PUBLISHed, published_at not set yet
        batch: list[Delivery] = []  # numbered and committed, not PUBLISHed yet
        while not stop.is_set():
            publishing = asyncio.create_task(self._publish(batch, stop))
            try:
                await self._mark(conn, published)
                await self._expire(conn)
                following = await self._claim(conn)
                self._postgres_state.recovered()
            except BaseException:
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)
                raise
            if not await publishing:
                return
            published, batch = batch, following
            if not published and not batch:
                await _wait(self._settings.relay_poll_interval_s, stop, self._wake)
        await self._mark(conn, published)

    async def _mark(self, conn: psycopg.AsyncConnection, published: list[Delivery]) -> None:
        if published:
            await conn.execute(self._names.render(sql.MARK_PUBLISHED), {"ids": [d.row_id for d in published]})
            log.debug("> published %d frames, seq %d..%d",
                      len(published), published[0].seq, published[-1].seq)

    async def _claim(self, conn: psycopg.AsyncConnection) -> list[Delivery]:
        """The next batch: first rows a dead relay numbered but never marked, then new rows
        numbered here. The numbering is committed before this returns (rule 3)."""
        self._wake.clear()  # cleared before looking, so a NOTIFY meanwhile is not lost
        limit = {"limit": self._settings.relay_batch_size}
        if self._recovering:
            cur = await conn.execute(self._names.render(sql.NUMBERED_UNPUBLISHED),
                                     {**limit, "after": self._recovered_seq})
            numbered = in_seq_order([OutboxRow(*row) for row in await cur.fetchall()])
            if numbered:
                log.info("= publishing %d numbered rows again, with their seq", len(numbered))
                self._recovered_seq = numbered[-1].seq
                return numbered
            self._recovering = False
        claim = self._names.render(sql.CLAIM_AND_NUMBER)
        cur = await conn.execute(claim, {**limit, "last_seq": self._last_seq})
        deliveries = in_seq_order([OutboxRow(*row) for row in await cur.fetchall()])
        if deliveries:
            self._last_seq = deliveries[-1].seq
        return deliveries

    async def _publish(self, batch: list[Delivery], stop: asyncio.Event) -> bool:
        """PUBLISH the batch, retrying until Redis takes it; False when stopped first."""
        valid, held = publishable(batch)
        for delivery in held:
            problem = "an invalid channel" if delivery.frame is not None else "a payload without strict JSON"
            log.warning("! outbox row %d (channel %r) has %s: seq %d kept, not published",
                        delivery.row_id, delivery.channel, problem, delivery.seq)
        while True:
            try:
                await self._send(valid)
            except (RedisError, OSError) as exc:
                attempt = self._redis_state.failed(exc)
            else:
                self._redis_state.recovered()
                return True
            if await _wait(self._backoff_s(attempt), stop):
                return False

    async def _send(self, frames: list[tuple[str, bytes]]) -> None:
        if not frames:
            return
        prefix = self._settings.prefix
        args: list[str | bytes] = []
        for channel, frame in frames:
            args += (prefix + channel, frame)
        await self._publish_all(args=args)

    async def _listen(self) -> None:
        """Set the wake event on every NOTIFY; reconnects quietly (polling covers the gaps)."""
        attempt = 0
        while True:
            try:
                async with await _connect(self._settings) as conn:
                    await conn.execute(self._names.render(sql.LISTEN))
                    attempt = 0
                    self._wake.set()  # whatever committed before LISTEN took effect
                    async for _notify in conn.notifies():
                        self._wake.set()
            except DEPENDENCY_ERRORS as exc:
                log.debug("! relay listener: %s", one_line(exc))
            attempt += 1
            await asyncio.sleep(self._backoff_s(attempt))

    async def _expire(self, conn: psycopg.AsyncConnection) -> None:
        """Delete published rows past retention, a few small batches per pass (rule 5)."""
        now = time.monotonic()
        if now < self._next_retention:
            return
        retention_s = self._settings.outbox_retention_s
        self._next_retention = now + min(60.0, max(0.1, retention_s / 2))
        cur = await conn.execute(self._names.render(sql.RETENTION_HORIZON), {"retention_s": retention_s})
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return
        deleted = 0
        for _ in range(RETENTION_BATCHES_PER_PASS):
            cur = await conn.execute(
                self._names.render(sql.DELETE_BELOW), {"horizon": row[0], "limit": RETENTION_BATCH}
            )
            deleted += cur.rowcount
            if cur.rowcount < RETENTION_BATCH:
                break
        if deleted:
            log.debug("= retention deleted %d published rows below seq %d", deleted, row[0])

    def _backoff_s(self, attempt: int) -> float:
        return backoff_s(attempt, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S, jitter=self._rand())


async def _connect(settings: Settings) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(
        settings.postgres_dsn or "", autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **KEEPALIVES
    )
    set_json_loads(ujson.loads, conn)
    return conn


def _redis_client(settings: Settings) -> redis.asyncio.Redis:
    """No retries inside redis-py: the relay's own backoff decides, and logs."""
    return redis.asyncio.Redis(
        **{**redis_options(settings), "socket_connect_timeout": CONNECT_TIMEOUT_S},
        socket_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


async def _wait(timeout_s: float, *events: asyncio.Event) -> bool:
    """Sleep until ``timeout_s`` passes or one of ``events`` is set; True when
    the first event (by convention ``stop``) is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return events[0].is_set()



def config_problem(settings: Settings) -> str | None:
    """Why the relay cannot start with ``settings``, or None."""
    if not settings.postgres_dsn or not settings.redis_host:
        return "the relay needs both POSTGRES_DSN and REDIS_HOST to be set"
    try:
        sql.names(settings)
    except ValueError as exc:
        return str(exc)
    return None


def run(settings: Settings) -> int:
    """CLI entry: serve until SIGTERM/SIGINT; 2 with one stderr line when misconfigured."""
    problem = config_problem(settings)
    if problem:
        print(f"relay: {problem}", file=sys.stderr)
        return 2
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    relay = Relay(settings)
    try:
        await relay.run(stop)
    finally:
        await relay.close()
