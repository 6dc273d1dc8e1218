"""One contract suite for the ``EventLog`` port (ports.py), run against the
embedded default's ``MemoryLog`` and the Postgres outbox (``PgEventLog``).

The memory log is the fake the core and web tests trust; it is trusted because
it passes exactly these tests beside the real thing. Events are written the way
each source gets them in production: published through the memory log, which
numbers them; written to the outbox as rows the relay has numbered and marked.
Trimming is the bounded log's ``memory_log_events`` and the outbox's retention.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support.redis import run
from tornado_gw.adapters.memory import MemoryBroker, MemoryLog
from tornado_gw.adapters.pg_outbox import PgOutbox
from tornado_gw.ports import EventLog, ReplayGap
from tornado_gw.settings import Settings

Event = tuple[str, str, Any]  # (channel, event_type, payload)
Scenario = Callable[[EventLog], Awaitable[None]]


class Source:
    """A log under test and how events get into it."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.request = request

    @asynccontextmanager
    async def log(self, events: list[Event], keep: int | None = None) -> AsyncIterator[EventLog]:
        """The log holding ``events`` numbered 1, 2, ... of which only the last ``keep`` are kept."""
        if self.kind == "memory":
            memory = MemoryLog(MemoryBroker(), max_events=keep or 10_000)
            for channel, kind, payload in events:
                await memory.publish(channel, kind, payload)
            yield memory
            return
        settings: Settings = self.request.getfixturevalue("pg_settings")
        _numbered_rows(settings, events, keep)
        pg = PgOutbox(settings)
        await pg.open()
        try:
            yield pg.log
        finally:
            await pg.close()


def _numbered_rows(settings: Settings, events: list[Event], keep: int | None) -> None:
    """Rows as the relay leaves them (numbered, published), minus what retention deleted."""
    table = sql.Identifier(settings.outbox_table)
    insert = sql.SQL("INSERT INTO {} (channel, event_type, payload, seq, published_at) "
                     "VALUES (%s, %s, %s, %s, now())").format(table)
    with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
        for seq, (channel, kind, payload) in enumerate(events, 1):
            conn.execute(insert, (channel, kind, Jsonb(payload), seq))
        if keep is not None:
            conn.execute(sql.SQL("DELETE FROM {} WHERE seq <= %s").format(table), (len(events) - keep,))


@pytest.fixture(params=["memory", "postgres"])
def source(request: pytest.FixtureRequest) -> Source:
    return Source(request.param, request)


def _frames(events: list[Any]) -> list[tuple[int, str, Any]]:
    return [(e.seq, e.channel, json.loads(e.data)) for e in events]


EVENTS: list[Event] = [
    ("conv:1", "message.new", {"text": "hé/llo", "n": [1, 2]}),
    ("conv:2", "message.new", {"n": 2}),
    ("user:u7", "notice", {"n": 3}),
    ("conv:1", "message.edited", {"n": 4}),
]


def test_read_after_is_every_event_after_the_seq_on_the_channels_as_client_frames(source: Source) -> None:
    async def scenario() -> None:
        async with source.log(EVENTS) as log:
            assert _frames(await log.read_after(["conv:1", "user:u7"], 0, 10)) == [
                (1, "conv:1", {"type": "message.new", "payload": {"text": "hé/llo", "n": [1, 2]}, "seq": 1}),
                (3, "user:u7", {"type": "notice", "payload": {"n": 3}, "seq": 3}),
                (4, "conv:1", {"type": "message.edited", "payload": {"n": 4}, "seq": 4}),
            ]
            assert [e.seq for e in await log.read_after(["conv:1", "conv:2"], 1, 10)] == [2, 4]
            assert b" " not in (await log.read_after(["conv:2"], 0, 10))[0].data  # compact

    run(scenario())


def test_read_after_nothing_new_is_empty(source: Source) -> None:
    async def scenario() -> None:
        async with source.log(EVENTS) as log:
            assert await log.read_after(["conv:1"], 4, 10) == []
            assert await log.read_after(["conv:9"], 0, 10) == []
            assert await log.read_after(["conv:1"], 99, 10) == []  # a last_seq from the future
            assert await log.read_after([], 0, 10) == []

    run(scenario())


def test_read_after_more_than_the_limit_is_a_gap_and_exactly_the_limit_is_not(source: Source) -> None:
    async def scenario() -> None:
        async with source.log([("conv:1", "t", {"n": n}) for n in range(5)]) as log:
            with pytest.raises(ReplayGap):
                await log.read_after(["conv:1"], 0, 4)
            assert [e.seq for e in await log.read_after(["conv:1"], 0, 5)] == [1, 2, 3, 4, 5]
            assert [e.seq for e in await log.read_after(["conv:1"], 3, 2)] == [4, 5]

    run(scenario())


def test_read_after_until_a_seq_reads_one_window_and_counts_only_it(source: Source) -> None:
    """What a gap fill pages by: events in (after_seq, until_seq], the limit applying to them."""
    async def scenario() -> None:
        async with source.log([("conv:1", "t", {"n": n}) for n in range(8)]) as log:
            assert [e.seq for e in await log.read_after(["conv:1"], 2, 3, until_seq=5)] == [3, 4, 5]
            assert await log.read_after(["conv:1"], 5, 3, until_seq=5) == []

    run(scenario())


def test_read_after_trimmed_events_is_a_gap_on_every_channel(source: Source) -> None:
    async def scenario() -> None:
        async with source.log([("conv:1", "t", {"n": n}) for n in range(5)], keep=3) as log:  # 1, 2 gone
            for channels in (["conv:1"], ["conv:other"]):
                with pytest.raises(ReplayGap):
                    await log.read_after(channels, 1, 10)
            assert [e.seq for e in await log.read_after(["conv:1"], 2, 10)] == [3, 4, 5]

    run(scenario())


def test_head_seq_is_the_highest_seq_or_zero(source: Source) -> None:
    async def scenario() -> None:
        async with source.log([]) as log:
            assert await log.head_seq() == 0
        async with source.log(EVENTS, keep=2) as log:
            assert await log.head_seq() == 4

    run(scenario())
