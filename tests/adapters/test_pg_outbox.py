"""The Postgres adapters against a real Postgres: replay, membership, publish, health."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import ujson
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support.redis import run
from tornado_gw.adapters.pg_outbox import PgOutbox, append_event
from tornado_gw.ports import DependencyUnavailable, ReplayGap
from tornado_gw.settings import Settings


@asynccontextmanager
async def opened(settings: Settings, clock: list[float] | None = None) -> AsyncIterator[PgOutbox]:
    pg = PgOutbox(settings, clock=(lambda: clock[0]) if clock else time.monotonic)
    await pg.open()
    try:
        yield pg
    finally:
        await pg.close()


def numbered(settings: Settings, events: list[tuple[int | None, str, object]]) -> None:
    """Outbox rows ``(seq, channel, payload)`` as the relay leaves them (seq None: not yet numbered)."""
    statement = sql.SQL(
        "INSERT INTO {} (channel, event_type, payload, seq, published_at) VALUES "
        "(%s, 'message.new', %s, %s, CASE WHEN %s::bigint IS NULL THEN NULL ELSE now() END)"
    ).format(sql.Identifier(settings.outbox_table))
    with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
        for seq, channel, payload in events:
            conn.execute(statement, (channel, Jsonb(payload), seq, seq))


def members(settings: Settings, pairs: list[tuple[str, str]], *, remove: bool = False) -> None:
    template = "DELETE FROM {} WHERE conversation_id = %s AND user_id = %s" if remove else (
        "INSERT INTO {} VALUES (%s, %s)"
    )
    with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
        for pair in pairs:
            conn.execute(sql.SQL(template).format(sql.Identifier(settings.members_table)), pair)


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_read_after_returns_the_channels_events_after_the_seq_in_seq_order(pg_settings: Settings) -> None:
    numbered(pg_settings, [(1, "conv:1", {"n": 1}), (2, "conv:2", {"n": 2}), (3, "conv:1", {"n": 3}),
                           (4, "user:u7", {"n": 4}), (5, "conv:2", {"n": 5}), (None, "conv:1", {"n": 6})])

    async def scenario() -> None:
        async with opened(pg_settings) as pg:
            events = await pg.log.read_after(["conv:1", "user:u7"], 1, 100)
            assert [(e.seq, e.channel) for e in events] == [(3, "conv:1"), (4, "user:u7")]
            assert ujson.loads(events[0].data) == {"type": "message.new", "payload": {"n": 3}, "seq": 3}
            assert await pg.log.read_after(["conv:2"], 5, 100) == []
            assert await pg.log.read_after([], 0, 100) == []
            everything = await pg.log.read_after(["conv:1", "conv:2", "user:u7"], 0, 5)
            assert [e.seq for e in everything] == [1, 2, 3, 4, 5]

    run(scenario())


def test_read_after_skips_events_without_a_strict_json_form(pg_settings: Settings) -> None:
    """The relay never publishes them (relay/plan.py publishable), so replay skips them too."""
    numbered(pg_settings, [(1, "conv:1", {"n": 1}), (3, "conv:1", {"n": 3})])
    raw = sql.SQL("INSERT INTO {} (channel, event_type, payload, seq, published_at) "
                  "VALUES ('conv:1', 'message.new', %s::jsonb, 2, now())")
    with psycopg.connect(pg_settings.postgres_dsn or "", autocommit=True) as conn:
        conn.execute(raw.format(sql.Identifier(pg_settings.outbox_table)), ('{"n": ' + "1" * 400 + ".5}",))

    async def scenario() -> None:
        async with opened(pg_settings) as pg:
            assert [e.seq for e in await pg.log.read_after(["conv:1"], 0, 10)] == [1, 3]

    run(scenario())


def test_read_after_more_than_the_limit_is_a_replay_gap(pg_settings: Settings) -> None:
    numbered(pg_settings, [(seq, "conv:1", {"n": seq}) for seq in range(1, 5)])

    async def scenario() -> None:
        async with opened(pg_settings) as pg:
            with pytest.raises(ReplayGap, match="more than 3 events"):
                await pg.log.read_after(["conv:1"], 0, 3)
            assert [e.seq for e in await pg.log.read_after(["conv:1"], 0, 4)] == [1, 2, 3, 4]

    run(scenario())


def test_read_after_events_deleted_by_retention_is_a_replay_gap(pg_settings: Settings) -> None:
    numbered(pg_settings, [(seq, "conv:1", {"n": seq}) for seq in range(5, 8)])  # 1..4 deleted

    async def scenario() -> None:
        async with opened(pg_settings) as pg:
            with pytest.raises(ReplayGap, match="deleted by retention"):
                await pg.log.read_after(["conv:9"], 2, 100)
            assert [e.seq for e in await pg.log.read_after(["conv:1"], 4, 100)] == [5, 6, 7]

    run(scenario())


@pytest.mark.parametrize("server", ["refusing", "silent"])
def test_read_after_without_postgres_is_a_prompt_replay_gap(pg_settings: Settings, server: str) -> None:
    async def scenario(port: int) -> None:
        dsn = f"postgresql://root@127.0.0.1:{port}/x"
        settings = replace(pg_settings, postgres_dsn=dsn, probe_timeout_s=1.0)
        async with opened(settings) as pg:
            started = time.monotonic()
            with pytest.raises(ReplayGap, match="postgres"):
                await pg.log.read_after(["conv:1"], 0, 100)
            assert time.monotonic() - started < 2.0
            assert await pg.check() is False

    if server == "silent":
        with silent_server() as port:
            run(scenario(port))
    else:
        run(scenario(closed_port()))


def test_check_is_true_while_postgres_answers(pg_settings: Settings) -> None:
    async def scenario() -> None:
        async with opened(pg_settings) as pg:
            assert await pg.check() is True

    run(scenario())


def test_membership_grants_only_the_users_conversations(pg_settings: Settings) -> None:
    members(pg_settings, [("c1", "alice"), ("c2", "alice"), ("c3", "bob")])

    async def scenario() -> None:
        async with opened(pg_settings) as pg:
            assert await pg.membership.allowed("alice", ["c1", "c3", "c2", "c9", "c1"]) == {"c1", "c2"}
            assert await pg.membership.allowed("bob", ["c1", "c2"]) == set()
            assert await pg.membership.allowed("carol", []) == set()

    run(scenario())


def test_membership_allowed_many_answers_each_user_in_one_query(pg_settings: Settings) -> None:
    """A resume storm asks for thousands of users at once (bench/resume_storm.py)."""
    members(pg_settings, [(f"c{n % 7}", f"u{n}") for n in range(300)])

    async def scenario() -> None:
        async with opened(pg_settings) as pg:
            queries = 0
            query = pg.db.query

            async def counted(*args: Any) -> Any:
                nonlocal queries
                queries += 1
                return await query(*args)

            pg.db.query = counted  # type: ignore[method-assign]
            asked = [(f"u{n}", [f"c{n % 7}", f"c{(n + 1) % 7}", f"c{n % 7}"]) for n in range(300)]
            assert await pg.membership.allowed_many(asked) == [{f"c{n % 7}"} for n in range(300)]
            assert queries == 1
            assert await pg.membership.allowed_many([("u1", []), ("nobody", ["c1"])]) == [set(), set()]

    run(scenario())


def test_membership_caches_grants_for_the_cache_time_but_never_denials(pg_settings: Settings) -> None:
    settings = replace(pg_settings, membership_cache_s=5.0)
    members(settings, [("c1", "alice")])
    clock = [1000.0]

    async def scenario() -> None:
        async with opened(settings, clock) as pg:
            assert await pg.membership.allowed("alice", ["c1", "c2"]) == {"c1"}
            members(settings, [("c1", "alice")], remove=True)
            members(settings, [("c2", "alice")])
            clock[0] += 4.9
            assert await pg.membership.allowed("alice", ["c1", "c2"]) == {"c1", "c2"}  # c1 cached, c2 new
            clock[0] += 0.2
            assert await pg.membership.allowed("alice", ["c1", "c2"]) == {"c2"}  # c1's grant expired

    run(scenario())


def test_a_revocation_drops_the_cached_grant_also_one_a_lookup_under_way_would_cache(
        pg_settings: Settings) -> None:
    settings = replace(pg_settings, membership_cache_s=5.0)
    members(settings, [("c1", "alice")])
    clock = [1000.0]

    async def scenario() -> None:
        async with opened(settings, clock) as pg:
            assert await pg.membership.allowed("alice", ["c1"]) == {"c1"}
            members(settings, [("c1", "alice")], remove=True)
            pg.membership.forget("alice", "c1")
            assert await pg.membership.allowed("alice", ["c1"]) == set()  # asked again, not cached

            members(settings, [("c1", "alice")])
            under_way = asyncio.ensure_future(pg.membership.allowed("alice", ["c1"]))
            await asyncio.sleep(0)  # it has started
            pg.membership.forget("alice", "c1")  # a removal seen meanwhile
            assert await under_way == {"c1"}  # true when it asked...
            members(settings, [("c1", "alice")], remove=True)
            assert await pg.membership.allowed("alice", ["c1"]) == set()  # ...but it cached nothing

    run(scenario())


def test_membership_without_postgres_raises_dependency_unavailable(pg_settings: Settings) -> None:
    async def scenario() -> None:
        settings = replace(pg_settings, postgres_dsn=f"postgresql://root@127.0.0.1:{closed_port()}/x",
                           probe_timeout_s=0.5)
        async with opened(settings) as pg:
            with pytest.raises(DependencyUnavailable, match="postgres"):
                await pg.membership.allowed("alice", ["c1"])

    run(scenario())


def test_publish_appends_an_unnumbered_outbox_row(pg_settings: Settings) -> None:
    async def scenario() -> None:
        async with opened(pg_settings) as pg:
            first = await pg.publisher.publish("conv:1", "message.new", {"text": "hi"})
            second = await pg.publisher.publish("user:u1", "notice", {"text": "yo"})
            assert second["id"] > first["id"]
            with pytest.raises(ValueError, match="conv:<id> or user:<id>"):
                await pg.publisher.publish("conv:*", "message.new", {})
            assert await pg.log.read_after(["conv:1"], 0, 10) == []  # not numbered until the relay runs

    run(scenario())
    with psycopg.connect(pg_settings.postgres_dsn or "") as conn:
        statement = sql.SQL("SELECT channel, event_type, payload, seq FROM {} ORDER BY id")
        stored = conn.execute(statement.format(sql.Identifier(pg_settings.outbox_table))).fetchall()
    assert stored == [
        ("conv:1", "message.new", {"text": "hi"}, None),
        ("user:u1", "notice", {"text": "yo"}, None),
    ]


def test_append_event_writes_a_row_synchronously(pg_settings: Settings) -> None:
    first = append_event(pg_settings, "conv:7", "message.new", {"text": "a"})
    assert append_event(pg_settings, "conv:7", "message.new", {"text": "b"}) == first + 1
    with pytest.raises(DependencyUnavailable, match="POSTGRES_DSN is not set"):
        append_event(replace(pg_settings, postgres_dsn=None), "conv:7", "message.new", {})
    with pytest.raises(DependencyUnavailable, match="postgres"):
        append_event(replace(pg_settings, postgres_dsn=f"postgresql://root@127.0.0.1:{closed_port()}/x"),
                     "conv:7", "message.new", {})
