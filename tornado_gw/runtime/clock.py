"""The clock of the core: a periodic ``Tick`` carrying wall-clock time.

Wall-clock (UNIX) seconds, not the loop's monotonic time, because presence and
typing expiry times are compared across instances through Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tornado.ioloop import PeriodicCallback

from tornado_gw.core.commands import Command, Tick

now = time.time


def start_ticking(submit: Callable[[Command], None], interval_s: float) -> PeriodicCallback:
    """Submit ``Tick(now())`` every ``interval_s``; returns the started callback."""
    ticker = PeriodicCallback(lambda: submit(Tick(now())), interval_s * 1000.0)
    ticker.start()
    return ticker
