"""The Redis the bench publishes through: a private ``redis-server`` when one can be started.

A shared Redis carries other people's tests (flushes, restarts, long Lua scripts) and any
of them stalls Pub/Sub for every subscriber, which shows up as latency spikes that belong
to nobody's gateway. A private, non-persisting server on its own port keeps the figures
ours. ``BENCH_REDIS_HOST=host:port`` uses an existing server instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from bench.peers import free_port


@contextmanager
def bench_redis(logdir: Path) -> Iterator[tuple[str, redis.Redis]]:
    """Yield ``host:port`` and a client; a private server is stopped on exit."""
    external = os.environ.get("BENCH_REDIS_HOST")
    if external or shutil.which("redis-server") is None:
        address = external or "127.0.0.1:6379"
        yield address, _client(address, "set BENCH_REDIS_HOST=host:port or install redis-server")
        return
    port = free_port()
    with open(logdir / "redis.log", "wb") as log:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        yield address, _client(address, f"see {logdir / 'redis.log'}", wait_s=10)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _client(address: str, hint: str, wait_s: float = 0.0) -> redis.Redis:
    """A client that answered PING, polling up to ``wait_s``; exits with ``hint`` otherwise."""
    host, port = address.split(":")
    client = redis.Redis(host=host, port=int(port), socket_timeout=10)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.ping()
            return client
        except redis.RedisError as exc:
            if time.monotonic() >= deadline:
                raise SystemExit(f"bench: Redis at {address} is unreachable ({exc}); {hint}") from exc
            time.sleep(0.1)
