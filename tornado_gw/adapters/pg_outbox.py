"""The gateway's Postgres: replay from the outbox, membership, publishing, health.

Every call is bounded in time (``probe_timeout_s``): waiting for a pooled
connection, the statement on the server (``statement_timeout``) and the whole
call as the caller sees it. A slow or unreachable Postgres becomes
``ReplayGap`` (the client is told ``recovered: false``) or
``DependencyUnavailable``, promptly, never a hang.

Usage (the composition root owns the lifecycle)::

    pg = PgOutbox(settings)
    await pg.open()          # returns at once, even while Postgres is down
    ... pg.log, pg.membership, pg.publisher, await pg.check() ...
    await pg.close()
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import psycopg
import ujson
from psycopg import sql
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool

from tornado_gw.adapters.pg_sql import APPEND, HEAD, MEMBERS, NO_SEQ_LIMIT, READ_AFTER, Names, names, one_line
from tornado_gw.codec import EncodeError, encode_frame
from tornado_gw.core.ids import is_valid_channel
from tornado_gw.core.records import LoggedEvent
from tornado_gw.ports import DependencyUnavailable, ReplayGap
from tornado_gw.settings import Settings

POOL_MAX_SIZE = 8
MEMBERSHIP_CACHE_MAX = 100_000
MEMBERSHIP_BATCH = 1_000  # (user, conversation) pairs per membership query

Rows = list[tuple[Any, ...]]
Params = dict[str, Any] | None


class PgDatabase:
    """One small pool; every call answers within ``probe_timeout_s`` or raises."""

    def __init__(self, settings: Settings) -> None:
        self.bound_s = settings.probe_timeout_s
        self._pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.postgres_dsn or "",
            min_size=1,
            max_size=POOL_MAX_SIZE,
            open=False,
            timeout=self.bound_s,
            name="tornado_gw",
            kwargs={"autocommit": True, "connect_timeout": _connect_timeout_s(settings)},
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,  # drop connections a Postgres restart killed
        )

    async def open(self) -> None:
        """Start connecting in the background; does not wait for Postgres."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close(timeout=self.bound_s)

    async def query(self, statement: sql.Composed | str, params: Params = None) -> Rows:
        """Rows of ``statement``. Raises DependencyUnavailable on any failure or after ``bound_s``."""
        return await _bounded(self._query(statement, params), self.bound_s)

    async def check(self) -> bool:
        """True when Postgres answers ``SELECT 1`` within ``bound_s`` (for /health and /ready)."""
        try:
            return await self.query("SELECT 1") == [(1,)]
        except DependencyUnavailable:
            return False

    async def _query(self, statement: sql.Composed | str, params: Params) -> Rows:
        async with self._pool.connection(timeout=self.bound_s) as conn:
            cur = await conn.execute(statement, params)
            return await cur.fetchall()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        set_json_loads(ujson.loads, conn)
        timeout = _statement_timeout(self.bound_s)
        await conn.execute("SELECT set_config('statement_timeout', %s, false)", (timeout,))


async def _bounded(call: Coroutine[Any, Any, Rows], bound_s: float) -> Rows:
    """Await ``call`` for at most ``bound_s``. On timeout the call is cancelled
    but not waited for: psycopg may spend seconds cancelling a query on an
    unresponsive server, and the caller must not pay for that."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=bound_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_discard_outcome)
        raise DependencyUnavailable(f"postgres: no answer within {bound_s:g} s")
    try:
        return task.result()
    except (psycopg.Error, OSError) as exc:
        raise DependencyUnavailable(f"postgres: {one_line(exc)}") from exc


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


class PgEventLog:
    """EventLog over the outbox: numbered rows only, in seq order."""

    def __init__(self, db: PgDatabase, table_names: Names) -> None:
        self._db = db
        self._statement = table_names.render(READ_AFTER)
        self._head = table_names.render(HEAD)

    async def head_seq(self) -> int:
        """Raises DependencyUnavailable when Postgres does not answer within the bound."""
        rows = await self._db.query(self._head)
        return int(rows[0][0])

    async def read_after(self, channels: Sequence[str], after_seq: int, limit: int,
                         until_seq: int | None = None) -> list[LoggedEvent]:
        """Every event with ``seq > after_seq`` on ``channels``, in seq order.

        Raises:
            ReplayGap: more than ``limit`` events, some were deleted by retention,
                or Postgres did not answer within the bound.
        """
        if not channels:
            return []
        until = NO_SEQ_LIMIT if until_seq is None else until_seq
        params = {"channels": list(channels), "after": after_seq, "until": until, "limit": limit + 1}
        try:
            rows = await self._db.query(self._statement, params)
        except DependencyUnavailable as exc:
            raise ReplayGap(str(exc)) from exc
        oldest = rows[0][0] if rows else None
        if oldest is not None and after_seq + 1 < oldest:
            raise ReplayGap(f"events after seq {after_seq} were deleted by retention (oldest kept: {oldest})")
        events = []
        for _, seq, channel, event_type, payload in rows:
            if seq is None:
                continue
            try:
                events.append(LoggedEvent(seq, channel, encode_frame(event_type, payload, seq)))
            except EncodeError:
                continue  # no strict JSON form: never published either (relay/plan.py publishable)
        if len(events) > limit:
            raise ReplayGap(f"more than {limit} events after seq {after_seq}")
        return events


class PgMembership:
    """Membership from the members table. Grants are cached per (user,
    conversation) for ``membership_cache_s``; denials are not cached, so a member
    just added can subscribe at once. A revocation seen here (``forget``) drops the
    grant, also one a lookup already under way would cache. ``allowed_many`` asks
    for the lookups of many users in one query (``MEMBERSHIP_BATCH`` pairs each)."""

    def __init__(self, db: PgDatabase, table_names: Names, cache_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._statement = table_names.render(MEMBERS)
        self._cache_s = cache_s
        self._clock = clock
        self._granted_until: dict[tuple[str, str], float] = {}
        self._forgotten_at: dict[tuple[str, str], float] = {}

    async def allowed(self, user_id: str, conversation_ids: Sequence[str]) -> set[str]:
        """The subset of ``conversation_ids`` that ``user_id`` is a member of.

        Raises:
            DependencyUnavailable: Postgres did not answer (for ids not in the cache).
        """
        return (await self.allowed_many([(user_id, conversation_ids)]))[0]

    async def allowed_many(self, asked: Sequence[tuple[str, Sequence[str]]]) -> list[set[str]]:
        """``allowed`` for each (user, conversations) of ``asked``; what the cache does not
        hold is asked in as few queries as ``MEMBERSHIP_BATCH`` allows."""
        now = self._clock()
        unknown = list(dict.fromkeys((user_id, cid) for user_id, cids in asked for cid in cids
                                     if self._granted_until.get((user_id, cid), 0.0) <= now))
        members: set[tuple[str, str]] = set()
        for i in range(0, len(unknown), MEMBERSHIP_BATCH):
            chunk = unknown[i:i + MEMBERSHIP_BATCH]
            rows = await self._db.query(self._statement, {"users": [user_id for user_id, _ in chunk],
                                                          "conversations": [cid for _, cid in chunk]})
            members.update((row[0], row[1]) for row in rows)
        if self._cache_s > 0:
            self._remember(members, now)
        looked_up = set(unknown)  # the other pairs are cached grants
        return [{cid for cid in cids if (user_id, cid) in members or (user_id, cid) not in looked_up}
                for user_id, cids in asked]

    def forget(self, user_id: str, conversation_id: str) -> None:
        now = self._clock()
        self._granted_until.pop((user_id, conversation_id), None)
        self._forgotten_at = {key: at for key, at in self._forgotten_at.items() if at > now - self._cache_s}
        self._forgotten_at[(user_id, conversation_id)] = now

    def _remember(self, granted: set[tuple[str, str]], asked_at: float) -> None:
        if len(self._granted_until) + len(granted) > MEMBERSHIP_CACHE_MAX:
            self._granted_until.clear()  # rare; the next lookups refill it
        for pair in granted:
            if self._forgotten_at.get(pair, -math.inf) < asked_at:
                self._granted_until[pair] = asked_at + self._cache_s


class PgPublisher:
    """Publisher that appends an outbox row; the relay numbers and publishes it."""

    def __init__(self, db: PgDatabase, table_names: Names) -> None:
        self._db = db
        self._statement = table_names.render(APPEND)

    async def publish(self, channel: str, event_type: str, payload: Any) -> dict[str, Any]:
        """Append the event; returns ``{"id": N}`` (CONTRACT §2).

        Raises:
            ValueError: ``channel`` is not ``conv:<id>`` or ``user:<id>``.
            DependencyUnavailable: Postgres did not take the row within the bound.
        """
        params = _append_params(channel, event_type, payload)
        rows = await self._db.query(self._statement, params)
        return {"id": rows[0][0]}


class PgOutbox:
    """Owns the pool and the ports built on it."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        table_names = names(settings)
        self.db = PgDatabase(settings)
        self.log = PgEventLog(self.db, table_names)
        self.membership = PgMembership(self.db, table_names, settings.membership_cache_s, clock)
        self.publisher = PgPublisher(self.db, table_names)

    async def open(self) -> None:
        await self.db.open()

    async def check(self) -> bool:
        return await self.db.check()

    async def close(self) -> None:
        await self.db.close()


def append_event(settings: Settings, channel: str, event_type: str, payload: Any) -> int:
    """Append one outbox row synchronously (the CLI ``emit``); returns its id.

    Raises:
        ValueError: bad channel or table setting.
        DependencyUnavailable: Postgres is not configured or failed.
    """
    if not settings.postgres_dsn:
        raise DependencyUnavailable("postgres: POSTGRES_DSN is not set")
    statement = names(settings).render(APPEND)
    params = _append_params(channel, event_type, payload)
    try:
        with psycopg.connect(
            settings.postgres_dsn,
            autocommit=True,
            connect_timeout=_connect_timeout_s(settings),
            options=f"-c statement_timeout={_statement_timeout(settings.probe_timeout_s)}",
        ) as conn:
            row = conn.execute(statement, params).fetchone()
    except psycopg.Error as exc:
        raise DependencyUnavailable(f"postgres: {one_line(exc)}") from exc
    if row is None:
        raise DependencyUnavailable("postgres: the insert returned no id")
    return int(row[0])


def _append_params(channel: str, event_type: str, payload: Any) -> dict[str, Any]:
    if not is_valid_channel(channel):
        raise ValueError(f"channel {channel!r} is not conv:<id> or user:<id>")
    return {"channel": channel, "type": event_type, "payload": Jsonb(payload, dumps=ujson.dumps)}


def _connect_timeout_s(settings: Settings) -> int:
    """libpq takes whole seconds and treats anything under 2 as 2."""
    return max(2, math.ceil(settings.probe_timeout_s))


def _statement_timeout(bound_s: float) -> str:
    return f"{int(bound_s * 1000)}ms"
