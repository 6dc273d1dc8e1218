"""The presence storm (issue 11): two gateway instances on one Redis, one big conversation.

Phases, each reported with the gateways' CPU (user+system, both processes, from /proc)
and the Redis commands it cost (``INFO stats``; use a Redis of your own, the bench's
``redis_server.py`` or ``--redis``, so nothing else is counted):

1. ``storm``: ``--users`` clients join one conversation, alternately on instance A and B,
   spread evenly over ``--spread-s``. Reported: presence frames the gateways sent
   (``gateway_frames_out_total``) in all and per member per second of storm, and the
   time from the first join until every member's last ``count`` is right.
   Target (issue 11, 1,000 users in 1 s): at most 3 frames per member per second of
   storm, under 0.5 s of CPU.
2. ``reconnect``: ``--reconnect`` of them close and resume on the other instance within
   ``--reconnect-s`` (with ``--fresh``: unsubscribe, close and join with a new session, two
   presence transitions each). Reported: the most presence frames one client got per
   ``presence_count_interval_s``, CPU and Redis commands per reconnect (and per transition).
   Issue 11's large-room variant: ``--users 10000 --spread-s 20 --reconnect 1000 --fresh``.
3. ``query``: ``--seed`` more online entries are written straight into the presence
   store (one synthetic connection each), then one member pages through all online
   users with ``presence.query`` (``--page`` per page). Reported: time per page.

Usage (from the repository root)::

    .venv/bin/python -m bench.presence_storm [--users 1000] [--spread-s 1] [--reconnect 100]
        [--reconnect-s 5] [--fresh] [--seed 100000] [--page 1000] [--redis 127.0.0.1:6379]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aredis
import ujson
import websockets

from bench.cross_instance_latency import SECRET, _until, free_ports, gateways
from bench.procstat import tree_cpu_us
from tornado_gw.adapters.redis_snapshots import RedisPresence
from tornado_gw.settings import Settings
from tornado_gw.web.auth import mint_token

CONVERSATION = "storm"
COUNT_INTERVAL_S = 10.0  # presence_count_interval_s, the default
PRESENCE_FRAMES = ("presence.diff", "presence.state")
OPEN_TIMEOUT_S = 60.0  # a shared 2-core box takes a while to open 10,000 connections
# The members send nothing after subscribing, and a run of 10,000 lasts minutes: without
# these, idle timeouts (4004) and the periodic refresh of every online entry (each
# presence_ttl_s / 3, a steady cost of being online) would fall into the measured windows.
QUIET = {"idle_timeout_s": "3600", "presence_ttl_s": "900"}
QUIET_S = 5.0  # the idle window measured before the reconnects
JITTER_S = 0.2  # frames sent presence_count_interval_s apart may arrive a little closer on a busy box


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000, help="members joining (default 1000)")
    parser.add_argument("--spread-s", type=float, default=1.0, help="the storm's length (default 1 s)")
    parser.add_argument("--reconnect", type=int, default=100, help="members resuming elsewhere (default 100)")
    parser.add_argument("--reconnect-s", type=float, default=5.0, help="over how long (default 5 s)")
    parser.add_argument("--fresh", action="store_true",
                        help="movers leave and join with a new session instead of resuming")
    parser.add_argument("--seed", type=int, default=0, help="online entries added for the query phase")
    parser.add_argument("--page", type=int, default=1000, help="presence.query limit (default 1000)")
    parser.add_argument("--redis", default=os.environ.get("REDIS_HOST", "127.0.0.1:6379"))
    return parser.parse_args()


@dataclass
class Member:
    """One client in the conversation: counts its presence frames and keeps the last count."""

    user_id: str
    ws: websockets.ClientConnection
    session_id: str
    count: int = -1
    count_at: float = 0.0
    frame_times: list[float] = field(default_factory=list)
    pages: asyncio.Queue[dict[str, object]] = field(default_factory=asyncio.Queue)
    task: asyncio.Future[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = ujson.loads(raw)
            kind = frame.get("type")
            if kind not in PRESENCE_FRAMES:
                continue
            now = time.monotonic()
            self.frame_times.append(now)
            if frame["payload"]["count"] != self.count:
                self.count, self.count_at = frame["payload"]["count"], now
            if kind == "presence.state":
                self.pages.put_nowait(frame["payload"])


async def join(port: int, user_id: str, session_id: str | None = None) -> Member:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None, max_queue=None,
                                  open_timeout=OPEN_TIMEOUT_S)
    auth: dict[str, object] = {"token": mint_token(SECRET, user_id, 3600, time.time())}
    if session_id is not None:
        auth["session_id"] = session_id
    await ws.send(ujson.dumps({"type": "auth", "payload": auth}))
    reply = ujson.loads(await ws.recv())
    if reply["type"] != "auth.success":
        raise SystemExit(f"{user_id}: {reply}")
    member = Member(user_id, ws, reply["payload"]["session_id"])
    if session_id is None:
        await ws.send(ujson.dumps({"type": "subscribe", "payload": {"conversation_ids": [CONVERSATION]}}))
    member.start()
    return member


def frames_out(ports: list[int]) -> int:
    """Presence frames the gateways sent so far, from their /metrics."""
    total = 0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                presence = any(f'"{kind}"' in line for kind in PRESENCE_FRAMES)
                if line.startswith("gateway_frames_out_total") and presence:
                    total += int(float(line.rsplit(" ", 1)[1]))
    return total


@dataclass
class Reading:
    """Gateway CPU (s), Redis commands (in all and per command, scripts' own included) and
    presence frames sent; ``Meter.since`` gives the same between two readings."""

    cpu_s: float
    commands: int
    reads: int  # requests Redis read off its sockets: about one per round trip (a pipeline is one)
    frames: int
    by_command: dict[str, int]

    def top(self, per: int, n: int = 8) -> str:
        """The ``n`` commonest commands, per ``per`` (a join, a reconnect)."""
        ranked = sorted(self.by_command.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {calls / per:.1f}" for name, calls in ranked)


class Meter:
    """Reads the gateways' CPU and frames and the Redis command counts."""

    def __init__(self, pids: list[int], ports: list[int], redis: aredis.Redis) -> None:
        self.pids, self.ports, self.redis = pids, ports, redis

    async def read(self) -> Reading:
        stats = await self.redis.info("stats")
        by_command = {name.removeprefix("cmdstat_"): int(fields["calls"])
                      for name, fields in (await self.redis.info("commandstats")).items()}
        cpu_s = sum(tree_cpu_us(pid) for pid in self.pids) / 1e6
        return Reading(cpu_s, int(stats["total_commands_processed"]), int(stats["total_reads_processed"]),
                       frames_out(self.ports), by_command)

    async def since(self, start: Reading) -> Reading:
        now = await self.read()
        by_command = {name: calls - start.by_command.get(name, 0) for name, calls in now.by_command.items()}
        return Reading(now.cpu_s - start.cpu_s, now.commands - start.commands, now.reads - start.reads,
                       now.frames - start.frames, {name: n for name, n in by_command.items() if n})


async def storm(args: argparse.Namespace, ports: list[int], meter: Meter) -> list[Member]:
    start = await meter.read()
    t0 = time.monotonic()
    step = args.spread_s / max(1, args.users)

    async def one(n: int) -> Member:
        await asyncio.sleep(n * step)
        return await join(ports[n % 2], f"u{n:06}")

    members = await asyncio.gather(*(one(n) for n in range(args.users)))
    joined_s = time.monotonic() - t0
    joined = await meter.since(start)
    await _until(lambda: all(m.count == args.users for m in members), 60.0 + COUNT_INTERVAL_S,
                 lambda: f"members with the right count: {sum(m.count == args.users for m in members)}")
    settled_s = max(m.count_at for m in members) - t0
    used = await meter.since(start)
    per_member_s = used.frames / args.users / max(joined_s, 1.0)
    print(f"storm: {args.users} joins in {joined_s:.2f} s; every count right after {settled_s:.2f} s")
    print(f"  presence frames sent {used.frames} ({per_member_s:.2f} per member per second of storm; "
          "target <= 3)")
    print(f"  gateway CPU {used.cpu_s:.3f} s (target < 0.5 s; {joined.cpu_s:.3f} s of it until the last "
          f"join was answered); Redis commands {used.commands} ({used.commands / args.users:.1f} per join: "
          f"{used.top(args.users)}); Redis round trips (socket reads) {used.reads / args.users:.2f} per join")
    return members


async def reconnect(args: argparse.Namespace, ports: list[int], meter: Meter, members: list[Member]) -> None:
    """Movers close and come back on the other instance: resuming their session (no
    presence transition: the grace period hides the gap), or with ``--fresh`` leaving
    (``unsubscribe``, then close) and joining with a new session (two transitions each)."""
    movers = members[:args.reconnect]
    if not movers:
        return
    quiet_start = await meter.read()
    await asyncio.sleep(QUIET_S)  # what the gateways cost with nobody moving, to set apart
    idle = await meter.since(quiet_start)
    start = await meter.read()
    t0 = time.monotonic()
    lag = LoopLag()
    step = args.reconnect_s / len(movers)

    async def move(n: int, member: Member) -> Member:
        await asyncio.sleep(n * step)
        if args.fresh:
            leave = {"type": "unsubscribe", "payload": {"conversation_ids": [CONVERSATION]}}
            await member.ws.send(ujson.dumps(leave))
        await member.ws.close()
        return await join(ports[(n + 1) % 2], member.user_id, None if args.fresh else member.session_id)

    moved = await asyncio.gather(*(move(n, m) for n, m in enumerate(movers)))
    members[:len(moved)] = moved
    await asyncio.sleep(COUNT_INTERVAL_S)  # what a count-only diff would bring arrives meanwhile
    window = time.monotonic() - t0
    late_s = lag.stop()
    used = await meter.since(start)
    worst = max(_most_in_a_window(m.frame_times, t0, COUNT_INTERVAL_S - JITTER_S) for m in members)
    gaps = [b - a for m in members for a, b in itertools.pairwise(t for t in m.frame_times if t >= t0)]
    how = "left and joined again" if args.fresh else "resumed"
    print(f"reconnect: {len(moved)} {how} on the other instance over {args.reconnect_s:.1f} s "
          f"(observed {window:.1f} s)")
    closest = f"{min(gaps):.2f} s" if gaps else "none"
    print(f"  most presence frames one client got within {COUNT_INTERVAL_S - JITTER_S:.1f} s: {worst} "
          f"(target <= 1 per {COUNT_INTERVAL_S:.0f} s, less {JITTER_S} s of delivery jitter; "
          f"the closest two one client got: {closest} apart, as received, while this client's loop "
          f"ran up to {late_s:.2f} s late); "
          f"presence frames sent {used.frames}")
    print(f"  gateway CPU {used.cpu_s:.3f} s ({used.cpu_s / len(moved) * 1000:.2f} ms per reconnect); "
          f"Redis commands {used.commands} ({used.commands / len(moved):.1f} per reconnect: "
          f"{used.top(len(moved))}); Redis round trips (socket reads) {used.reads / len(moved):.2f} "
          "per reconnect")
    share = window / QUIET_S
    net_cpu_s, net_commands = used.cpu_s - idle.cpu_s * share, used.commands - idle.commands * share
    net_reads = used.reads - idle.reads * share
    print(f"  idle for comparison ({QUIET_S:.0f} s before, nobody moving): CPU {idle.cpu_s:.3f} s, "
          f"Redis commands {idle.commands}, round trips {idle.reads}; over the window, net of that: "
          f"CPU {net_cpu_s:.3f} s, Redis commands {net_commands:.0f}, round trips {net_reads:.0f}")
    if args.fresh:
        transitions = 2 * len(moved)  # each mover was online on this one connection only
        per = {"ms CPU": net_cpu_s * 1000, "Redis commands": net_commands, "round trips": net_reads}
        print(f"  per presence transition ({transitions}), net of idle: "
              + ", ".join(f"{value / transitions:.2f} {what}" for what, value in per.items()))


class LoopLag:
    """How late this process's event loop ran (the latest a 50 ms sleep woke): frames are
    stamped when the loop gets to them, so two frames sent 10 s apart can look closer by
    up to this much when a burst of 10,000 frames meets a busy box."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            due = time.monotonic() + 0.05
            await asyncio.sleep(0.05)
            self.worst = max(self.worst, time.monotonic() - due)

    def stop(self) -> float:
        self._task.cancel()
        return self.worst


def _most_in_a_window(times: list[float], since: float, window_s: float) -> int:
    recent = [t for t in times if t >= since]
    return max((sum(1 for u in recent if t <= u < t + window_s) for t in recent), default=0)


async def query(args: argparse.Namespace, prefix: str, member: Member) -> None:
    if args.seed:
        presence = RedisPresence.from_settings(Settings(redis_host=args.redis, prefix=prefix))
        entries = [(CONVERSATION, f"seed{n:07}", "bench") for n in range(args.seed)]
        try:
            await presence.rejoin(entries, time.time() + 3600)
        finally:
            await presence.close()
    while not member.pages.empty():
        member.pages.get_nowait()
    timings, after, users = [], None, 0
    while True:
        sent = time.perf_counter()
        await member.ws.send(ujson.dumps({"type": "presence.query", "payload": {
            "conversation_id": CONVERSATION, "limit": args.page, "after": after}}))
        page = await asyncio.wait_for(member.pages.get(), 30)
        timings.append((time.perf_counter() - sent) * 1000)
        users += len(page["user_ids"])  # type: ignore[arg-type]
        after = page["next"]
        if after is None:
            break
    p99 = statistics.quantiles(timings, n=100)[98] if len(timings) > 1 else timings[0]
    print(f"query: {users} online users in {len(timings)} pages of {args.page}: "
          f"median {statistics.median(timings):.2f} ms, p99 {p99:.2f} ms per page")


async def run(args: argparse.Namespace) -> None:
    ports = free_ports(2)
    prefix = f"storm{uuid.uuid4().hex[:8]}:"
    host, _, port = args.redis.rpartition(":")
    redis = aredis.Redis(host=host, port=int(port))
    try:
        with gateways(ports, args.redis, prefix, 10, **QUIET) as procs:
            meter = Meter([proc.pid for proc in procs], ports, redis)
            members = await storm(args, ports, meter)
            await reconnect(args, ports, meter, members)
            await query(args, prefix, members[-1])
            for member in members:
                await member.ws.close()
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start:start + 1000])
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
