"""Postgres fixtures: one fresh database per test session, fresh tables per test.

The server comes from ``TEST_POSTGRES_DSN`` (default: the local one). When it
cannot be reached the tests FAIL with a message saying how to start it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tornado_gw.migrate import migrate_sync
from tornado_gw.settings import Settings

DEFAULT_POSTGRES_DSN = "postgresql://root@127.0.0.1:5432/postgres"
HOW_TO_START = (
    "start Postgres (e.g. `pg_ctlcluster 15 main start`, or "
    "`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`) "
    "or point TEST_POSTGRES_DSN at a server where you may create databases"
)


def server_dsn() -> str:
    """The DSN of the server the tests create their database on."""
    return os.environ.get("TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a database created for this test session and dropped after it."""
    server = server_dsn()
    admin = _connect_or_fail(server)
    database = f"tgw_test_{uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        try:
            yield make_conninfo(server, dbname=database)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def _connect_or_fail(server: str) -> psycopg.Connection:
    try:
        return psycopg.connect(server, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        problem = f"Postgres unreachable at {server}: {exc}"
    pytest.fail(f"{problem}\n{HOW_TO_START}", pytrace=False)


@pytest.fixture
def pg_settings(pg_dsn: str) -> Settings:
    """Settings with migrated tables of this test's own (``outbox_<hex>``,
    ``members_<hex>``) and its own Redis prefix; extend with ``dataclasses.replace``."""
    suffix = uuid4().hex[:10]
    settings = Settings(
        postgres_dsn=pg_dsn,
        outbox_table=f"outbox_{suffix}",
        members_table=f"members_{suffix}",
        prefix=f"t{suffix}:",
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate_sync(conn, settings)
    return settings
