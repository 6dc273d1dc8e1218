"""Several gateway processes sharing one real Redis, for the cluster e2e tests.

Each test builds its own ``Cluster`` with its own ``prefix`` (Pub/Sub ignores
the database number: PITFALLS 11), so tests never hear each other's frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aredis
import ujson

from tests.e2e.harness import Client, GatewayProcess, T, wait_until
from tests.support.redis import split_host

V = TypeVar("V")


class Cluster:
    """Gateways on one Redis and one prefix, plus a direct Redis client for the test."""

    def __init__(self, start_gateway: Callable[..., GatewayProcess], redis_host: str, prefix: str) -> None:
        self._start = start_gateway
        self.redis_host = redis_host
        self.prefix = prefix
        self.gateways: list[GatewayProcess] = []

    @classmethod
    def running(cls, start_gateway: Callable[..., GatewayProcess], redis_host: str,
                prefix: str) -> Iterator[Cluster]:
        """Fixture body: yields a cluster, then stops all its gateways at once (not one by one)."""
        cluster = cls(start_gateway, redis_host, prefix)
        yield cluster
        cluster.stop_all()

    def start(self, count: int, redis_host: str | None = None, **settings: Any) -> list[GatewayProcess]:
        """Start ``count`` gateways at once (imports dominate start-up) and wait for all."""
        gateways = [self._start(wait=False, REDIS_HOST=redis_host or self.redis_host, prefix=self.prefix,
                                **settings) for _ in range(count)]
        self.gateways += gateways
        for gateway in gateways:  # processes share 2 cores while they import: allow T each
            wait_until(lambda g=gateway: g.http("GET", "/health")[0] == 200,  # type: ignore[misc]
                       f"gateway on {gateway.port} to start", timeout=T * count, check=gateway._still_running)
        return gateways

    def stop_all(self) -> None:
        running = [g for g in self.gateways if g.proc is not None and g.proc.poll() is None]
        for gateway in running:
            gateway.signal(signal.SIGTERM)
        for gateway in running:
            gateway.stop()  # waits for the exit, kills after a bound

    @asynccontextmanager
    async def redis(self) -> AsyncIterator[aredis.Redis]:
        host, port = split_host(self.redis_host)
        client = aredis.Redis(host=host, port=port, socket_timeout=T)
        try:
            yield client
        finally:
            await client.aclose()

    async def publish(self, client: aredis.Redis, conversation_id: str, kind: str, **payload: Any) -> int:
        """What a projection worker does: PUBLISH a client frame to ``{prefix}conv:{id}``."""
        frame = {"type": kind, "payload": {"conversation_id": conversation_id, **payload}}
        return int(await client.publish(f"{self.prefix}conv:{conversation_id}", ujson.dumps(frame)))

    async def channels(self, client: aredis.Redis) -> set[str]:
        """Conversation and user channels Redis has subscribers for (probes left out)."""
        names = {raw.decode()[len(self.prefix):] for raw in await client.pubsub_channels(self.prefix + "*")}
        return {name for name in names if not name.startswith("probe:")}

    async def subscriber_counts(self, client: aredis.Redis) -> list[int]:
        """``sub=`` of each instance's Pub/Sub connection (its channels + its probe), sorted."""
        named = [c for c in await client.client_list() if c["name"].startswith(self.prefix + "subscribe:")]
        return sorted(int(c["sub"]) for c in named)


async def settle(read: Callable[[], Awaitable[V]], expected: V, what: str, timeout: float = T) -> None:
    """Poll the async ``read`` until it returns ``expected``; fail with the last value."""
    deadline = time.monotonic() + timeout
    value = await read()
    while value != expected:
        assert time.monotonic() < deadline, f"{what}: expected {expected!r}, still {value!r}"
        await asyncio.sleep(0.02)
        value = await read()


async def quiet(clients: Iterable[Client], seconds: float) -> None:
    """Let every client take in what arrives within ``seconds`` (all at once, not in turn)."""
    await asyncio.gather(*(client.silent(seconds) for client in clients))


def of_type(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [frame for frame in frames if frame.get("type") == kind]


def presence(frames: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(user_id, "online" | "offline")`` for each join and leave of every ``presence.diff``
    received, in order."""
    changes: list[tuple[str, str]] = []
    for diff in of_type(frames, "presence.diff"):
        changes += [(user_id, "online") for user_id in diff["payload"]["joins"]]
        changes += [(user_id, "offline") for user_id in diff["payload"]["leaves"]]
    return changes


async def presence_changes(client: Client, count: int,
                           timeout: float = T) -> tuple[list[tuple[str, str]], int]:
    """The next ``count`` presence changes ``client`` receives (they may share diffs), and
    the ``count`` of the last diff: fails unless they arrive within ``timeout``."""
    deadline = time.monotonic() + timeout
    changes: list[tuple[str, str]] = []
    online = -1
    while len(changes) < count:
        diff = await client.expect("presence.diff", max(0.01, deadline - time.monotonic()))
        changes += presence([diff])
        online = diff["payload"]["count"]
    return changes, online


def open_sockets(gateway: GatewayProcess) -> int:
    """Sockets the gateway process holds open (clients, listeners, Redis), from /proc."""
    assert gateway.proc is not None
    count = 0
    for fd in Path(f"/proc/{gateway.proc.pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed while we looked
            count += fd.readlink().name.startswith("socket:")
    return count


def rss_kb(gateway: GatewayProcess) -> int:
    """Resident memory of the gateway process, from /proc."""
    assert gateway.proc is not None
    for line in Path(f"/proc/{gateway.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")
