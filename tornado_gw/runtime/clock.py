"""The gateway's clock: monotonic seconds, counted on the UNIX epoch.

``now()`` is ``time.monotonic()`` plus an offset read once from the wall clock
at start-up. Every ``at`` of a command comes from it, so the deadlines the core
derives (auth and idle timeouts, typing windows, the rate limiter, token
expiry) never jump when NTP steps the wall clock: a step of an hour used to
close every connection with 4004 (issue 9 §8). Its values still read as UNIX
seconds, as the presence and typing expiry times compared across instances
through Redis must. The wall clock itself (``wall_now``) is read only where its
meaning is the calendar: a token's ``exp`` (converted by the edge into this
clock) and log lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tornado.ioloop import PeriodicCallback

from tornado_gw.core.commands import Command, FlushPresence, Tick

_EPOCH_OFFSET_S = time.time() - time.monotonic()


def now() -> float:
    """Seconds on the gateway's clock (monotonic; near UNIX time)."""
    return time.monotonic() + _EPOCH_OFFSET_S


def wall_now() -> float:
    """UNIX seconds of the wall clock, for calendar times such as a token's ``exp``."""
    return time.time()


def start_ticking(submit: Callable[[Command], None], interval_s: float) -> PeriodicCallback:
    """Submit ``Tick(now())`` every ``interval_s``; returns the started callback."""
    ticker = PeriodicCallback(lambda: submit(Tick(now())), interval_s * 1000.0)
    ticker.start()
    return ticker


def start_presence_flushing(submit: Callable[[Command], None], batch_ms: float) -> PeriodicCallback:
    """Submit ``FlushPresence(now())`` four times per ``presence_batch_ms`` (at most every
    10 ms): a batch leaves at most a quarter of a batch after its time (``core/presence.py``
    rule 3)."""
    flusher = PeriodicCallback(lambda: submit(FlushPresence(now())), max(batch_ms / 4, 10.0))
    flusher.start()
    return flusher
