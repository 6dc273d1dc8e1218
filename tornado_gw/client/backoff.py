"""Reconnect delays: capped exponential backoff with "full jitter".

Full jitter (a uniform draw between 0 and the capped exponential) spreads the
clients of a restarted gateway over the whole window, so they do not come back
in step (AWS Architecture Blog, "Exponential Backoff And Jitter"). The relay's
backoff (``relay/plan.py``) keeps half its delay on purpose; a client may not
import the server side, and wants the wider spread.
"""

from __future__ import annotations


def reconnect_delay_s(attempt: int, *, base_s: float, cap_s: float, jitter: float) -> float:
    """Delay before reconnect number ``attempt`` (1, 2, ...).

    Args:
        jitter: a number in [0, 1) from the caller's random source.
    """
    return min(cap_s, base_s * 2 ** max(0, attempt - 1)) * jitter
