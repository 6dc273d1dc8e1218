"""Redis accepts connections and never answers (CONTRACT §4 v2: every request is
answered within 10 s). The gateway reaches Redis through a blackholed proxy, with
the default probe timers so the broker is not yet known to be down when the
requests arrive; Postgres (the durable log) stays up, so the normal replies go out
and what is published meanwhile still arrives once Redis is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import Client, T, token
from tests.e2e.test_durable import Cluster, joined, message, new_cluster, numbered, seqs
from tests.support.tcp_proxy import ProxyThread

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
cluster = pytest.fixture(new_cluster, name="cluster")
ANSWER_WITHIN_S = 10.0


@pytest.fixture
def redis_proxy(cluster: Cluster) -> Iterator[ProxyThread]:
    with ProxyThread(cluster.redis_host) as proxy:
        yield proxy


async def answered(client: Client, kind: str, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Send one request; its first reply (not a presence frame) and how long it took."""
    started = time.monotonic()
    await client.send(kind, payload)
    while True:
        frame = await client.next(ANSWER_WITHIN_S + T)
        if not frame["type"].startswith("presence"):
            return frame, time.monotonic() - started


async def test_subscribe_auth_and_resume_are_answered_in_time_while_redis_hangs(
        cluster: Cluster, redis_proxy: ProxyThread) -> None:
    cluster.add_members(("c1", "alice"), ("c2", "alice"), ("c1", "bob"))
    gateway = cluster.gateway(REDIS_HOST=redis_proxy.proxy.address, probe_interval_s=5, probe_timeout_s=3)
    cluster.relay()
    alice, session = await joined(gateway, "alice", "c1")
    await alice.close()
    carol, _ = await joined(gateway, "alice")

    redis_proxy.blackhole()
    resumer, fresh = await Client.connect(gateway), await Client.connect(gateway)
    (resumed, resume_s), (authed, auth_s), (subscribed, subscribe_s) = await asyncio.gather(
        answered(resumer, "auth", {"token": token("alice"), "session_id": session, "last_seq": 0}),
        answered(fresh, "auth", {"token": token("bob")}),
        answered(carol, "subscribe", {"conversation_ids": ["c2"]}))
    assert resumed["type"] == "auth.success", resumed
    assert resumed["payload"]["resumed"] is False  # the session could not be read in time
    assert authed["type"] == "auth.success", authed
    assert subscribed == {"type": "subscribed", "payload": {"conversation_ids": ["c2"], "denied": []}}
    assert max(resume_s, auth_s, subscribe_s) < ANSWER_WITHIN_S, (resume_s, auth_s, subscribe_s)

    missed = cluster.published(cluster.insert([message("c2", 1)]))  # the gateway's Redis link is dead
    redis_proxy.restore()
    assert seqs(await numbered(carol, 1, timeout=4 * T)) == missed  # read back from the log
    live = cluster.published(cluster.insert([message("c2", 2)]))
    assert seqs(await numbered(carol, 1, timeout=2 * T)) == live
    for client in (resumer, fresh, carol):
        await client.close()
