"""The clock of the core: a periodic ``Tick`` carrying wall-clock time.

Wall-clock (UNIX) seconds, not the loop's monotonic time, because presence and
typing expiry times are compared across instances through Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tornado.ioloop import PeriodicCallback

from tornado_gw.core.commands import Command, FlushPresence, Tick

now = time.time


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
