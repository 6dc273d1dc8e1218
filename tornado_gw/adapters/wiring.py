"""Which adapter serves each port, decided once from the settings.

| configured          | broker  | log / publisher        | stores | membership      |
|---------------------|---------|------------------------|--------|-----------------|
| nothing (embedded)  | memory  | memory bounded log     | memory | all allowed     |
| REDIS_HOST          | Redis   | none / Redis publish   | Redis  | all allowed     |
| + POSTGRES_DSN      | Redis   | Postgres outbox        | Redis  | members table   |
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
from tornado_gw.ports import LoggedEvent, Publisher, ReplayGap
from tornado_gw.runtime.effects import Adapters
from tornado_gw.settings import Settings

Check = Callable[[], Awaitable[bool]]


@dataclass(slots=True)
class Wiring:
    adapters: Adapters
    publisher: Publisher
    description: str
    checks: Mapping[str, Check] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for closer in self.closers:
            await closer()


class NoDurableLog:
    """Redis without Postgres: nothing to replay from, said honestly (``recovered: false``)."""

    async def read_after(self, channels: Sequence[str], after_seq: int, limit: int) -> list[LoggedEvent]:
        raise ReplayGap("no durable log: POSTGRES_DSN is not configured")


async def build_wiring(settings: Settings) -> Wiring:
    if settings.redis_host is None:
        return _embedded(settings)
    raise NotImplementedError("Redis wiring lands with the Redis adapters")


def _embedded(settings: Settings) -> Wiring:
    broker = MemoryBroker()
    log = MemoryLog(broker, settings.memory_log_events)
    adapters = Adapters(broker, log, MemorySessions(), MemoryPresence(), MemoryTyping(), AllowAllMembership())
    return Wiring(adapters, log, "embedded: in-process broker and event log", closers=[broker.close])
