"""After a Redis outage the gateway fills the gap from where its stream stopped, or
says it cannot (CONTRACT §4 v2, §6; issue 9 item 1). The gateway reaches Redis
through a proxy that is cut; the relay and the test talk to Redis directly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.cluster import Cluster as RedisCluster
from tests.e2e.harness import GatewayProcess, T, async_wait_until
from tests.e2e.harness import joined as redis_joined
from tests.e2e.test_durable import Cluster, joined, message, new_cluster, numbered, seqs
from tests.support.tcp_proxy import ProxyThread

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
cluster = pytest.fixture(new_cluster, name="cluster")
FAST_PROBE = {"probe_interval_s": 0.3, "probe_timeout_s": 0.5}


def health(gateway: GatewayProcess) -> str:
    return str(gateway.http("GET", "/health")[1]["status"])


async def outage(gateway: GatewayProcess, proxy: ProxyThread) -> None:
    proxy.cut()
    await async_wait_until(lambda: health(gateway) == "degraded", "the gateway to notice the outage")


async def recovery(gateway: GatewayProcess, proxy: ProxyThread) -> None:
    proxy.restore()
    await async_wait_until(lambda: health(gateway) == "ok", "the gateway to reconnect", 2 * T)


async def test_a_quiet_and_a_busy_conversation_get_everything_an_outage_lost(cluster: Cluster) -> None:
    cluster.add_members(("quiet", "alice"), ("busy", "alice"))
    with ProxyThread(cluster.redis_host) as proxy:
        gateway = cluster.gateway(REDIS_HOST=proxy.proxy.address, **FAST_PROBE)
        cluster.relay()
        alice, _ = await joined(gateway, "alice", "quiet", "busy")
        history = [message("quiet", 0)] + [message("busy", n) for n in range(300)]
        before = cluster.published(cluster.insert(history))
        assert seqs(await numbered(alice, len(before))) == before
        await outage(gateway, proxy)
        lost = cluster.published(cluster.insert([message("busy", n) for n in range(300, 400)]
                                                + [message("quiet", 1)]))
        await recovery(gateway, proxy)
        live = cluster.published(cluster.insert([message("busy", 400)]))
        assert seqs(await numbered(alice, len(lost) + 1)) == lost + live
        assert [f for f in alice.received if f["type"] == "replay.done"] == []


@pytest.fixture
def redis_cluster(start_gateway: Callable[..., GatewayProcess], redis_host: str,
                  redis_prefix: str) -> Iterator[RedisCluster]:
    yield from RedisCluster.running(start_gateway, redis_host, redis_prefix)


async def test_without_a_durable_log_an_outage_is_announced_then_live_goes_on(
        redis_cluster: RedisCluster) -> None:
    with ProxyThread(redis_cluster.redis_host) as proxy:
        [gateway] = redis_cluster.start(1, redis_host=proxy.proxy.address, **FAST_PROBE)
        alice = await redis_joined(gateway, "alice", "c1")
        await outage(gateway, proxy)
        started = time.monotonic()
        await recovery(gateway, proxy)
        done = await alice.expect("replay.done", timeout=T)
        assert done["payload"] == {"count": 0, "recovered": False}
        assert time.monotonic() - started < 2 * T
        async with redis_cluster.redis() as redis:
            await redis_cluster.publish(redis, "c1", "test.live", n=1)
        assert (await alice.next())["type"] == "test.live"
