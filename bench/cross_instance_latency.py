"""How long a frame takes to cross from one gateway instance to a client of another (issue 3).

Starts two gateways (A and B) on one Redis with a fresh prefix, one client on
each, and measures two paths, frame by frame, paced (not a throughput test):

- ``PUBLISH -> client on A|B``: the script PUBLISHes a client frame carrying its
  send time to ``{prefix}conv:lat`` (what the relay or any projection worker
  does); both clients receive it. Latency = receipt by the client - PUBLISH.
- ``typing on A -> client on B``: the client on A sends ``typing`` in a fresh
  conversation each time; instance A records it in Redis and publishes
  ``typing.start``, which instance B forwards to its client. A client-to-client
  crossing, including the typing store's round trip.

Send and receive times come from one clock in this process. The figures
include the Python WebSocket client's own receive path.

Usage (from the repository root, Redis on 127.0.0.1:6379)::

    .venv/bin/python -m bench.cross_instance_latency [--frames 2000] [--interval-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis.asyncio as aredis
import ujson
import websockets

from tests.e2e.harness import free_port
from tornado_gw.web.auth import mint_token

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-latency-secret-0123456789abcdef0123"
CONVERSATION = "lat"
SUBSCRIBE_CHUNK = 200  # conversation ids per subscribe frame, under the 8 KB frame cap


def free_ports(count: int) -> list[int]:
    """Distinct free ports below Linux's ephemeral range."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames per path (default 2000)")
    parser.add_argument("--interval-ms", type=float, default=2.0, help="pause between PUBLISHes (default 2)")
    parser.add_argument("--typing-interval-ms", type=float, default=10.0,
                        help="pause between typing frames (default 10: each costs instance A two Redis "
                             "round trips in its ordered store lane, so 2 ms would measure queueing)")
    parser.add_argument("--redis", default=os.environ.get("REDIS_HOST", "127.0.0.1:6379"))
    return parser.parse_args()


@contextmanager
def gateways(ports: list[int], redis_host: str, prefix: str, frames: int,
             **settings: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Gateway processes with the inbound limits lifted (and ``settings`` as
    ``WSGATEWAY_*`` variables); terminated on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSGATEWAY_", "REDIS_", "POSTGRES_"))}
    env.update(JWT_SECRET=SECRET, REDIS_HOST=redis_host, LOGGER_LEVEL="warning", WSGATEWAY_PREFIX=prefix,
               WSGATEWAY_RATE_LIMIT_PER_S="100000", WSGATEWAY_RATE_LIMIT_BURST="100000",
               WSGATEWAY_MAX_SUBSCRIPTIONS=str(frames + 10), WSGATEWAY_TYPING_TTL_S="600")
    env.update({f"WSGATEWAY_{name.upper()}": value for name, value in settings.items()})
    procs = [subprocess.Popen([sys.executable, "-m", "tornado_gw", f"--port={port}"], cwd=ROOT,
                              env={**env, "WSGATEWAY_PORT": str(port)}) for port in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            _wait_healthy(port, proc)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway on port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gateway on port {port} did not start within {timeout_s:.0f} s")


class Receiver:
    """A client that stamps the measured frames on arrival and counts the others."""

    KEYS = {"bench.ping": "n", "typing.start": "conversation_id"}  # what identifies one frame

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.arrived: dict[str, dict[str, int]] = {kind: {} for kind in self.KEYS}
        self.counts: Counter[str] = Counter()
        self.settled: set[str] = set()  # conversations whose presence.diff showed 2 users online
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            now = time.perf_counter_ns()
            frame = ujson.loads(raw)
            kind = frame.get("type")
            self.counts[kind] += 1
            if kind == "presence.diff" and frame["payload"]["count"] == 2:
                self.settled.add(frame["payload"]["conversation_id"])
            if kind in self.KEYS:
                self.arrived[kind][str(frame["payload"][self.KEYS[kind]])] = now


async def client(port: int, user_id: str, conversations: list[str]) -> websockets.ClientConnection:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None, max_queue=None)
    await ws.send(ujson.dumps({"type": "auth", "payload": {"token": mint_token(SECRET, user_id, 3600,
                                                                                  time.time())}}))
    await _expect(ws, "auth.success")
    for start in range(0, len(conversations), SUBSCRIBE_CHUNK):
        chunk = conversations[start:start + SUBSCRIBE_CHUNK]
        await ws.send(ujson.dumps({"type": "subscribe", "payload": {"conversation_ids": chunk}}))
        await _expect(ws, "subscribed")
    return ws


async def _expect(ws: websockets.ClientConnection, kind: str) -> None:
    while ujson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != kind:
        pass


async def measure_publish(redis: aredis.Redis, prefix: str, receivers: list[Receiver], frames: int,
                          interval_s: float) -> dict[int, list[float]]:
    sent: dict[str, int] = {}
    for n in range(frames):
        sent[str(n)] = time.perf_counter_ns()
        frame = {"type": "bench.ping", "payload": {"conversation_id": CONVERSATION, "n": n,
                                                    "sent_ns": sent[str(n)]}}
        await redis.publish(f"{prefix}conv:{CONVERSATION}", ujson.dumps(frame))
        await asyncio.sleep(interval_s)
    await _arrived_all(receivers, "bench.ping", frames)
    return {i: _latencies_ms(sent, r.arrived["bench.ping"]) for i, r in enumerate(receivers)}


async def measure_typing(typist: websockets.ClientConnection, watcher: Receiver, conversations: list[str],
                         interval_s: float) -> list[float]:
    sent: dict[str, int] = {}
    for cid in conversations:
        sent[cid] = time.perf_counter_ns()
        await typist.send(ujson.dumps({"type": "typing", "payload": {"conversation_id": cid}}))
        await asyncio.sleep(interval_s)
    await _arrived_all([watcher], "typing.start", len(conversations))
    return _latencies_ms(sent, watcher.arrived["typing.start"])


async def _arrived_all(receivers: list[Receiver], kind: str, count: int, timeout_s: float = 30.0) -> None:
    await _until(lambda: all(len(r.arrived[kind]) >= count for r in receivers), timeout_s,
                 lambda: f"{kind} lost: expected {count} at each client, got "
                         f"{[len(r.arrived[kind]) for r in receivers]}")


async def _until(done: Callable[[], bool], timeout_s: float, failure: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(failure())
        await asyncio.sleep(0.05)


def _latencies_ms(sent: dict[str, int], arrived: dict[str, int]) -> list[float]:
    return [(arrived[key] - sent_ns) / 1e6 for key, sent_ns in sent.items()]


def summary(name: str, latencies: list[float]) -> str:
    p99 = statistics.quantiles(latencies, n=100)[98]
    return f"{name:<34} {len(latencies):>7} {statistics.median(latencies):>10.3f} {p99:>9.3f}"


async def run(args: argparse.Namespace) -> None:
    ports = free_ports(2)
    prefix = f"lat{uuid.uuid4().hex[:8]}:"
    typing_conversations = [f"t{n}" for n in range(args.frames)]
    interval_s = args.interval_ms / 1000
    host, _, port = args.redis.rpartition(":")
    redis = aredis.Redis(host=host, port=int(port))
    try:
        with gateways(ports, args.redis, prefix, args.frames):
            on_a = Receiver(await client(ports[0], "alice", [CONVERSATION]))
            on_b = Receiver(await client(ports[1], "bob", [CONVERSATION, *typing_conversations]))
            typist = await client(ports[0], "carol", typing_conversations)
            # measure on a quiet system: bob's and carol's online announcements first
            wanted = len(typing_conversations) + 1
            await _until(lambda: len(on_b.settled) >= wanted, 60.0,
                         lambda: f"conversations whose presence reached bob: {len(on_b.settled)} of {wanted}")
            published = await measure_publish(redis, prefix, [on_a, on_b], args.frames, interval_s)
            typed = await measure_typing(typist, on_b, typing_conversations, args.typing_interval_ms / 1000)
            for ws in (on_a.ws, on_b.ws, typist):
                await ws.close()
        print(f"{'path':<34} {'frames':>7} {'median_ms':>10} {'p99_ms':>9}")
        print(summary("PUBLISH -> client on A", published[0]))
        print(summary("PUBLISH -> client on B", published[1]))
        print(summary("typing on A -> client on B", typed))
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
