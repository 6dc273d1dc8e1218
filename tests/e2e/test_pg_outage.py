"""Postgres going away (issue 4 point 7, CONTRACT §2 /health, §4 ``recovered: false``):
a TCP proxy between one process and Postgres is cut or blackholed, everything
else keeps its direct connections. Real gateway, relay, Postgres and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Client, GatewayProcess, T, wait_until
from tests.e2e.test_durable import (
    Cluster,
    joined,
    message,
    new_cluster,
    numbered,
    postgres_address,
    replay,
    seqs,
    through,
)
from tests.support.tcp_proxy import ProxyThread

pytestmark = pytest.mark.e2e
cluster = pytest.fixture(new_cluster, name="cluster")


@pytest.fixture
def pg_proxy(cluster: Cluster) -> Iterator[ProxyThread]:
    """A proxy to this test's Postgres; point one process at it with ``through(pg_proxy, dsn)``."""
    with ProxyThread(postgres_address(cluster.settings.postgres_dsn or "")) as proxy:
        yield proxy


async def unavailable(client: Client, conversation_id: str) -> str:
    """Subscribe while membership cannot be checked: ``error`` ``unavailable`` (nothing
    granted, nothing denied that might be allowed); returns its ``ref_type``."""
    await client.send("subscribe", {"conversation_ids": [conversation_id]})
    error = (await client.expect("error"))["payload"]
    assert error["code"] == "unavailable", error
    return str(error["ref_type"])


def health_becomes(gateway: GatewayProcess, status: str, timeout: float = T) -> dict[str, object]:
    """Poll /health until its status is ``status``; returns that answer."""
    answers: list[dict[str, object]] = []

    def check() -> bool:
        code, body = gateway.http("GET", "/health")
        assert code == 200, body  # liveness: always 200, also while degraded
        answers.append(body)
        return body.get("status") == status

    wait_until(check, f"/health to say {status}", timeout)
    return answers[-1]


async def test_gateway_without_postgres_degrades_fails_closed_and_recovers(
        cluster: Cluster, pg_proxy: ProxyThread) -> None:
    cluster.add_members(("c1", "alice"), ("c2", "alice"))
    gateway = cluster.gateway(POSTGRES_DSN=through(pg_proxy, cluster.settings.postgres_dsn or ""),
                              membership_cache_s=60)
    cluster.relay()  # its own, direct Postgres: it keeps publishing
    alice, session = await joined(gateway, "alice", "c1")  # c1 is now a cached grant
    first = cluster.published(cluster.insert([message("c1", 0)]))
    assert seqs(await numbered(alice, 1)) == first
    await alice.close()

    pg_proxy.cut()
    assert health_becomes(gateway, "degraded")["checks"] == {"redis": "ok", "postgres": "unreachable"}
    assert gateway.http("GET", "/ready")[0] == 503
    status, body = gateway.http("POST", "/publish", {"channel": "conv:c1", "type": "message.new",
                                                     "payload": {}})
    assert status == 503, body
    missed = cluster.published(cluster.insert([message("c1", 1)]))

    started = time.monotonic()
    alice = await Client.connect(gateway)
    auth = await alice.auth("alice", session_id=session, last_seq=first[0])
    assert auth["resumed"] is True and auth["conversation_ids"] == ["c1"]
    assert await replay(alice) == ([], {"count": 0, "recovered": False})
    assert time.monotonic() - started < T  # bounded by probe_timeout_s, not a hang
    assert await unavailable(alice, "c2") == "subscribe"  # fail closed, and said why (CONTRACT §4 v2)
    live = cluster.published(cluster.insert([message("c1", 2)]))
    assert seqs(await numbered(alice, 1)) == live  # Redis fan-out goes on meanwhile

    pg_proxy.restore()
    health_becomes(gateway, "ok", 3 * T)
    assert gateway.http("GET", "/ready")[0] == 200
    assert await alice.subscribe("c2") == {"conversation_ids": ["c2"], "denied": []}
    again = await Client.connect(gateway)
    await again.auth("alice")
    await again.send("subscribe", {"conversation_ids": ["c1"], "last_seq": first[0]})
    assert (await again.expect("subscribed"))["payload"]["conversation_ids"] == ["c1"]
    assert await replay(again) == (missed + live, {"count": 2, "recovered": True})
    await alice.close()
    await again.close()


async def test_an_unanswering_postgres_costs_a_resume_seconds_not_a_hang(
        cluster: Cluster, pg_proxy: ProxyThread) -> None:
    """Blackholed: connections stay open and nothing comes back. Default probe_timeout_s (3 s)."""
    cluster.add_members(("c1", "alice"), ("c2", "alice"))
    gateway = cluster.gateway(POSTGRES_DSN=through(pg_proxy, cluster.settings.postgres_dsn or ""),
                              membership_cache_s=60, probe_timeout_s=3)
    cluster.relay()
    alice, session = await joined(gateway, "alice", "c1")
    await alice.close()

    pg_proxy.blackhole()
    started = time.monotonic()
    alice = await Client.connect(gateway)
    await alice.auth("alice", session_id=session, last_seq=0)
    assert await replay(alice, timeout=2 * T) == ([], {"count": 0, "recovered": False})
    resumed_s = time.monotonic() - started
    assert await unavailable(alice, "c2") == "subscribe"
    assert resumed_s < 5.0 and time.monotonic() - started < 10.0, time.monotonic() - started
    pg_proxy.restore()
    health_becomes(gateway, "ok", 3 * T)
    assert await alice.subscribe("c2") == {"conversation_ids": ["c2"], "denied": []}
    await alice.close()


async def test_relay_cut_from_postgres_retries_and_catches_up_in_order(
        cluster: Cluster, pg_proxy: ProxyThread) -> None:
    cluster.add_members(("c1", "alice"))
    gateway = cluster.gateway()
    relay = cluster.relay(POSTGRES_DSN=through(pg_proxy, cluster.settings.postgres_dsn or ""))
    alice, _ = await joined(gateway, "alice", "c1")
    first = cluster.published(cluster.insert([message("c1", 0)]))
    assert seqs(await numbered(alice, 1)) == first

    pg_proxy.cut()
    ids = cluster.insert([message("c1", n) for n in range(1, 21)])  # the API server still writes
    wait_until(lambda: "postgres failed, retrying with backoff" in relay.logs(), "the relay to notice")
    assert seqs(await alice.silent(0.5)) == []
    assert cluster.query("SELECT count(*) FROM {outbox} WHERE seq IS NULL") == [(20,)]

    pg_proxy.restore()
    caught_up = cluster.published(ids, timeout=3 * T)  # the backoff is capped at 5 s
    assert caught_up == list(range(first[0] + 1, first[0] + 21))
    assert seqs(await numbered(alice, 20)) == caught_up
    assert "postgres recovered" in relay.logs()
    await alice.close()
