"""Days in minutes (issue 9): many connect, auth, subscribe, close cycles; does anything grow?

A gateway that serves for weeks sees millions of short connections. This runs
``--cycles`` of them against a fresh gateway process, with the resume window,
presence grace and TTLs shortened so that what each closed connection leaves
behind (a resumable session, a lingering presence entry, delivered seqs, typing
state) expires within the run, and reports figures, not assertions:

* RSS of the gateway process after a warm-up, after the cycles, and once every
  window has passed (``settled``): flat when nothing is kept for ever;
* the number of Redis keys under the run's prefix at the same three moments
  (Redis deployment only);
* with ``--heap``, the gateway's own heap at the same moments (``bench/heap_probe.py``):
  pymalloc's bytes in use and arenas, glibc's bytes in use, objects the collector tracks.
  A leak grows the bytes in use with the cycles; fragmentation leaves them flat while
  the RSS stays at its high-water mark.

Each cycle: connect, ``auth`` as one of ``--users`` users, ``subscribe`` to two
of ``--conversations`` conversations, send one ``typing``, close.

Usage, from the repository root, with the project's interpreter::

    .venv/bin/python -m bench.days_in_minutes --cycles 200000
    .venv/bin/python -m bench.days_in_minutes --cycles 2000 --deployments embedded
    .venv/bin/python -m bench.days_in_minutes --cycles 60000 --deployments embedded --heap
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
import redis
import websockets

from bench import procstat
from bench.peers import GW_ENV, REPO, free_port, gw_python, wait_listening
from bench.workload import JWT_SECRET

# Short windows so that a closed connection's traces expire within the run.
WINDOWS = {"WSGATEWAY_RESUME_WINDOW_S": "5", "WSGATEWAY_PRESENCE_GRACE_S": "1",
           "WSGATEWAY_PRESENCE_TTL_S": "6", "WSGATEWAY_TYPING_TTL_S": "2"}
SETTLE_S = 12.0  # past every window above, and a few presence sweeps
WARMUP_CYCLES = 500
START_TIMEOUT_S = 30.0
CYCLE_TIMEOUT_S = 10.0
HEAP_TIMEOUT_S = 30.0


@dataclass
class Sample:
    rss_mb: float
    redis_keys: int | None
    heap: dict[str, int] | None = None  # a line of bench/heap_probe.py, with --heap


@dataclass
class Figures:
    deployment: str
    cycles: int
    failed: int
    seconds: float
    warm: Sample
    end: Sample
    settled: Sample

    def lines(self) -> list[str]:
        rate = self.cycles / self.seconds if self.seconds else 0.0
        def keys(sample: Sample) -> str:
            return "-" if sample.redis_keys is None else str(sample.redis_keys)
        lines = [f"| {self.deployment} | {self.cycles:,} | {self.failed} | {rate:,.0f}/s "
                 f"| {self.warm.rss_mb:.1f} | {self.end.rss_mb:.1f} | {self.settled.rss_mb:.1f} "
                 f"| {keys(self.warm)} | {keys(self.end)} | {keys(self.settled)} |"]
        for moment, sample in (("warm", self.warm), ("end", self.end), ("settled", self.settled)):
            if sample.heap is not None:
                heap = sample.heap
                lines.append(f"  heap {moment}: pymalloc {heap['pymalloc_bytes'] / 1e6:.1f} MB in use, "
                             f"{heap['pymalloc_arenas']} arenas; glibc {heap['glibc_bytes'] / 1e6:.1f} MB "
                             f"in use; {heap['gc_objects']:,} tracked objects")
        return lines


class Gateway:
    """One gateway process for one deployment, with its own prefix."""

    def __init__(self, deployment: str, redis_host: str, log_path: Path, heap: bool) -> None:
        self.port = free_port()
        self.prefix = f"days{uuid.uuid4().hex[:8]}:"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WSGATEWAY_", "REDIS_", "POSTGRES_"))}
        env.update(GW_ENV)
        env.update(WINDOWS)
        env.update({"JWT_SECRET": JWT_SECRET, "WSGATEWAY_PORT": str(self.port),
                    "WSGATEWAY_PREFIX": self.prefix, "LOGGER_LEVEL": "warning"})
        if deployment == "redis":
            env["REDIS_HOST"] = redis_host
        self.redis = redis.Redis(*_split(redis_host)) if deployment == "redis" else None
        self.heap_path = log_path.with_suffix(".heap") if heap else None
        probe = ["bench/heap_probe.py", str(self.heap_path)] if self.heap_path else ["-m", "tornado_gw"]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([gw_python(), *probe], cwd=REPO, env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_listening(self.proc, self.port, START_TIMEOUT_S, lambda: f"gateway ({deployment})")

    def sample(self) -> Sample:
        keys = None
        if self.redis is not None:
            keys = sum(1 for _ in self.redis.scan_iter(match=self.prefix + "*", count=1000))
        rss_mb = procstat.tree_rss_bytes(self.proc.pid) / 1e6  # before the probe's own collection
        return Sample(rss_mb, keys, self._heap())

    def _heap(self) -> dict[str, int] | None:
        """Ask bench/heap_probe.py for a line and wait for it."""
        if self.heap_path is None:
            return None
        before = self.heap_path.read_text().count("\n") if self.heap_path.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + HEAP_TIMEOUT_S
        while time.monotonic() < deadline:
            lines = self.heap_path.read_text().splitlines() if self.heap_path.exists() else []
            if len(lines) > before:
                return dict(json.loads(lines[-1]))
            time.sleep(0.1)
        raise TimeoutError(f"no heap sample from the gateway within {HEAP_TIMEOUT_S:g} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.redis is not None:
            self.redis.close()


def _split(host: str) -> tuple[str, int]:
    name, _, port = host.rpartition(":")
    return name.removeprefix("[").removesuffix("]"), int(port)


async def _cycle(url: str, user: str, token: str, conversations: list[str]) -> None:
    async with websockets.connect(url, open_timeout=CYCLE_TIMEOUT_S) as ws:
        await ws.send(json.dumps({"type": "auth", "payload": {"token": token}}))
        await _expect(ws, "auth.success")
        await ws.send(json.dumps({"type": "subscribe", "payload": {"conversation_ids": conversations}}))
        await _expect(ws, "subscribed")
        await ws.send(json.dumps({"type": "typing", "payload": {"conversation_id": conversations[0]}}))


async def _expect(ws: websockets.ClientConnection, kind: str) -> None:
    while json.loads(await asyncio.wait_for(ws.recv(), CYCLE_TIMEOUT_S))["type"] != kind:
        pass


async def run_cycles(url: str, first: int, count: int, args: argparse.Namespace) -> int:
    """``count`` cycles, ``args.concurrency`` at a time; returns how many failed."""
    exp = int(time.time()) + 24 * 3600
    tokens = [jwt.encode({"sub": f"u{n}", "exp": exp}, JWT_SECRET, "HS256") for n in range(args.users)]
    failed = 0
    next_cycle = first

    async def lane() -> None:
        nonlocal failed, next_cycle
        while next_cycle < first + count:
            n = next_cycle
            next_cycle += 1
            user = n % args.users
            conversations = [f"g{(n + k) % args.conversations}" for k in (0, 1)]
            try:
                await _cycle(url, f"u{user}", tokens[user], conversations)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
                failed += 1

    await asyncio.gather(*(lane() for _ in range(args.concurrency)))
    return failed


def measure(deployment: str, args: argparse.Namespace, workdir: Path) -> Figures:
    gateway = Gateway(deployment, args.redis_host, workdir / f"{deployment}.log", args.heap)
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    try:
        asyncio.run(run_cycles(url, 0, WARMUP_CYCLES, args))
        time.sleep(SETTLE_S)
        warm = gateway.sample()
        started = time.monotonic()
        failed = asyncio.run(run_cycles(url, WARMUP_CYCLES, args.cycles, args))
        seconds = time.monotonic() - started
        end = gateway.sample()
        time.sleep(SETTLE_S)
        settled = gateway.sample()
    finally:
        gateway.stop()
    return Figures(deployment, args.cycles, failed, seconds, warm, end, settled)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.days_in_minutes",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=50, help="cycles in flight at once")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--deployments", default="embedded,redis", help="comma-separated: embedded, redis")
    parser.add_argument("--heap", action="store_true",
                        help="run the gateway under bench/heap_probe.py and print its heap too")
    parser.add_argument("--redis-host", default=os.environ.get("BENCH_REDIS_HOST", "127.0.0.1:6379"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("| deployment | cycles | failed | rate | RSS warm MB | RSS end MB | RSS settled MB "
          "| Redis keys warm | end | settled |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="days-") as workdir:
        for deployment in args.deployments.split(","):
            for line in measure(deployment.strip(), args, Path(workdir)).lines():
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
