"""``python -m tornado_gw migrate``: create the CONTRACT §5 schema, idempotently.

Safe to run on every deploy and from several hosts at once: every statement is
``IF NOT EXISTS`` / ``OR REPLACE``, and the whole run is one transaction behind
a transaction-level advisory lock (concurrent ``CREATE TABLE IF NOT EXISTS``
can otherwise fail on a duplicate catalog entry). Needs PostgreSQL 14 or newer
(``CREATE OR REPLACE TRIGGER``).
"""

from __future__ import annotations

import asyncio
import sys

import psycopg
from psycopg import sql

from tornado_gw.adapters.pg_sql import names, one_line
from tornado_gw.settings import Settings

# Any fixed key: it only has to be the same for every migrate run.
_MIGRATE_LOCK_KEY = 0x7467_775F_6D69_6772  # "tgw_migr"

_SCHEMA = (
    # CONTRACT §5, column for column.
    """CREATE TABLE IF NOT EXISTS {outbox} (
      id           BIGSERIAL PRIMARY KEY,
      channel      TEXT NOT NULL,
      event_type   TEXT NOT NULL,
      payload      JSONB NOT NULL,
      created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
      seq          BIGINT UNIQUE,
      published_at TIMESTAMPTZ
    )""",
    """CREATE TABLE IF NOT EXISTS {members} (
      conversation_id TEXT NOT NULL,
      user_id         TEXT NOT NULL,
      PRIMARY KEY (conversation_id, user_id)
    )""",
    # The relay's recovery query scans only rows not yet published...
    "CREATE INDEX IF NOT EXISTS {unpublished_index} ON {outbox} (id) WHERE published_at IS NULL",
    # ...and its claim only rows not yet numbered (added later: existing tables get it here).
    "CREATE INDEX IF NOT EXISTS {unnumbered_index} ON {outbox} (id) WHERE seq IS NULL",
    # Replay: events of some channels after a seq, in seq order.
    "CREATE INDEX IF NOT EXISTS {channel_seq_index} ON {outbox} (channel, seq) WHERE seq IS NOT NULL",
    # Wakes the relay at COMMIT of any insert (NOTIFY is transactional); one
    # notification per statement, and Postgres folds repeats within a transaction.
    """CREATE OR REPLACE FUNCTION {notify_function}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_notify(TG_ARGV[0], '');
      RETURN NULL;
    END
    $$""",
    """CREATE OR REPLACE TRIGGER {notify_trigger} AFTER INSERT ON {outbox}
    FOR EACH STATEMENT EXECUTE FUNCTION {notify_function}({notify_channel_text})""",
)


def statements(settings: Settings) -> list[sql.Composed]:
    """The DDL for ``settings``, in order. Raises ValueError naming a bad table setting."""
    table_names = names(settings)
    return [table_names.render(sql.SQL(text)) for text in _SCHEMA]


async def migrate(conn: psycopg.AsyncConnection, settings: Settings) -> None:
    """Create the outbox and members tables, their indexes and the NOTIFY trigger.

    Raises:
        ValueError: a table name setting is not a plain identifier.
        psycopg.Error: Postgres refused or could not be reached.
    """
    ddl = statements(settings)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK_KEY,))
        for statement in ddl:
            await conn.execute(statement)


def migrate_sync(conn: psycopg.Connection, settings: Settings) -> None:
    """:func:`migrate` on a synchronous connection (test fixtures, scripts)."""
    ddl = statements(settings)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK_KEY,))
        for statement in ddl:
            conn.execute(statement)


def run(settings: Settings) -> int:
    """CLI entry: 0 when the schema is in place, 2 when misconfigured, 1 when Postgres fails."""
    if not settings.postgres_dsn:
        print("migrate: POSTGRES_DSN is not set; there is no Postgres to migrate", file=sys.stderr)
        return 2
    try:
        names(settings)
    except ValueError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_migrate_dsn(settings.postgres_dsn, settings))
    except psycopg.Error as exc:
        print(f"migrate: Postgres failed: {one_line(exc)}", file=sys.stderr)
        return 1
    print(f"migrate: tables {settings.outbox_table} and {settings.members_table} are ready")
    return 0


async def _migrate_dsn(dsn: str, settings: Settings) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        await migrate(conn, settings)

