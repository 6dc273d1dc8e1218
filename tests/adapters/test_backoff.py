"""The one reconnect delay (adapters/backoff.py) and the one-line Postgres error (pg_sql.one_line)."""

from __future__ import annotations

import pytest

from tornado_gw.adapters.backoff import backoff_s
from tornado_gw.adapters.pg_sql import one_line


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(1, 0.0, 0.1), (1, 0.999999, 0.2), (2, 0.0, 0.2), (3, 0.5, 0.6), (10, 0.0, 2.5), (10, 0.999999, 5.0)],
)
def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half(attempt: int, jitter: float,
                                                                     expected: float) -> None:
    assert backoff_s(attempt, base_s=0.2, cap_s=5.0, jitter=jitter) == pytest.approx(expected, abs=1e-5)


def test_one_line_folds_a_multiline_message() -> None:
    assert one_line(OSError("connection failed:\n  is the server running?")) == (
        "connection failed: is the server running?"
    )
    assert one_line(TimeoutError()) == "TimeoutError"
