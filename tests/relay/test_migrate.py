"""``migrate``: the CONTRACT §5 schema, idempotent, with the relay's trigger."""

from __future__ import annotations

import threading
from dataclasses import replace
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from tornado_gw import migrate
from tornado_gw.settings import Settings


def _columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str, str]]:
    return conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position", (table,)
    ).fetchall()


def _fresh(settings: Settings) -> Settings:
    suffix = uuid4().hex[:10]
    return replace(settings, outbox_table=f"box_{suffix}", members_table=f"mem_{suffix}")


def test_migrate_creates_the_contract_tables_and_can_run_again(pg_settings: Settings,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    settings = _fresh(pg_settings)
    assert migrate.run(settings) == 0
    assert migrate.run(settings) == 0
    ready = f"tables {settings.outbox_table} and {settings.members_table} are ready"
    assert capsys.readouterr().out.count(ready) == 2
    with psycopg.connect(settings.postgres_dsn or "") as conn:
        assert _columns(conn, settings.outbox_table) == [
            ("id", "bigint", "NO"), ("channel", "text", "NO"), ("event_type", "text", "NO"),
            ("payload", "jsonb", "NO"), ("created_at", "timestamp with time zone", "NO"),
            ("seq", "bigint", "YES"), ("published_at", "timestamp with time zone", "YES"),
        ]
        assert _columns(conn, settings.members_table) == [
            ("conversation_id", "text", "NO"), ("user_id", "text", "NO"),
        ]
        indexes = {row[0] for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (settings.outbox_table,))}
        assert any("(id) WHERE (published_at IS NULL)" in index for index in indexes), indexes
        assert any("(channel, seq)" in index for index in indexes), indexes
        assert any("UNIQUE INDEX" in index and "(seq)" in index for index in indexes), indexes


def test_migrate_gives_an_outbox_made_by_an_older_version_the_claim_index(pg_settings: Settings) -> None:
    settings = _fresh(pg_settings)
    assert migrate.run(settings) == 0
    index = f"{settings.outbox_table}_unnumbered_idx"
    with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))  # as the older migrate left it
        conn.execute(sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES ('conv:1', 't', '{{}}')")
                     .format(sql.Identifier(settings.outbox_table)))
        assert migrate.run(settings) == 0
        definitions = [row[0] for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (index,))]
        assert len(definitions) == 1 and definitions[0].endswith("(id) WHERE (seq IS NULL)"), definitions
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(settings.outbox_table))).fetchone() == (1,)


def test_migrated_outbox_notifies_the_relay_channel_on_commit(pg_settings: Settings) -> None:
    channel = f"{pg_settings.outbox_table}_inserted"
    with psycopg.connect(pg_settings.postgres_dsn or "", autocommit=True) as listener, \
            psycopg.connect(pg_settings.postgres_dsn or "") as writer:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        writer.execute(sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES ('conv:1', 't', '{{}}')")
                       .format(sql.Identifier(pg_settings.outbox_table)))
        assert list(listener.notifies(timeout=0.2)) == []  # nothing before COMMIT
        writer.commit()
        assert [n.channel for n in listener.notifies(timeout=5.0, stop_after=1)] == [channel]


def test_concurrent_migrates_both_succeed(pg_settings: Settings) -> None:
    settings = _fresh(pg_settings)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(migrate.run(settings))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [0, 0, 0]


def test_migrate_without_postgres_says_so_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate.run(Settings()) == 2
    err = capsys.readouterr().err
    assert err == "migrate: POSTGRES_DSN is not set; there is no Postgres to migrate\n"


def test_migrate_refuses_a_table_name_that_is_not_a_plain_identifier(
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(postgres_dsn="postgresql://root@127.0.0.1:1/x", outbox_table="outbox; DROP TABLE x")
    assert migrate.run(settings) == 2
    err = capsys.readouterr().err
    assert err.startswith("migrate: outbox_table: 'outbox; DROP TABLE x' is not a valid table name")


def test_migrate_with_postgres_down_fails_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate.run(Settings(postgres_dsn="postgresql://root@127.0.0.1:1/x")) == 1
    err = capsys.readouterr().err
    assert err.startswith("migrate: Postgres failed:") and err.count("\n") == 1
