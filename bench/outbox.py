"""The ``relay`` and ``resume`` scenarios: tornado_gw's Postgres outbox, measured by
``bench/durable.py`` in the project's interpreter (it needs psycopg and the e2e harness,
which the bench's venv does not have). One repetition is one run of that script.

The other peers have no outbox: they are reported as skipped, and so is tornado_gw when
Postgres cannot be reached (``BENCH_POSTGRES_DSN``, default the local server).
"""

from __future__ import annotations

import json
import subprocess

from bench.peers import REPO, Peer, gw_python
from bench.report import Metrics
from bench.scenarios import Context, RunFailed

TIMEOUT_S = 600


class Skipped(Exception):
    """This peer or machine cannot give the figure; the reason says why."""


def relay(peer: Peer, ctx: Context) -> Metrics:
    return _durable("relay", peer, ctx)


def resume(peer: Peer, ctx: Context) -> Metrics:
    return _durable("resume", peer, ctx)


def _durable(scenario: str, peer: Peer, ctx: Context) -> Metrics:
    if peer.name != "tornado_gw":
        raise Skipped("no outbox: only tornado_gw has the Postgres outbox and relay")
    argv = [gw_python(), "-m", "bench.durable", scenario, "--redis", ctx.redis_host]
    try:
        done = subprocess.run([*argv, *(["--smoke"] if ctx.smoke else [])], cwd=REPO, capture_output=True,
                              text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RunFailed(f"bench.durable {scenario} still running after {TIMEOUT_S} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise RunFailed(f"bench.durable {scenario} exited with {done.returncode}: {tail or '(no output)'}")
    metrics: Metrics = json.loads(lines[-1])
    if "skipped" in metrics:
        raise Skipped(metrics["skipped"])
    return metrics
