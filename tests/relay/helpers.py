"""What the relay tests share: an observer on Redis, outbox writers and readers,
a TCP proxy that can take a dependency away, and relay processes.

Real Redis and Postgres only; every wait is bounded by ``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio
import ujson
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support.redis import WAIT_S, eventually, split_host
from tornado_gw.relay.worker import Relay
from tornado_gw.settings import Settings

REPO = Path(__file__).resolve().parents[2]
_OUR_VARIABLES = ("REDIS_", "POSTGRES_DSN", "JWT_SECRET", "LOGGER_", "MODE", "PUBLISH_API_KEY", "WSGATEWAY_")


@dataclass
class Observer:
    """Records every frame published under a prefix, as a gateway would receive it:
    ``(channel without prefix, decoded frame)`` in arrival order."""

    redis_host: str
    prefix: str
    frames: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def seqs(self) -> list[int]:
        return [frame["seq"] for _, frame in self.frames]

    def payloads(self) -> list[Any]:
        return [frame["payload"] for _, frame in self.frames]

    async def wait_for(self, count: int, timeout: float = WAIT_S) -> None:
        await eventually(lambda: len(self.frames) >= count, f"{count} frames", timeout)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Observer]:
        host, port = split_host(self.redis_host)
        client = redis.asyncio.Redis(host=host, port=port, socket_connect_timeout=2)
        pubsub = client.pubsub()
        await pubsub.psubscribe(self.prefix + "*")
        confirmed = await pubsub.get_message(timeout=WAIT_S)  # the psubscribe confirmation
        assert confirmed is not None and confirmed["type"] == "psubscribe"
        reader = asyncio.create_task(self._read(pubsub))
        try:
            yield self
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await pubsub.aclose()
            await client.aclose()

    async def _read(self, pubsub: redis.asyncio.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                channel = message["channel"].decode()[len(self.prefix):]
                self.frames.append((channel, ujson.loads(message["data"])))


def outbox(settings: Settings) -> sql.Identifier:
    return sql.Identifier(settings.outbox_table)


async def insert(conn: psycopg.AsyncConnection[Any], settings: Settings,
                 events: list[tuple[str, str, Any]]) -> list[int]:
    """Append ``(channel, event_type, payload)`` rows as an API server would; returns their ids."""
    statement = sql.SQL("INSERT INTO {} (channel, event_type, payload) VALUES (%s, %s, %s) RETURNING id")
    ids = []
    for channel, event_type, payload in events:
        cur = await conn.execute(statement.format(outbox(settings)), (channel, event_type, Jsonb(payload)))
        row = await cur.fetchone()
        assert row is not None
        ids.append(row[0])
    return ids


async def append(settings: Settings, events: list[tuple[str, str, Any]]) -> list[int]:
    """:func:`insert` in one committed transaction of its own."""
    async with await _connect(settings) as conn, conn.transaction():
        return await insert(conn, settings, events)


async def rows(settings: Settings) -> list[tuple[int, str, Any, int | None, bool]]:
    """``(id, channel, payload, seq, published)`` of every outbox row, by id."""
    statement = sql.SQL("SELECT id, channel, payload, seq, published_at IS NOT NULL FROM {} ORDER BY id")
    async with await _connect(settings) as conn:
        cur = await conn.execute(statement.format(outbox(settings)))
        return await cur.fetchall()


async def all_published(settings: Settings, count: int, timeout: float = WAIT_S) -> list[tuple[Any, ...]]:
    """Wait until ``count`` rows exist and every one is marked published; returns them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        current = await rows(settings)
        if len(current) == count and all(row[4] for row in current):
            return current
        if asyncio.get_running_loop().time() > deadline:
            published = sum(1 for row in current if row[4])
            raise AssertionError(f"{published}/{len(current)} rows published, {count} expected")
        await asyncio.sleep(0.05)


async def _connect(settings: Settings) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(settings.postgres_dsn or "", autocommit=True)


@asynccontextmanager
async def running_relay(settings: Settings) -> AsyncIterator[Relay]:
    """A relay serving in this event loop until the block ends."""
    relay = Relay(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
        await relay.close()


@asynccontextmanager
async def observed_relay(settings: Settings, redis_host: str | None = None) -> AsyncIterator[Observer]:
    """A relay serving in this event loop, and an :class:`Observer` of what it publishes
    (through ``redis_host`` when the relay's own Redis address is a proxy)."""
    observer = Observer(redis_host or settings.redis_host or "", settings.prefix)
    async with observer.running(), running_relay(settings):
        yield observer


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``stop()`` takes the dependency
    away (refuses new connections and cuts the open ones), ``start()`` brings it back
    on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()


def relay_env(settings: Settings, redis_host: str) -> dict[str, str]:
    """The environment of a relay process for ``settings`` (nothing of ours inherited)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_OUR_VARIABLES)}
    env.update({
        "PYTHONPATH": str(REPO),
        "POSTGRES_DSN": settings.postgres_dsn or "",
        "REDIS_HOST": redis_host,
        "WSGATEWAY_PREFIX": settings.prefix,
        "WSGATEWAY_OUTBOX_TABLE": settings.outbox_table,
        "WSGATEWAY_MEMBERS_TABLE": settings.members_table,
        "WSGATEWAY_RELAY_BATCH_SIZE": str(settings.relay_batch_size),
        "WSGATEWAY_RELAY_POLL_INTERVAL_S": str(settings.relay_poll_interval_s),
    })
    return env


@dataclass
class RelayProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WAIT_S)


@contextmanager
def relay_processes() -> Iterator[list[RelayProcess]]:
    """A list to :func:`start_relay` processes into; every one still alive is killed at the end."""
    started: list[RelayProcess] = []
    try:
        yield started
    finally:
        for relay in started:
            if relay.process.poll() is None:
                relay.kill()


def start_relay(tmp_path: Path, env: dict[str, str], started: list[RelayProcess]) -> RelayProcess:
    """``python -m tornado_gw relay`` in an empty directory; stderr goes to a file."""
    log_path = tmp_path / f"relay{len(started)}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tornado_gw", "relay"], cwd=tmp_path, env=env,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )
    relay = RelayProcess(process, log_path)
    started.append(relay)
    return relay
