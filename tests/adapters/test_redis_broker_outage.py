"""The Redis broker when Redis goes away (CONTRACT §6, PITFALLS 1 and 2).

The broker talks to Redis through a ``TcpProxy`` that the test cuts or
blackholes; the test itself publishes and inspects Redis directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aredis

from tests.support.redis import RecordingSink, eventually, run, split_host
from tests.support.tcp_proxy import TcpProxy
from tornado_gw import metrics
from tornado_gw.adapters.redis_broker import RedisBroker
from tornado_gw.ports import DependencyUnavailable
from tornado_gw.settings import Settings


class Rig:
    """A broker behind a proxy, plus a direct client to publish and look around."""

    def __init__(self, proxy: TcpProxy, broker: RedisBroker, sink: RecordingSink, direct: aredis.Redis,
                 prefix: str) -> None:
        self.proxy, self.broker, self.sink, self.direct, self.prefix = proxy, broker, sink, direct, prefix

    async def ready(self, channel: str, times: int = 1) -> None:
        await eventually(lambda: self.sink.readies(channel) == times, f"channel_ready({channel}) x{times}")

    async def delivered(self, channel: str, data: bytes) -> None:
        """Publish directly to Redis (retrying: at most once) until the broker's sink gets it."""
        async def arrived() -> bool:
            await self.direct.publish(self.prefix + channel, data)
            await asyncio.sleep(0.05)
            return data in self.sink.messages(channel)

        deadline = time.monotonic() + 5
        while not await arrived():
            assert time.monotonic() < deadline, f"{data!r} never reached the sink on {channel}"

    async def recovered(self, statuses: list[bool]) -> None:
        await eventually(lambda: self.sink.statuses() == statuses, f"statuses {statuses}")
        assert self.broker.healthy is statuses[-1]

    async def subscriber_connections(self) -> int:
        clients = await self.direct.client_list()
        return sum(1 for c in clients if c["name"] == f"{self.prefix}subscribe:{self.broker.instance_id}")


Target = tuple[str, str]


@pytest.fixture
def target(redis_host: str, redis_prefix: str) -> Target:
    """Where the real Redis is, and this test's prefix."""
    return redis_host, redis_prefix


@asynccontextmanager
async def rig(target: Target, *, cut_first: bool = False) -> AsyncIterator[Rig]:
    redis_host, prefix = target
    host, port = split_host(redis_host)
    direct = aredis.Redis(host=host, port=port, protocol=2)
    async with TcpProxy(redis_host) as proxy:
        if cut_first:
            await proxy.cut()
        settings = Settings(
            redis_host=proxy.address, prefix=prefix, probe_interval_s=0.2, probe_timeout_s=0.5
        )
        broker, sink = RedisBroker(settings, backoff_first_s=0.05, backoff_max_s=0.2), RecordingSink()
        await broker.start(sink)
        try:
            yield Rig(proxy, broker, sink, direct, prefix)
        finally:
            await broker.close()
            await direct.aclose()


def _reconnects() -> float:
    return metrics.REGISTRY.get_sample_value("gateway_redis_reconnects_total") or 0.0


def _broker_tasks() -> int:
    return sum(1 for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith("RedisBroker."))


def test_cut_reports_down_then_reconnects_resubscribes_and_delivers(target: Target) -> None:
    async def scenario() -> None:
        async with rig(target) as r:
            r.broker.subscribe("conv:1")
            await r.ready("conv:1")
            reconnects = _reconnects()
            await r.proxy.cut()
            await r.recovered([False])
            with pytest.raises(DependencyUnavailable):
                await r.broker.publish("conv:1", b"while-down")
            r.broker.subscribe("conv:2")  # asked during the outage: ready once Redis confirms it
            await r.proxy.restore()
            await r.recovered([False, True])
            await r.ready("conv:2")
            assert r.sink.readies("conv:1") == 1  # a resubscription is reported by status(True) alone
            await r.delivered("conv:1", b"after-1")
            await r.delivered("conv:2", b"after-2")
            assert _reconnects() == reconnects + 1

    run(scenario())


def test_repeated_cuts_leave_one_subscriber_connection_and_no_stray_tasks(target: Target) -> None:
    async def scenario() -> None:
        async with rig(target) as r:
            r.broker.subscribe("user:7")
            await r.ready("user:7")
            tasks = _broker_tasks()
            for cycle in range(3):
                await r.proxy.cut()
                await eventually(lambda: not r.broker.healthy, f"down in cycle {cycle}")
                await asyncio.sleep(0.3)  # a few failed reconnect attempts
                await r.proxy.restore()
                await eventually(lambda: r.broker.healthy, f"up again in cycle {cycle}")
            assert r.sink.statuses() == [False, True] * 3
            assert _broker_tasks() == tasks == 4  # supervisor, reader, writer, prober
            await eventually(lambda: r.proxy.open_links <= 2, "at most subscriber + publisher links")
            assert await r.subscriber_connections() == 1
            await r.delivered("user:7", b"still-flowing")

    run(scenario())


def test_blackhole_trips_the_probe_and_the_connection_is_restarted(target: Target) -> None:
    async def scenario() -> None:
        async with rig(target) as r:
            r.broker.subscribe("conv:b")
            await r.ready("conv:b")
            await r.proxy.blackhole()
            await eventually(lambda: ("status", False, "probe timeout") in r.sink.log, "a probe timeout")
            started = time.monotonic()
            with pytest.raises(DependencyUnavailable):
                await r.broker.publish("conv:b", b"into-the-void")
            assert time.monotonic() - started < 3.0  # bounded by the socket timeout
            await r.proxy.restore()
            await r.recovered([False, True])
            await r.delivered("conv:b", b"after-blackhole")
            assert await r.subscriber_connections() == 1

    run(scenario())


def test_start_while_redis_is_unreachable_reports_down_and_recovers(target: Target) -> None:
    async def scenario() -> None:
        async with rig(target, cut_first=True) as r:
            assert r.sink.statuses() == [False]
            assert r.broker.healthy is False
            r.broker.subscribe("conv:late")
            await r.proxy.restore()
            await r.recovered([False, True])
            await r.ready("conv:late")
            await r.delivered("conv:late", b"hello")

    run(scenario())
