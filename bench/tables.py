"""Markdown sections of the report, one layout per kind of scenario."""

from __future__ import annotations

import statistics
from collections import defaultdict

from bench.report import Metrics, Outcome, fmt, status_note, summarize, table

TITLES = {
    "fanout": "fanout: 1,000 connections, each in 5 of 100 conversations, 500 events/s (25,000 deliveries/s)",
    "latency": "latency: 1 event/s broadcast to 1,000 connections in one conversation",
    "latency_joining": "latency_joining: the latency layout measured right after the 1,000 joins, "
                       "without waiting for the presence they cause",
    "sweep": "sweep: rising delivery rate until p99 > 100 ms or a lost frame",
    "idle": "idle: server RSS per authenticated and subscribed connection",
    "gencost": "gencost: generator CPU per received message, same fanout load, picows+uvloop vs Node ws",
    "relay": "relay: outbox rows/s from COMMIT to PUBLISH (tornado_gw only: the peers have no outbox)",
    "resume": "resume: resume `auth` to `replay.done` with 1,000 missed events, on the other gateway "
              "(tornado_gw only: the peers have no outbox)",
}
TRAFFIC_HEADER = ["delivered/s", "lost", "p50 ms", "p95 ms", "p99 ms", "max ms",
                  "server CPU µs/msg", "server RSS MB", "generator CPU µs/msg", "other frames"]
TRAFFIC_KEYS = ["delivered_per_s", "lost", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                "server_cpu_us", "server_rss_mb", "gen_cpu_us", "other_frames"]

STEP_KEYS = ("delivered_per_s", "lost", "p99_ms", "server_cpu_us", "gen_cpu_us", "box_cores_busy")


def one_line(outcome: Outcome) -> str:
    """A progress line for stderr while the bench runs."""
    if outcome.status != "ok":
        return outcome.reason[:300]
    shown = {key: value for key, value in outcome.metrics.items()
             if key in (*TRAFFIC_KEYS, "saturation_per_s")
             or key.startswith(("kb_per_conn", "rows_per_s", "resume"))}
    return " ".join(f"{key}={fmt(value)}" for key, value in shown.items())


def section(name: str, outcomes: dict[str, list[Outcome]], smoke: bool = False) -> str:
    summaries = {who: summarize(runs) for who, runs in outcomes.items()}
    reps = max((len(runs) for runs in outcomes.values()), default=0)
    sizes = " Smoke sizes: a check that the harness works, not figures." if smoke else ""
    title = f"## {TITLES[name]}\n\nMedian of {reps} repetition(s).{sizes}\n\n"
    if name == "sweep":
        return title + _sweep(summaries, outcomes)
    if name == "idle":
        return title + _idle(summaries)
    if name == "relay":
        return title + _relay(summaries)
    if name == "resume":
        header = ["peer", "status", "ms (median of the rounds)", "max ms", "rounds per repetition"]
        keys = ("resume_ms", "resume_max_ms", "rounds")
        return title + table(header, [[who, status_note(s), *(s.metrics.get(k) for k in keys)]
                                      for who, s in summaries.items()]) + "\n"
    first = "generator" if name == "gencost" else "peer"
    rows = [[who, status_note(s), *(s.metrics.get(key) for key in TRAFFIC_KEYS)]
            for who, s in summaries.items()]
    return title + table([first, "status", *TRAFFIC_HEADER], rows) + "\n"


def _idle(summaries: dict[str, Outcome]) -> str:
    sizes = sorted({int(key.rsplit("_", 1)[1]) for s in summaries.values() for key in s.metrics
                    if key.startswith("kb_per_conn_")})
    header = ["peer", "status", *(f"KB/conn at {n:,}" for n in sizes), "RSS MB at max", "RSS MB at start"]
    rows = [[who, status_note(s), *(s.metrics.get(f"kb_per_conn_{n}") for n in sizes),
             s.metrics.get(f"rss_mb_{sizes[-1]}") if sizes else None, s.metrics.get("baseline_rss_mb")]
            for who, s in summaries.items()]
    return table(header, rows) + "\n"


def _relay(summaries: dict[str, Outcome]) -> str:
    """Per backlog committed at once (then one backlog again once the table has grown):
    rows/s, and the relay's CPU per row, which moves far less with the load on the box."""
    measured = [s.metrics for s in summaries.values() if s.metrics]
    backlogs = sorted({key.rsplit("_", 1)[1] for metrics in measured for key in metrics
                       if key.startswith("rows_per_s_") and key[-1].isdigit()}, key=int)
    grown = (f"backlog {fmt(measured[0].get('grown_backlog'))} on a table of "
             f"{fmt(measured[0].get('grown_table_rows'))} rows" if measured else "grown table")
    header = ["peer", "status", *(f"backlog {int(n):,}" for n in backlogs), grown]
    rows = [[who, status_note(s), *(_rate_and_cpu(s.metrics, n) for n in (*backlogs, "grown"))]
            for who, s in summaries.items()]
    return "Cells: rows/s (relay CPU µs per row).\n\n" + table(header, rows) + "\n"


def _rate_and_cpu(metrics: Metrics, backlog: str) -> str | None:
    rate, cpu = metrics.get(f"rows_per_s_{backlog}"), metrics.get(f"relay_cpu_us_{backlog}")
    return None if rate is None else f"{fmt(rate)} ({fmt(cpu)} µs)"


def _sweep(summaries: dict[str, Outcome], outcomes: dict[str, list[Outcome]]) -> str:
    rows = [[who, status_note(s), s.metrics.get("saturation_per_s")] for who, s in summaries.items()]
    text = table(["peer", "status", "saturation deliveries/s (p99 ≤ 100 ms, none lost)"], rows) + "\n"
    detail = []
    for who, runs in outcomes.items():
        by_rate: dict[float, list[Metrics]] = defaultdict(list)
        for run in runs:
            for step in run.metrics.get("steps", []):
                by_rate[step["offered_per_s"]].append(step)
        for rate, steps in sorted(by_rate.items()):
            detail.append([who, rate, len(steps), *(_median(steps, key) for key in STEP_KEYS)])
    header = ["peer", "offered/s", "reps reaching it", "delivered/s", "lost", "p99 ms", "server CPU µs/msg",
              "generator CPU µs/msg", "box cores busy"]
    note = "\nSteps (medians over the repetitions that reached them):\n\n"
    return text + note + table(header, detail) + "\n"


def _median(steps: list[Metrics], key: str) -> float | None:
    values = [step[key] for step in steps if key in step]
    return statistics.median(values) if values else None
