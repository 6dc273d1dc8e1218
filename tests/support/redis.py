"""Redis fixtures (a pytest plugin, registered in tests/conftest.py) and the
small helpers the adapter tests share.

Real Redis only: ``TEST_REDIS_HOST`` (default ``127.0.0.1:6379``); when it
cannot be reached the test FAILS with how to start it, it never skips.
Every test gets its own ``prefix`` and its keys are deleted on teardown.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar
from uuid import uuid4

import pytest
import redis

T = TypeVar("T")

#: Bound of every wait in adapter tests; scale with TEST_TIMEOUT_FACTOR on slow machines.
WAIT_S = 5.0 * float(os.environ.get("TEST_TIMEOUT_FACTOR", "1"))


def run(coro: Awaitable[T], timeout: float = 4 * WAIT_S) -> T:
    """Run one test scenario on a fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for: {what}")
        await asyncio.sleep(0.01)


async def repeat_until(step: Callable[[], Awaitable[object]], done: Callable[[], bool], what: str) -> None:
    """Repeat the async ``step`` every 20 ms until ``done()`` (bounded by ``eventually``)."""
    async def stepper() -> None:
        while True:
            await step()
            await asyncio.sleep(0.02)

    task = asyncio.ensure_future(stepper())
    try:
        await eventually(done, what)
    finally:
        task.cancel()


@dataclass
class RecordingSink:
    """A ``BrokerSink`` that records every call in order, for assertions."""

    log: list[tuple[object, ...]] = field(default_factory=list)

    def message(self, channel: str, data: bytes) -> None:
        self.log.append(("message", channel, data))

    def channel_ready(self, channel: str) -> None:
        self.log.append(("ready", channel))

    def status(self, up: bool, reason: str) -> None:
        self.log.append(("status", up, reason))

    def messages(self, channel: str) -> list[bytes]:
        return [entry[2] for entry in self.log if entry[0] == "message" and entry[1] == channel]

    def readies(self, channel: str) -> int:
        return self.log.count(("ready", channel))

    def statuses(self) -> list[bool]:
        return [bool(entry[1]) for entry in self.log if entry[0] == "status"]


def split_host(host: str) -> tuple[str, int]:
    name, _, port = host.rpartition(":")
    return name.removeprefix("[").removesuffix("]"), int(port)


@pytest.fixture(scope="session")
def redis_host() -> str:
    """``host:port`` of the test Redis, checked reachable."""
    host = os.environ.get("TEST_REDIS_HOST", "127.0.0.1:6379")
    name, port = split_host(host)
    client = redis.Redis(host=name, port=port, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {host} ({exc}); start Redis with: "
            "redis-server --daemonize yes --port 6379 (or set TEST_REDIS_HOST=host:port)"
        )
    finally:
        client.close()
    return host


@pytest.fixture
def redis_prefix(redis_host: str) -> Iterator[str]:
    """A prefix unique to this test; every key under it is deleted afterwards."""
    prefix = f"t{uuid4().hex[:8]}:"
    yield prefix
    name, port = split_host(redis_host)
    client = redis.Redis(host=name, port=port, socket_connect_timeout=2, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
