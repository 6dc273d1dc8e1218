"""Redis Pub/Sub broker: one subscriber connection per instance that we drive
ourselves, and a pooled client for PUBLISH (CONTRACT §6).

Theory of operation. redis-py's ``PubSub`` reconnects and resubscribes silently
(PITFALLS 1), and a half-open socket may never error (PITFALLS 2), so this
adapter owns a raw ``redis.asyncio.Connection`` and one supervisor task:

1. Connect (bounded), SUBSCRIBE the private probe channel and every wanted
   channel, then run three tasks on that connection: the reader (the only
   place that calls the sink), the writer (sends SUBSCRIBE/UNSUBSCRIBE diffs)
   and the prober (publishes to ``prefix + "probe:" + instance_id`` through
   the pool and expects it back within ``probe_timeout_s``).
2. The first of them to fail ends the connection: ``sink.status(False, reason)``
   (once per outage), close the socket, back off (0.1 s doubling to 5 s, with
   jitter) and go to 1.
3. After a loss, once Redis has confirmed every wanted channel again,
   ``sink.status(True, "reconnected")``; what was published meanwhile is lost
   and the caller fills it from the event log.

Channel rules: a message reaches the sink only for a channel in ``_live``: wanted
by the caller AND confirmed by a subscribe reply on the current connection with
no later SUBSCRIBE still unanswered. So ``channel_ready`` always precedes the
channel's messages, and nothing is delivered after ``unsubscribe``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tornado_gw import metrics
from tornado_gw.adapters.backoff import backoff_s
from tornado_gw.ports import BrokerSink, DependencyUnavailable
from tornado_gw.settings import Settings

log = logging.getLogger(__name__)

#: Socket timeouts of the pooled client: bounds every command when Redis is unreachable.
SOCKET_TIMEOUT_S = 2.0
_LOST = (RedisError, OSError, asyncio.TimeoutError)


def redis_options(settings: Settings) -> dict[str, Any]:
    """Connection arguments from ``redis_host`` ("host:port"), password and database."""
    host, port = settings.redis_address
    return {
        "host": host,
        "port": port,
        "password": settings.redis_password,
        "db": settings.redis_database,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
        "protocol": 2,  # RESP2 everywhere: Pub/Sub messages are plain replies, not RESP3 pushes
    }


def redis_client(settings: Settings, client_name: str | None = None) -> aredis.Redis:
    """A pooled client whose commands fail within a couple of seconds when Redis
    is unreachable (one immediate retry on a connection error, for a pooled
    socket that Redis closed meanwhile)."""
    return aredis.Redis(
        **redis_options(settings),
        socket_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        client_name=client_name,
    )


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Turn "Redis cannot be reached" into the port's ``DependencyUnavailable``."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError) as exc:
        raise DependencyUnavailable(f"Redis unreachable ({what}): {exc or type(exc).__name__}") from exc


class _ProbeFailed(Exception):
    """The probe did not come back: the subscriber connection cannot be trusted."""


class RedisBroker:
    """The ``Broker`` port over Redis Pub/Sub; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        instance_id: str | None = None,
        backoff_first_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._settings = settings
        self._prefix = settings.prefix
        self._prefix_b = settings.prefix.encode()
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self._probe_channel = f"{settings.prefix}probe:{self.instance_id}".encode()
        self._client = redis_client(settings, client_name=f"{settings.prefix}publish:{self.instance_id}")
        self._backoff_first_s, self._backoff_max_s = backoff_first_s, backoff_max_s
        self._attempt = 0  # reconnects since the last success
        self._sink: BrokerSink | None = None
        self._wanted: set[str] = set()  # channels the caller subscribed
        self._on_server: set[str] = set()  # last command sent for them was SUBSCRIBE
        self._pending: dict[str, int] = {}  # SUBSCRIBE replies still outstanding
        self._live: set[str] = set()  # confirmed and wanted: messages are delivered
        self._awaiting_ready: set[str] = set()  # subscribe() calls not yet answered by channel_ready
        self._touched: set[str] = set()  # subscribed or unsubscribed since the writer's last diff
        self._dirty = asyncio.Event()
        self._probe_token = b""
        self._probe_seen = asyncio.Event()
        self._outage: str | None = None  # reason of the loss reported and not yet recovered
        self._first_outcome: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.healthy = False

    async def start(self, sink: BrokerSink) -> None:
        """Returns once connected and subscribed, or once the first attempt failed
        (then ``sink.status(False, ...)`` was called and reconnecting continues)."""
        self._sink = sink
        self._first_outcome = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"redis-broker-{self.instance_id}")
        await self._first_outcome

    def subscribe(self, channel: str) -> None:
        self._wanted.add(channel)
        if channel in self._live:
            asyncio.get_running_loop().call_soon(self._ready_if_live, channel)
        else:
            self._awaiting_ready.add(channel)
            self._touched.add(channel)
            self._dirty.set()

    def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._live.discard(channel)
        self._awaiting_ready.discard(channel)
        self._touched.add(channel)
        self._dirty.set()

    async def publish(self, channel: str, data: bytes) -> None:
        """PUBLISH through the pool. Raises ``DependencyUnavailable`` within ~2 s
        when Redis is unreachable."""
        with unavailable(f"publish to {channel}"):
            await self._client.publish(self._prefix + channel, data)
        metrics.BROKER_PUBLISHED.inc()

    async def close(self) -> None:
        self._sink = None
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        await self._client.aclose()
        self.healthy = False

    # --- connection lifecycle -------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            conn = aredis.Connection(
                **redis_options(self._settings),
                socket_timeout=None,  # the reader blocks; liveness is the probe's job
                client_name=f"{self._prefix}subscribe:{self.instance_id}",
            )
            try:
                reason = await self._serve(conn)
            finally:
                await self._drop(conn)
            self._lost(reason)
            self._attempt += 1
            delay = backoff_s(self._attempt, base_s=self._backoff_first_s, cap_s=self._backoff_max_s,
                              jitter=random.random())
            log.debug("= Redis subscriber reconnecting in %.2fs after: %s", delay, reason)
            await asyncio.sleep(delay)

    async def _serve(self, conn: aredis.Connection) -> str:
        """Run one connection until it fails; returns why."""
        try:
            await asyncio.wait_for(self._open(conn), SOCKET_TIMEOUT_S)
        except _LOST as exc:
            return f"connect failed: {exc or type(exc).__name__}"
        tasks = [asyncio.create_task(coro) for coro in (self._read(conn), self._write(conn), self._probe())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        error = next(iter(done)).exception()
        return (str(error) or type(error).__name__) if error else "connection ended"

    async def _open(self, conn: aredis.Connection) -> None:
        await conn.connect()
        self._on_server.clear()
        self._pending.clear()
        wanted = sorted(self._wanted)
        for channel in wanted:
            self._sent_subscribe(channel)
        await conn.send_command("SUBSCRIBE", self._probe_channel, *(self._prefix + c for c in wanted))

    async def _drop(self, conn: aredis.Connection) -> None:
        try:
            await conn.disconnect(nowait=True)
        except _LOST as exc:  # closing a dead socket may itself fail; it is gone either way
            log.debug("! closing the Redis subscriber connection: %s", exc)

    def _lost(self, reason: str) -> None:
        self.healthy = False
        self._live.clear()
        self._resolve_first_outcome()
        if self._outage is None:
            self._outage = reason
            log.warning("! Redis subscriber connection lost: %s", reason)
            self._call_sink("status", False, reason)

    def _resolve_first_outcome(self) -> None:
        if self._first_outcome is not None and not self._first_outcome.done():
            self._first_outcome.set_result(None)

    # --- the three tasks of one connection ------------------------------------------------

    async def _read(self, conn: aredis.Connection) -> None:
        while True:
            reply = await conn.read_response()
            if not isinstance(reply, list) or len(reply) < 2:
                continue
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1], reply[2])
            elif kind == b"subscribe":
                self._on_subscribed(reply[1])

    async def _write(self, conn: aredis.Connection) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            commands = self._sync_commands()
            if commands:
                if not conn.is_connected:  # never let redis-py reconnect this socket silently
                    raise RedisConnectionError("subscriber connection closed")
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self._settings.probe_interval_s)
            self._probe_token = uuid.uuid4().hex.encode()
            self._probe_seen.clear()
            try:
                await asyncio.wait_for(self._round_trip(), self._settings.probe_timeout_s)
            except asyncio.TimeoutError:
                raise _ProbeFailed("probe timeout") from None
            except RedisError as exc:
                raise _ProbeFailed(f"probe publish failed: {exc}") from exc

    async def _round_trip(self) -> None:
        await self._client.publish(self._probe_channel, self._probe_token)
        await self._probe_seen.wait()

    # --- subscription bookkeeping ---------------------------------------------------------

    def _sync_commands(self) -> list[tuple[Any, ...]]:
        """SUBSCRIBE/UNSUBSCRIBE that bring the server in line with ``_wanted``.

        A wanted channel is (re)subscribed when the server is not subscribed, or
        when it is but the caller unsubscribed and subscribed again meanwhile
        (not live, nothing outstanding): SUBSCRIBE is then a no-op on the server
        whose reply confirms the channel for ``channel_ready``.

        Only the channels touched since the last diff are looked at: any other is
        in line already (the last diff or ``_open`` sent what it needed, and only
        ``subscribe``/``unsubscribe`` can put it out of line), and a resume storm
        touches 10,000 channels one write turn at a time."""
        touched, self._touched = sorted(self._touched), set()
        subscribe = [
            c for c in touched if c in self._wanted
            and (c not in self._on_server or (c not in self._live and not self._pending.get(c)))
        ]
        unsubscribe = [c for c in touched if c in self._on_server and c not in self._wanted]
        for channel in subscribe:
            self._sent_subscribe(channel)
        self._on_server.difference_update(unsubscribe)
        commands: list[tuple[Any, ...]] = []
        if subscribe:
            commands.append(("SUBSCRIBE", *(self._prefix + c for c in subscribe)))
        if unsubscribe:
            commands.append(("UNSUBSCRIBE", *(self._prefix + c for c in unsubscribe)))
        return commands

    def _sent_subscribe(self, channel: str) -> None:
        self._on_server.add(channel)
        self._pending[channel] = self._pending.get(channel, 0) + 1

    def _on_subscribed(self, raw: bytes) -> None:
        if raw != self._probe_channel:
            channel = raw[len(self._prefix_b):].decode()
            left = self._pending.pop(channel, 1) - 1
            if left > 0:
                self._pending[channel] = left
            elif channel in self._wanted and channel in self._on_server:
                self._live.add(channel)
                if channel in self._awaiting_ready:
                    self._awaiting_ready.discard(channel)
                    self._call_sink("channel_ready", channel)
        if not self.healthy and self._wanted <= self._live:
            self._recovered()

    def _recovered(self) -> None:
        self.healthy = True
        self._attempt = 0
        self._resolve_first_outcome()
        if self._outage is not None:
            log.info("= Redis subscriber reconnected after: %s", self._outage)
            self._outage = None
            metrics.REDIS_RECONNECTS.inc()
            self._call_sink("status", True, "reconnected")

    def _on_message(self, raw: bytes, data: bytes) -> None:
        if raw == self._probe_channel:
            if data == self._probe_token:
                self._probe_seen.set()
            return
        channel = raw[len(self._prefix_b):].decode()
        if channel in self._live:
            metrics.BROKER_RECEIVED.inc()
            self._call_sink("message", channel, data)

    def _ready_if_live(self, channel: str) -> None:
        if channel in self._live:
            self._call_sink("channel_ready", channel)

    def _call_sink(self, method: str, *args: Any) -> None:
        """A failing sink is our bug, not a Redis outage: log it, keep reading."""
        if self._sink is None:
            return
        try:
            getattr(self._sink, method)(*args)
        except Exception:
            log.exception("! broker sink %s%r failed", method, args)
