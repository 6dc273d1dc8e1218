"""Which adapter serves each port, decided once from the settings.

| configured          | broker  | log / publisher        | stores, slots | membership      |
|---------------------|---------|------------------------|---------------|-----------------|
| nothing (embedded)  | memory  | memory bounded log     | memory        | all allowed     |
| REDIS_HOST          | Redis   | none / Redis publish   | Redis         | all allowed     |
| + POSTGRES_DSN      | Redis   | Postgres outbox        | Redis         | members table   |
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tornado_gw.adapters.memory import (
    AllowAllMembership,
    MemoryBroker,
    MemoryLog,
    MemoryPresence,
    MemorySessions,
    MemoryTyping,
)
from tornado_gw.adapters.memory_slots import MemorySlots
from tornado_gw.adapters.pg_outbox import PgOutbox
from tornado_gw.adapters.redis_broker import RedisBroker
from tornado_gw.adapters.redis_publisher import RedisPublisher
from tornado_gw.adapters.redis_slots import RedisSlots
from tornado_gw.adapters.redis_snapshots import RedisPresence, RedisSessions, RedisTyping
from tornado_gw.core.records import LoggedEvent
from tornado_gw.ports import ConnectionSlots, Publisher, ReplayGap
from tornado_gw.runtime.effects import Adapters
from tornado_gw.settings import Settings, SettingsError

Check = Callable[[], Awaitable[bool]]


@dataclass(slots=True)
class Wiring:
    adapters: Adapters
    publisher: Publisher
    slots: ConnectionSlots
    description: str
    checks: Mapping[str, Check] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for closer in self.closers:
            await closer()


class NoDurableLog:
    """Redis without Postgres: nothing to replay from, said honestly (``recovered: false``)."""

    async def read_after(self, channels: Sequence[str], after_seq: int, limit: int,
                         until_seq: int | None = None) -> list[LoggedEvent]:
        raise ReplayGap("no durable log: POSTGRES_DSN is not configured")

    async def head_seq(self) -> int:
        return 0


async def build_wiring(settings: Settings) -> Wiring:
    """Raises SettingsError for a combination ``serve`` cannot run."""
    if settings.redis_host is None:
        if settings.postgres_dsn is not None:
            raise SettingsError("postgres_dsn", "serving needs redis_host (REDIS_HOST) too: "
                                "the relay delivers the outbox through Redis Pub/Sub")
        return _embedded(settings)
    return await _clustered(settings)


async def _clustered(settings: Settings) -> Wiring:
    broker = RedisBroker(settings)
    stores = (RedisSessions.from_settings(settings), RedisPresence.from_settings(settings),
              RedisTyping.from_settings(settings))

    async def broker_delivers() -> bool:
        return broker.healthy  # proved by the broker's own probe round trips (PITFALLS 2)

    slots = RedisSlots.from_settings(settings)
    checks: dict[str, Check] = {"redis": broker_delivers}
    closers: list[Callable[[], Awaitable[None]]] = [broker.close, slots.close, *(s.close for s in stores)]
    if settings.postgres_dsn is None:
        adapters = Adapters(broker, NoDurableLog(), *stores, AllowAllMembership())
        return Wiring(adapters, RedisPublisher(broker), slots, "Redis, no durable log", checks, closers)
    outbox = PgOutbox(settings)
    await outbox.open()
    membership = outbox.membership if settings.authorization == "members" else AllowAllMembership()
    adapters = Adapters(broker, outbox.log, *stores, membership)
    checks["postgres"] = outbox.check
    closers.append(outbox.close)
    return Wiring(adapters, outbox.publisher, slots, "Redis and Postgres outbox", checks, closers)


def _embedded(settings: Settings) -> Wiring:
    broker = MemoryBroker()
    log = MemoryLog(broker, settings.memory_log_events)
    stores = (MemorySessions(), MemoryPresence(broker.publish_nowait), MemoryTyping(broker.publish_nowait))
    adapters = Adapters(broker, log, *stores, AllowAllMembership())
    slots = MemorySlots(settings.presence_ttl_s)
    return Wiring(adapters, log, slots, "embedded: in-process broker and event log", closers=[broker.close])
