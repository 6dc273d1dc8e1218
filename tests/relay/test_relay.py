"""The relay in this process against real Postgres and Redis: numbering, the
late-commit race, recovery, NOTIFY, retention, and outages of either dependency."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.relay.helpers import (
    Observer,
    TcpProxy,
    all_published,
    append,
    insert,
    observed_relay,
    outbox,
    rows,
)
from tests.support.redis import WAIT_S, eventually, run, split_host
from tornado_gw.adapters.pg_sql import names
from tornado_gw.settings import Settings


def test_relay_publishes_rows_in_id_order_with_one_increasing_seq(relay_settings: Settings) -> None:
    settings = replace(relay_settings, relay_batch_size=2)  # several batches

    async def scenario() -> None:
        async with observed_relay(settings) as observer:
            ids = await append(settings, [
                ("conv:1", "message.new", {"n": 0}),
                ("conv:2", "message.new", {"n": 1}),
                ("user:u7", "notice", {"n": 2}),
                ("conv:1", "message.new", {"n": 3}),
                ("conv:1", "message.edited", {"n": 4}),
            ])
            await observer.wait_for(5)
            published = await all_published(settings, 5)
        assert observer.frames == [
            ("conv:1", {"type": "message.new", "payload": {"n": 0}, "seq": 1}),
            ("conv:2", {"type": "message.new", "payload": {"n": 1}, "seq": 2}),
            ("user:u7", {"type": "notice", "payload": {"n": 2}, "seq": 3}),
            ("conv:1", {"type": "message.new", "payload": {"n": 3}, "seq": 4}),
            ("conv:1", {"type": "message.edited", "payload": {"n": 4}, "seq": 5}),
        ]
        assert [(row[0], row[3]) for row in published] == list(zip(ids, [1, 2, 3, 4, 5], strict=True))

    run(scenario())


def test_relay_reaches_redis_at_a_bracketed_ipv6_address(relay_settings: Settings) -> None:
    """The gateway and the relay read ``redis_host`` the same way (issue 9 §10)."""
    _, port = split_host(relay_settings.redis_host or "")
    settings = replace(relay_settings, redis_host=f"[::1]:{port}")

    async def scenario() -> None:
        async with observed_relay(settings) as observer:
            await append(settings, [("conv:6", "message.new", {"n": 0})])
            await observer.wait_for(1)
        assert observer.frames == [("conv:6", {"type": "message.new", "payload": {"n": 0}, "seq": 1})]

    run(scenario())


OVERFLOWING = "1" * 400 + ".5"  # jsonb keeps it; parsed as a float it is infinity


def test_relay_holds_back_a_payload_without_strict_json_and_goes_on(relay_settings: Settings) -> None:
    """Browsers cannot parse ``Infinity``: the row keeps its seq, is marked, never sent (issue 9 §13)."""
    raw = sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES ('conv:1', 'message.new', %s::jsonb)")

    async def scenario() -> None:
        async with observed_relay(relay_settings) as observer:
            with psycopg.connect(relay_settings.postgres_dsn or "", autocommit=True) as conn:
                conn.execute(raw.format(outbox(relay_settings)), ('{"n": ' + OVERFLOWING + "}",))
            await append(relay_settings, [("conv:1", "message.new", {"n": 2})])
            await observer.wait_for(1)
            published = await all_published(relay_settings, 2)
        assert observer.frames == [("conv:1", {"type": "message.new", "payload": {"n": 2}, "seq": 2})]
        assert [row[3] for row in published] == [1, 2]

    run(scenario())


def test_relay_never_skips_a_row_whose_transaction_commits_late(relay_settings: Settings) -> None:
    settings = relay_settings
    dsn = settings.postgres_dsn or ""

    async def scenario() -> None:
        async with observed_relay(settings) as observer, \
                await psycopg.AsyncConnection.connect(dsn) as slow, \
                await psycopg.AsyncConnection.connect(dsn, autocommit=True) as fast:
            # "slow" inserts first and keeps its transaction open.
            [late_id] = await insert(slow, settings, [("conv:1", "message.new", {"who": "late"})])
            [early_id] = await insert(fast, settings, [("conv:1", "message.new", {"who": "early"})])
            assert late_id < early_id
            await observer.wait_for(1)
            await slow.commit()
            await observer.wait_for(2)
            await append(settings, [("conv:1", "message.new", {"who": "sentinel"})])
            await observer.wait_for(3)
            await all_published(settings, 3)
        # Each row once, numbered in the order it became visible, not in id order.
        assert observer.frames == [
            ("conv:1", {"type": "message.new", "payload": {"who": "early"}, "seq": 1}),
            ("conv:1", {"type": "message.new", "payload": {"who": "late"}, "seq": 2}),
            ("conv:1", {"type": "message.new", "payload": {"who": "sentinel"}, "seq": 3}),
        ]

    run(scenario())


def test_relay_first_republishes_rows_a_dead_relay_numbered_with_their_seq(relay_settings: Settings) -> None:
    settings = relay_settings

    async def scenario() -> None:
        ids = await append(settings, [("conv:1", "message.new", {"n": n}) for n in range(4)])
        # What a relay killed between its numbering COMMIT and the published_at update leaves.
        numbered_by_dead_relay = sql.SQL("UPDATE {} SET seq = id - %s + 1 WHERE id < %s")
        async with await psycopg.AsyncConnection.connect(settings.postgres_dsn or "") as conn:
            await conn.execute(numbered_by_dead_relay.format(outbox(settings)), (ids[0], ids[2]))
        async with observed_relay(settings) as observer:
            await observer.wait_for(4)
            await all_published(settings, 4)
        assert _numbers_and_seqs(observer) == [(0, 1), (1, 2), (2, 3), (3, 4)]

    run(scenario())


def test_relay_wakes_on_notify_long_before_the_poll_interval(relay_settings: Settings) -> None:
    settings = replace(relay_settings, relay_poll_interval_s=60.0)

    async def scenario() -> None:
        async with observed_relay(settings) as observer:
            await append(settings, [("conv:1", "message.new", {"n": 0})])
            await observer.wait_for(1)
            await all_published(settings, 1)  # the relay is idle now, waiting for a NOTIFY
            committed = time.monotonic()
            await append(settings, [("conv:1", "message.new", {"n": 1})])
            await observer.wait_for(2, timeout=5.0)
            latency_s = time.monotonic() - committed
        assert observer.seqs() == [1, 2]
        assert latency_s < 1.0

    run(scenario())


def test_retention_deletes_old_published_rows_and_seq_keeps_increasing(relay_settings: Settings) -> None:
    settings = replace(relay_settings, outbox_retention_s=0.3)

    async def scenario() -> None:
        async with observed_relay(settings) as observer:
            await append(settings, [("conv:1", "message.new", {"n": n}) for n in range(3)])
            await observer.wait_for(3)
            remaining: list[tuple[object, ...]] = []

            async def only_newest_left() -> bool:
                remaining[:] = await rows(settings)
                return [row[3] for row in remaining] == [3]

            deadline = time.monotonic() + WAIT_S
            while not await only_newest_left():
                assert time.monotonic() < deadline, f"retention left {remaining}"
                await asyncio.sleep(0.05)
            await append(settings, [("conv:1", "message.new", {"n": 3})])
            await observer.wait_for(4)
        assert observer.seqs() == [1, 2, 3, 4]

    run(scenario())


def _numbers_and_seqs(observer: Observer) -> list[tuple[int, int]]:
    return [(frame["payload"]["n"], frame["seq"]) for _, frame in observer.frames]


def _state_lines(caplog: pytest.LogCaptureFixture, dependency: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "tornado_gw.relay.worker" and r.getMessage().startswith(
                (f"! {dependency} failed", f"= {dependency} recovered"))]


def _proxy_target(settings: Settings, dependency: str) -> tuple[str, int]:
    if dependency == "redis":
        return split_host(settings.redis_host or "")
    params = conninfo_to_dict(settings.postgres_dsn or "")
    return str(params.get("host", "127.0.0.1")), int(params.get("port", 5432))


def _through(settings: Settings, dependency: str, port: int) -> Settings:
    if dependency == "redis":
        return replace(settings, redis_host=f"127.0.0.1:{port}")
    dsn = make_conninfo(settings.postgres_dsn or "", host="127.0.0.1", port=port)
    return replace(settings, postgres_dsn=dsn)


@pytest.mark.parametrize("dependency", ["redis", "postgres"])
def test_relay_waits_out_an_outage_logs_it_once_and_loses_nothing(
        relay_settings: Settings, caplog: pytest.LogCaptureFixture, dependency: str) -> None:
    caplog.set_level(logging.INFO, logger="tornado_gw.relay.worker")
    proxy = TcpProxy(_proxy_target(relay_settings, dependency))

    async def scenario() -> None:
        await proxy.start()
        settings = _through(relay_settings, dependency, proxy.port)
        async with observed_relay(settings, redis_host=relay_settings.redis_host) as observer:
            await append(relay_settings, [("conv:1", "message.new", {"n": 0})])
            await observer.wait_for(1)
            await all_published(relay_settings, 1)
            await proxy.stop()
            await append(relay_settings, [("conv:1", "message.new", {"n": n}) for n in (1, 2)])
            await eventually(lambda: len(_state_lines(caplog, dependency)) == 1, "the relay to notice")
            await asyncio.sleep(0.5)  # a few retries meanwhile: still one line
            await proxy.start()
            await observer.wait_for(3)
            await all_published(relay_settings, 3)
        assert _numbers_and_seqs(observer) == [(0, 1), (1, 2), (2, 3)]
        lines = _state_lines(caplog, dependency)
        assert len(lines) == 2 and lines[1].startswith(f"= {dependency} recovered"), lines

    run(scenario())


def test_relay_that_loses_its_lock_reads_the_last_seq_again_when_it_takes_it_back(
        relay_settings: Settings) -> None:
    settings = relay_settings
    key = names(settings).lock_key
    lock = sql.SQL("SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' "
                   "AND classid = %s AND objid = %s ORDER BY granted DESC")
    number_as_other_relay = sql.SQL(
        "UPDATE {} SET seq = %s + id - %s, published_at = now() WHERE seq IS NULL")

    async def lock_holders(admin: psycopg.AsyncConnection[Any]) -> list[tuple[int, bool]]:
        cur = await admin.execute(lock, ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF))
        return await cur.fetchall()

    async def scenario() -> None:
        dsn = settings.postgres_dsn or ""
        async with observed_relay(settings) as observer, \
                await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other, \
                await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            await append(settings, [("conv:1", "message.new", {"n": n}) for n in range(3)])
            await observer.wait_for(3)
            await all_published(settings, 3)
            # Another relay queues for the lock, then this relay's session dies: the other one gets it.
            waiting = asyncio.create_task(other.execute("SELECT pg_advisory_lock(%s)", (key,)))
            deadline = time.monotonic() + WAIT_S
            while len(holders := await lock_holders(admin)) < 2:
                assert time.monotonic() < deadline, holders
                await asyncio.sleep(0.01)
            await admin.execute("SELECT pg_terminate_backend(%s)", (holders[0][0],))
            await asyncio.wait_for(waiting, WAIT_S)
            # While it leads, the other relay numbers and publishes seqs 4 and 5.
            ids = await append(settings, [("conv:1", "message.new", {"n": n}) for n in (3, 4)])
            await other.execute(number_as_other_relay.format(outbox(settings)), (4, ids[0]))
            await other.execute("SELECT pg_advisory_unlock(%s)", (key,))
            await append(settings, [("conv:1", "message.new", {"n": 5})])
            await observer.wait_for(4)
            await all_published(settings, 6)
        assert _numbers_and_seqs(observer) == [(0, 1), (1, 2), (2, 3), (5, 6)]

    run(scenario())
