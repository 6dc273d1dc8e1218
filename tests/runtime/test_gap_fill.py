"""After a broker outage the runtime reads back what was lost, from where the stream
stopped, page by page; a gap it cannot fill is announced (issue 9 item 1)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.runtime.rig import Fail, Runtime
from tornado_gw.core.records import LoggedEvent
from tornado_gw.runtime import gap_fill

PAGE = 50


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gap_fill, "GAP_PAGE", PAGE)


async def joined(rt: Runtime, *conversations: str) -> str:
    conn_id = rt.connect()
    rt.auth(conn_id, "alice")
    rt.subscribe(conn_id, *conversations)
    await rt.wait_for(conn_id, "subscribed")
    return conn_id


async def test_a_quiet_and_a_busy_conversation_get_everything_the_outage_lost() -> None:
    async with Runtime() as rt:
        a = await joined(rt, "quiet", "busy")
        before = [await rt.publish("quiet")] + [await rt.publish("busy", n) for n in range(4 * PAGE)]
        await rt.wait_for(a, "message.new", len(before))
        rt.broker.outage(True)
        lost = [await rt.publish("busy", n) for n in range(3 * PAGE)] + [await rt.publish("quiet")]
        rt.broker.outage(False)
        live = await rt.publish("busy")
        await rt.wait_for(a, "message.new", len(before) + len(lost) + 1)
        assert rt.seqs(a) == before + lost + [live]
        assert rt.frames(a, "replay.done") == []


async def test_a_gap_the_log_no_longer_holds_is_announced_then_live_goes_on() -> None:
    async with Runtime(log_events=10) as rt:
        a = await joined(rt, "c1")
        b = await joined(rt, "other")
        rt.broker.outage(True)
        for n in range(20):  # more than the log keeps: the first lost ones are gone
            await rt.publish("c1", n)
        rt.broker.outage(False)
        await rt.wait_for(a, "replay.done")
        live = await rt.publish("c1")
        await rt.wait_for(a, "message.new")
        assert [(f["type"], f.get("seq")) for f in rt.frames(a)][-2:] == [
            ("replay.done", None), ("message.new", live)]
        assert rt.frames(a, "replay.done")[0]["payload"] == {"count": 0, "recovered": False}
        assert rt.frames(b, "replay.done")[0]["payload"] == {"count": 0, "recovered": False}


async def test_a_log_that_fails_during_the_gap_fill_is_announced() -> None:
    async with Runtime(log=Fail()) as rt:
        a = await joined(rt, "c1")
        rt.broker.outage(True)
        await rt.publish("c1")
        rt.broker.outage(False)
        [done] = await rt.wait_for(a, "replay.done")
        assert done["payload"] == {"count": 0, "recovered": False}
        live = await rt.publish("c1")
        await rt.wait_for(a, "message.new")
        assert rt.seqs(a) == [live]


async def test_a_long_gap_on_quiet_channels_is_read_in_few_widening_windows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with Runtime() as rt:
        reads: list[tuple[int, int | None]] = []
        read_after = rt.log.read_after

        async def counted(channels: Sequence[str], after_seq: int, limit: int,
                          until_seq: int | None = None) -> list[LoggedEvent]:
            reads.append((after_seq, until_seq))
            return await read_after(channels, after_seq, limit, until_seq)

        monkeypatch.setattr(rt.log, "read_after", counted)
        a = await joined(rt, "quiet")
        rt.broker.outage(True)
        lost = [await rt.publish("quiet")]
        for n in range(40 * PAGE):  # elsewhere: seqs this gateway has no subscriber for
            await rt.publish("elsewhere", n)
        lost.append(await rt.publish("quiet"))
        rt.broker.outage(False)
        await rt.wait_for(a, "message.new", 2)
        assert rt.seqs(a) == lost
        assert len(reads) <= 5, reads  # 50, 200, 800, then the rest: not 40 pages
        assert [until for _, until in reads][-1] == lost[-1]
