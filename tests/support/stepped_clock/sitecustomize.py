"""Loaded by a gateway process started with this folder on PYTHONPATH (tests only).

Makes its wall clock steppable, as NTP steps a real one: each SIGUSR1 moves
``time.time`` forward by ``STEPPED_CLOCK_STEP_S`` seconds. The monotonic clock
is left alone. Installed before anything is imported, so even a module that
kept a reference to ``time.time`` sees the steps.
"""

import os
import signal
import time

_real_time = time.time
_step_s = float(os.environ.get("STEPPED_CLOCK_STEP_S", "3600"))
_offset_s = [0.0]


def _stepped_time() -> float:
    return _real_time() + _offset_s[0]


def _step(signum: int, frame: object) -> None:
    _offset_s[0] += _step_s


time.time = _stepped_time
signal.signal(signal.SIGUSR1, _step)
