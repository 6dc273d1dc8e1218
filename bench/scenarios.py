"""The scenarios: one repetition of each against one running peer.

Every repetition starts a fresh server under a fresh Redis prefix, connects the
generator (authenticated and subscribed), proves delivery with one warm-up event per
conversation, then measures. Every wait has a deadline; the server and the generator
are stopped whatever happens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import redis

from bench import procstat
from bench.fleet import Fleet
from bench.peers import Peer, RunningPeer
from bench.report import Metrics, latency_ms
from bench.workload import Publisher, Workload, make_clients, small_groups

FANOUT = Workload(connections=1000, conversations=100, per_connection=5, event_rate=500, duration_s=10)
LATENCY = Workload(connections=1000, conversations=1, per_connection=1, event_rate=1, duration_s=15)
SWEEP_BASE = Workload(connections=1000, conversations=100, per_connection=5, event_rate=0, duration_s=5)
SWEEP_STEPS = (10_000, 20_000, 30_000, 40_000, 50_000, 55_000, 60_000, 65_000, 70_000, 80_000, 90_000,
               100_000, 120_000, 140_000, 160_000, 200_000)
IDLE_STEPS = (1000, 5000, 10_000, 19_000)
SWEEP_P99_LIMIT_MS = 100.0

SMOKE = {
    "fanout": Workload(connections=40, conversations=20, per_connection=5, event_rate=50, duration_s=2),
    "latency": Workload(connections=40, conversations=1, per_connection=1, event_rate=2, duration_s=2),
    "sweep": Workload(connections=40, conversations=20, per_connection=5, event_rate=0, duration_s=1),
}
SMOKE_SWEEP_STEPS = (500, 1000)
SMOKE_IDLE_STEPS = (50, 100)


class RunFailed(Exception):
    """The peer did not do what the scenario needs (connect, subscribe, deliver)."""


@dataclass
class Context:
    """What every repetition shares: generator kind, log folder, Redis client, sizes."""

    generator: str
    logdir: Path
    redis_host: str
    redis: redis.Redis
    smoke: bool = False
    duration_s: float | None = None
    runs: int = 0

    def quiet_s(self) -> float:
        """How long the server must stay idle after the joins before measuring."""
        return 1.0 if self.smoke else 2.0

    def workload(self, name: str, default: Workload) -> Workload:
        chosen = SMOKE[name] if self.smoke else default
        return replace(chosen, duration_s=self.duration_s) if self.duration_s else chosen


@contextmanager
def serving(peer: Peer, ctx: Context) -> Iterator[tuple[RunningPeer, Fleet]]:
    """A fresh server and an empty generator fleet, both stopped on exit."""
    ctx.runs += 1
    label = f"{ctx.runs:03d}-{peer.name}"
    workdir = ctx.logdir / label
    workdir.mkdir(parents=True)
    server = RunningPeer(peer, ctx.logdir / f"{label}.server.log", ctx.redis_host)
    fleet = Fleet(ctx.generator, server.url, peer.protocol, workdir)
    try:
        yield server, fleet
    finally:
        fleet.close()
        server.stop()


def connect(fleet: Fleet, server: RunningPeer, memberships: list[list[str]], first_user: int = 0,
            quiet_s: float | None = 2.0) -> None:
    """Open one connection per membership list, then wait until the server has announced the
    joins (tornado_gw sends presence.diff frames to the members; ``quiet_s`` None: do not
    wait): any failure fails the run."""
    ready = fleet.add(make_clients(memberships, first_user), timeout_s=120)
    if ready.failed:
        raise RunFailed(f"{ready.failed}/{ready.ok + ready.failed} connections failed: {ready.error}; "
                        f"server log: {server.log_tail()}")
    if quiet_s is not None:
        quiesce(server, fleet, quiet_s)


def quiesce(server: RunningPeer, fleet: Fleet, quiet_s: float = 2.0, max_s: float = 180.0) -> None:
    """Wait until the server is idle: no unmeasured frame for ``quiet_s`` and under a tenth
    of a core. tornado_gw may spend seconds in Redis on the joins before its presence
    diffs go out, so frames alone could look quiet too early."""
    deadline = time.monotonic() + max_s
    last_other, since = -1, time.monotonic()
    cpu_us, at = server.cpu_us(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        other, now, used_us = fleet.counts().other, time.monotonic(), server.cpu_us()
        busy = used_us - cpu_us > 0.1 * (now - at) * 1e6
        cpu_us, at = used_us, now
        if other != last_other or busy:
            last_other, since = other, now
        elif now - since >= quiet_s:
            return
    raise RunFailed(f"the server was still busy or sending frames {max_s:.0f} s after the joins")


def settle(read: Callable[[], int], quiet_s: float, max_s: float,
           target: float = math.inf) -> tuple[int, bool]:
    """Poll ``read()`` until it reaches ``target`` or stops changing for ``quiet_s``; returns
    the last value and whether that happened before ``max_s``."""
    deadline = time.monotonic() + max_s
    last, last_change = -1, time.monotonic()
    while True:
        value, now = read(), time.monotonic()
        if value != last:
            last, last_change = value, now
        if value >= target or now - last_change >= quiet_s:
            return value, True
        if now > deadline:
            return value, False
        time.sleep(0.1)


def warm_up(server: RunningPeer, fleet: Fleet, publisher: Publisher, workload: Workload,
            timeout_s: float = 15.0) -> None:
    """Prove the path is live (one event per conversation reaches every subscriber), then run
    2 s unmeasured at a fifth of the rate (the full rate below 5 events/s) so JITs and
    caches are warm for every peer alike."""
    subscriptions = workload.connections * workload.per_connection
    deadline = time.monotonic() + timeout_s
    while fleet.counts().warm < subscriptions:
        if time.monotonic() > deadline:
            raise RunFailed(f"warm-up events did not reach all {subscriptions} subscriptions "
                            f"in {timeout_s:.0f} s")
        publisher.warm(workload.conversation_ids())
        poll_until = time.monotonic() + 1.0
        while time.monotonic() < poll_until and fleet.counts().warm < subscriptions:
            time.sleep(0.05)
    rate = workload.event_rate / 5 if workload.event_rate >= 5 else workload.event_rate
    measure(server, fleet, publisher,
            replace(workload, event_rate=rate, duration_s=min(2.0, workload.duration_s / 2)))


def measure(server: RunningPeer, fleet: Fleet, publisher: Publisher, workload: Workload) -> Metrics:
    """One publishing phase at ``workload.event_rate``: throughput, loss, latency and CPU."""
    members = workload.members_per_conversation()
    before, _ = fleet.flush()
    server_cpu, gen_cpu, box_cpu = server.cpu_us(), procstat.cpu_us(fleet.pids()), procstat.box_busy_us()
    sent = publisher.run(workload.conversation_ids(), workload.event_rate, workload.duration_s)
    expected = sent.expected(members)
    # Wait for the stragglers: until all arrived, or none did for 2 s (the rest is lost).
    settle(lambda: fleet.counts().received, quiet_s=2.0, max_s=max(10.0, 2 * workload.duration_s),
           target=before.received + expected)
    server_cpu, gen_cpu = server.cpu_us() - server_cpu, procstat.cpu_us(fleet.pids()) - gen_cpu
    box_cores = (procstat.box_busy_us() - box_cpu) / 1e6 / ((time.time_ns() - sent.started_ns) / 1e9)
    after, latencies = fleet.flush()
    received = after.received - before.received
    figures = latency_ms(latencies)
    # The last frame arrived at most max latency after the last publish.
    elapsed_s = (sent.ended_ns - sent.started_ns) / 1e9 + figures.get("max_ms", 0.0) / 1000
    per_msg = max(received, 1)
    return {"offered_per_s": workload.deliveries_per_s(), "delivered_per_s": received / max(elapsed_s, 1e-3),
            "expected": expected, "received": received, "lost": expected - received,
            "dropped_connections": after.dropped, "other_frames": after.other - before.other, **figures,
            "server_cpu_us": server_cpu / per_msg, "gen_cpu_us": gen_cpu / per_msg,
            "server_rss_mb": server.rss_bytes() / 2**20, "publisher_lag_ms": sent.max_lag_s * 1000,
            "box_cores_busy": box_cores}


def traffic(peer: Peer, ctx: Context, workload: Workload, wait_for_joins: bool = True) -> Metrics:
    """fanout and latency: connect, warm up, one measured phase."""
    with serving(peer, ctx) as (server, fleet):
        connect(fleet, server, workload.memberships(), quiet_s=ctx.quiet_s() if wait_for_joins else None)
        publisher = Publisher(ctx.redis, peer.protocol, server.prefix, workload.frame_bytes)
        warm_up(server, fleet, publisher, workload)
        return measure(server, fleet, publisher, workload)


def fanout(peer: Peer, ctx: Context) -> Metrics:
    return traffic(peer, ctx, ctx.workload("fanout", FANOUT))


def latency(peer: Peer, ctx: Context) -> Metrics:
    return traffic(peer, ctx, ctx.workload("latency", LATENCY))


def latency_joining(peer: Peer, ctx: Context) -> Metrics:
    """latency measured while the joins' presence is still going out (issue 11): no wait."""
    return traffic(peer, ctx, ctx.workload("latency", LATENCY), wait_for_joins=False)


def sweep(peer: Peer, ctx: Context) -> Metrics:
    """Rising delivery rates on one server until p99 > 100 ms or a frame is lost or duplicated."""
    base = ctx.workload("sweep", SWEEP_BASE)
    members_per_event = base.connections * base.per_connection / base.conversations
    steps: list[Metrics] = []
    with serving(peer, ctx) as (server, fleet):
        connect(fleet, server, base.memberships(), quiet_s=ctx.quiet_s())
        publisher = Publisher(ctx.redis, peer.protocol, server.prefix, base.frame_bytes)
        rates = SMOKE_SWEEP_STEPS if ctx.smoke else SWEEP_STEPS
        warm_up(server, fleet, publisher, replace(base, event_rate=rates[0] / members_per_event))
        for rate in rates:
            step = measure(server, fleet, publisher, replace(base, event_rate=rate / members_per_event))
            steps.append(step)
            if not _step_passed(step):
                break
    passing = [step for step in steps if _step_passed(step)]
    return {"saturation_per_s": max((s["delivered_per_s"] for s in passing), default=0.0),
            "steps": steps}


def _step_passed(step: Metrics) -> bool:
    """No frame lost or duplicated (``lost`` < 0), p99 within the limit."""
    return bool(step["lost"] == 0 and step.get("p99_ms", 0) <= SWEEP_P99_LIMIT_MS)


def idle(peer: Peer, ctx: Context) -> Metrics:
    """RSS per authenticated and subscribed connection, adding connections step by step.

    Each connection joins 5 conversations of 5 members (direct messages and small groups):
    with 5 of 100 shared conversations, 19k joins would make tornado_gw announce presence to
    ~950 members each, ~90 million frames, and the figure would measure that storm."""
    figures: Metrics = {}
    with serving(peer, ctx) as (server, fleet):
        time.sleep(1.0)
        baseline = server.rss_bytes()
        opened = 0
        for total in SMOKE_IDLE_STEPS if ctx.smoke else IDLE_STEPS:
            connect(fleet, server, small_groups(opened, total), opened, ctx.quiet_s())
            opened = total
            time.sleep(1.0)  # let the server finish its per-connection work
            figures[f"kb_per_conn_{total}"] = (server.rss_bytes() - baseline) / total / 1024
            figures[f"rss_mb_{total}"] = server.rss_bytes() / 2**20
        figures["baseline_rss_mb"] = baseline / 2**20
        if fleet.counts().dropped:
            raise RunFailed(f"{fleet.counts().dropped} idle connections were closed by the server")
    return figures
