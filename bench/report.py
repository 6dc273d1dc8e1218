"""Figures and tables: percentiles of one run, medians over repetitions, Markdown output."""

from __future__ import annotations

import statistics
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Metrics = dict[str, Any]


@dataclass
class Outcome:
    """One peer's result for one repetition of a scenario."""

    status: str  # "ok", "failed" or "skipped"
    metrics: Metrics = field(default_factory=dict)
    reason: str = ""


def latency_ms(latencies_us: array[int]) -> Metrics:
    """p50/p95/p99/max in milliseconds (nearest rank); empty when nothing arrived."""
    if not latencies_us:
        return {}
    ordered = sorted(latencies_us)
    last = len(ordered) - 1

    def rank(q: float) -> float:
        return ordered[min(last, int(q * len(ordered)))] / 1000

    return {"p50_ms": rank(0.50), "p95_ms": rank(0.95), "p99_ms": rank(0.99), "max_ms": ordered[last] / 1000}


def median_metrics(runs: Sequence[Metrics]) -> Metrics:
    """Per-key median over repetitions, for the keys whose values are numbers."""
    keys = {key for run in runs for key, value in run.items() if isinstance(value, (int, float))}
    medians: Metrics = {}
    for key in sorted(keys):
        values = [run[key] for run in runs if key in run]
        middle = statistics.median(values)
        exact = all(isinstance(value, int) for value in values) and float(middle).is_integer()
        medians[key] = int(middle) if exact else middle
    return medians


def summarize(outcomes: Sequence[Outcome]) -> Outcome:
    """Median over the successful repetitions; the first failure's reason is kept."""
    good = [outcome.metrics for outcome in outcomes if outcome.status == "ok"]
    bad = [outcome for outcome in outcomes if outcome.status != "ok"]
    reason = f"{len(bad)}/{len(outcomes)} reps {bad[0].status}: {bad[0].reason}" if bad else ""
    if not good:
        return Outcome(bad[0].status if bad else "failed", {}, bad[0].reason if bad else "no run")
    return Outcome("ok", median_metrics(good), reason)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def status_note(outcome: Outcome) -> str:
    """What the status column shows: ok, or why the peer did not give figures."""
    if outcome.status == "ok":
        return "ok" + (f" ({outcome.reason})" if outcome.reason else "")
    reason = outcome.reason.replace("|", "/").replace("\n", " ")
    return f"{outcome.status}: {reason[:240]}"
