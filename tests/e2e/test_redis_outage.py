"""A gateway whose Redis goes away: clients stay, health says so, delivery comes back
(CONTRACT §2 ``/health`` and ``/ready``, §6; PITFALLS 1 and 2).

The gateway reaches Redis through a ``TcpProxy`` that runs on its own thread
and event loop, so the proxy keeps forwarding while the test blocks on HTTP
calls or process waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aredis

from tests.e2e.cluster import Cluster, of_type, open_sockets, presence_changes, rss_kb, settle
from tests.e2e.harness import Client, GatewayProcess, T, async_wait_until, joined
from tests.support.tcp_proxy import ProxyThread

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROBE_INTERVAL_S = 0.3
PROBE_TIMEOUT_S = 0.5
CUTS = 5
# redis-py pools reconnect lazily, so pooled sockets come and go between samples (seen: 10, 10, 11, 12, 11)
POOL_SLACK = 2


@pytest.fixture
def cluster(start_gateway: Callable[..., GatewayProcess], redis_host: str,
            redis_prefix: str) -> Iterator[Cluster]:
    yield from Cluster.running(start_gateway, redis_host, redis_prefix)


@pytest.fixture
def proxy(redis_host: str) -> Iterator[ProxyThread]:
    with ProxyThread(redis_host) as running:
        yield running


def _health(gateway: GatewayProcess) -> dict[str, Any]:
    status, body = gateway.http("GET", "/health")
    assert status == 200, body  # liveness: 200 even while degraded
    return dict(body)


async def _degraded(gateway: GatewayProcess, timeout: float = T) -> None:
    await async_wait_until(lambda: _health(gateway)["status"] == "degraded", "/health degraded", timeout)
    assert _health(gateway)["checks"] == {"redis": "unreachable"}
    assert gateway.http("GET", "/ready")[0] == 503


async def _recovered(gateway: GatewayProcess) -> None:
    # the reconnect backoff is capped at 5 s, and these outages are short
    await async_wait_until(lambda: _health(gateway)["status"] == "ok", "/health ok again", 2 * T)
    assert _health(gateway)["checks"] == {"redis": "ok"}
    assert gateway.http("GET", "/ready")[0] == 200


async def _still_connected(client: Client) -> None:
    await client.send("ping")
    await client.expect("pong")


async def _delivered(cluster: Cluster, redis: aredis.Redis, client: Client, n: int) -> None:
    """Channels are subscribed again: a frame published now reaches the client."""
    assert await cluster.publish(redis, "c1", "test.n", n=n) >= 1
    assert (await client.expect("test.n"))["payload"]["n"] == n


async def _alice_behind(proxy: ProxyThread, cluster: Cluster,
                        redis: aredis.Redis) -> tuple[GatewayProcess, Client]:
    """A gateway that reaches Redis through ``proxy``, and a client receiving conv:c1 on it."""
    [gateway] = cluster.start(1, redis_host=proxy.proxy.address, probe_interval_s=PROBE_INTERVAL_S,
                              probe_timeout_s=PROBE_TIMEOUT_S)
    alice = await joined(gateway, "alice", "c1")
    await _delivered(cluster, redis, alice, 0)
    return gateway, alice


async def test_cut_redis_keeps_clients_reports_degraded_then_resubscribes_without_leaking(
        cluster: Cluster, proxy: ProxyThread) -> None:
    async with cluster.redis() as redis:
        gateway, alice = await _alice_behind(proxy, cluster, redis)
        sockets, rss = [], []
        for cut in range(1, CUTS + 1):
            proxy.cut()
            await _degraded(gateway)
            # `subscribed` means live (CONTRACT §3): the reply waits for Redis, pings do not
            await alice.send("subscribe", {"conversation_ids": [f"d{cut}"]})
            await _still_connected(alice)
            assert len(of_type(alice.received, "subscribed")) == cut
            assert _health(gateway)["connections"] == 1
            proxy.restore()
            await _recovered(gateway)
            assert (await alice.expect("subscribed"))["payload"]["conversation_ids"] == [f"d{cut}"]
            channels = [cluster.prefix + name for name in ("conv:c1", f"conv:d{cut}")]
            await settle(lambda ch=channels: redis.pubsub_numsub(*ch), [(c.encode(), 1) for c in channels],
                         "channels subscribed again")
            await _delivered(cluster, redis, alice, cut)
            assert gateway.metric("gateway_redis_reconnects_total") == cut
            sockets.append(open_sockets(gateway))
            rss.append(rss_kb(gateway))
        # a leak grows by at least one every cut: CUTS - 1 > POOL_SLACK between the first and the last
        assert max(sockets) - min(sockets) <= POOL_SLACK, f"sockets held grow with every outage: {sockets}"
        assert rss[-1] - rss[0] < 4096, f"memory grows with every outage (kB): {rss}"
        assert "Traceback" not in gateway.logs()


async def test_a_half_open_redis_is_noticed_by_the_probe_and_the_subscriber_restarts(
        cluster: Cluster, proxy: ProxyThread) -> None:
    async with cluster.redis() as redis:
        gateway, alice = await _alice_behind(proxy, cluster, redis)
        subscriber = await _subscriber_ids(cluster, redis)
        assert len(subscriber) == 1

        proxy.blackhole()  # sockets stay open, nothing goes through: no error ever arrives
        blackholed_at = time.monotonic()
        await _degraded(gateway, timeout=PROBE_INTERVAL_S + PROBE_TIMEOUT_S + 0.5)
        assert time.monotonic() - blackholed_at <= PROBE_INTERVAL_S + PROBE_TIMEOUT_S + 0.5
        assert "probe timeout" in gateway.logs()
        # the broker dropped the silent connection instead of waiting on it forever
        await settle(lambda: _subscriber_ids(cluster, redis), set(), "old subscriber connection closed")
        await _still_connected(alice)

        proxy.restore()
        await _recovered(gateway)
        restarted = await _subscriber_ids(cluster, redis)
        assert len(restarted) == 1 and restarted != subscriber
        await _delivered(cluster, redis, alice, 1)
        assert gateway.metric("gateway_redis_reconnects_total") == 1


async def _subscriber_ids(cluster: Cluster, redis: aredis.Redis) -> set[str]:
    """Redis-side ids of the connections named as the gateway's Pub/Sub subscriber."""
    return {c["id"] for c in await redis.client_list() if c["name"].startswith(cluster.prefix + "subscribe:")}


async def test_users_are_announced_online_again_after_an_outage_longer_than_the_presence_ttl(
        cluster: Cluster, proxy: ProxyThread) -> None:
    async with cluster.redis():
        [direct] = cluster.start(1, presence_ttl_s=1.5)
        observer = await joined(direct, "observer", "c1")
        [behind] = cluster.start(1, redis_host=proxy.proxy.address, presence_ttl_s=1.5,
                                 probe_interval_s=PROBE_INTERVAL_S, probe_timeout_s=PROBE_TIMEOUT_S)
        await joined(behind, "alice", "c1")
        assert (await presence_changes(observer, 2))[0] == [("observer", "online"), ("alice", "online")]
        proxy.cut()
        await _degraded(behind)
        assert await presence_changes(observer, 1, timeout=3 * T) == ([("alice", "offline")], 1)
        proxy.restore()
        await _recovered(behind)
        assert await presence_changes(observer, 1, timeout=2 * T) == ([("alice", "online")], 2)
        await observer.send("presence.query", {"conversation_id": "c1"})
        assert (await observer.expect("presence.state"))["payload"]["user_ids"] == ["alice", "observer"]
