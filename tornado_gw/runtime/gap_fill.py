"""Reading back what a broker outage lost, page by page (CONTRACT §4 and §6).

The gap runs from where the gateway's stream stopped (``LoadGap.after_seq``)
to the log's head read now: the broker has resubscribed every channel before
it reports itself up, so anything newer arrives live. The range is read in
windows of seqs; a window no wider than the page size can hold no more
events than a page, so an over-limit answer only ever means the window was
too wide, and any other ``ReplayGap`` means the gap truly cannot be filled.
Sparse windows widen, so a long gap on quiet channels costs few reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.ports import EventLog, ReplayGap
from tornado_gw.runtime.clock import now

log = logging.getLogger(__name__)
GAP_PAGE = 10_000  # events per read
MAX_WINDOW = 1_000_000  # seqs per read, at most


async def fill_gap(event_log: EventLog, effect: fx.LoadGap, decode: Callable[[bytes], Any],
                   submit: Callable[[c.Command], None], deadline_s: float, page: int = GAP_PAGE) -> None:
    """Answer ``effect`` with ``GapLoaded`` pages in seq order, the last one marked;
    exactly one last page, also on failure (``messages`` None)."""
    channels = effect.channels
    try:
        head = await asyncio.wait_for(event_log.head_seq(), deadline_s)
        after, window = effect.after_seq, page
        while True:
            until = max(after, min(head, after + window))
            try:
                events = await asyncio.wait_for(event_log.read_after(channels, after, page, until_seq=until),
                                                deadline_s)
            except ReplayGap:
                if window <= page:
                    raise
                window = page  # too wide for one page: narrow it and read again
                continue
            messages = tuple(c.BrokerMessage(e.channel, e.data, decode(e.data), now()) for e in events)
            after = until
            if after >= head:
                submit(c.GapLoaded(channels, messages, True, now()))
                return
            submit(c.GapLoaded(channels, messages, False, now()))
            if len(events) < page // 4:
                window = min(window * 4, MAX_WINDOW)
    except Exception as exc:  # ReplayGap, a timeout, the log unreachable: said, never silent
        log.warning("! gap after broker outage could not be filled: %s", exc or type(exc).__name__)
        submit(c.GapLoaded(channels, None, True, now()))
