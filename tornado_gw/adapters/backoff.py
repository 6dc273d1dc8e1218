"""The one retry delay of every reconnect loop (Redis subscriber, relay, the log head at start-up)."""

from __future__ import annotations


def backoff_s(attempt: int, *, base_s: float, cap_s: float, jitter: float) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): capped exponential with
    "equal jitter", so a fleet of relays and gateways does not retry in step.

    Args:
        jitter: a number in [0, 1) from the caller's random source.
    """
    ceiling = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + ceiling / 2 * jitter
