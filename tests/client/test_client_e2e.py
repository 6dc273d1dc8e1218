"""``tornado_gw.client`` against real gateways, the relay, Redis and Postgres, under failures.

Every scenario ends with the same check, what a user of the client observes:
per channel, every event in the outbox delivered once, in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from tests.e2e.harness import GatewayProcess, T, async_wait_until, token
from tests.e2e.test_durable import Cluster, message, notice
from tests.support.tcp_proxy import ProxyThread
from tornado_gw.client import Client, Event, Settings, StateChange

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = Settings(ping_interval_s=5, backoff_base_s=0.1, backoff_cap_s=1.0)
CHANNELS = ("conv:c1", "conv:c2", "user:alice")


class Recorder:
    """Everything a client hands its user: events (by channel) and state changes."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self.changes: list[StateChange] = []
        client.on_state(self.changes.append)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.client:
            self.events.append(event)

    def seqs(self, channel: str) -> list[int]:
        """Seqs received on ``channel`` (``conv:C`` events carry ``conversation_id``)."""
        conversation = channel.removeprefix("conv:") if channel.startswith("conv:") else None
        return [e.seq for e in self.events
                if e.seq is not None and e.payload.get("conversation_id") == conversation]

    def states(self) -> list[str]:
        return [change.state for change in self.changes]

    async def ended(self) -> None:
        """Return once the client's event stream has ended (``close()`` or a final close)."""
        await asyncio.wait_for(self._task, T)

    async def close(self) -> None:
        await self.client.close()
        await self.ended()


@contextmanager
def writing(cluster: Cluster, pause_s: float = 0.02) -> Iterator[list[int]]:
    """An API server committing events to c1, c2 and alice's user channel until the block ends."""
    stop = threading.Event()
    written: list[int] = []

    def run() -> None:
        n = 0
        while not stop.is_set():
            event = (message("c1", n), message("c2", n), notice("alice", n))[n % 3]
            written.extend(cluster.insert([event]))
            n += 1
            time.sleep(pause_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield written
    finally:
        stop.set()
        thread.join(2 * T)


async def while_writing(written: list[int], count: int) -> None:
    """Let ``count`` more events be written."""
    target = len(written) + count
    await async_wait_until(lambda: len(written) >= target, f"{count} more events written", 2 * T)


@asynccontextmanager
async def alice_behind_a_proxy(cluster: Cluster, gateway: GatewayProcess,
                               **settings: Any) -> AsyncIterator[tuple[ProxyThread, Recorder]]:
    """Alice's client, subscribed to c1 and c2, connected through a TCP proxy the test can cut."""
    with ProxyThread(f"127.0.0.1:{gateway.port}") as proxy:
        url = f"ws://{proxy.proxy.address}/ws"
        recorder = await alice(cluster, url, dataclasses.replace(FAST, **settings))
        yield proxy, recorder
        await recorder.close()


async def outage(proxy: ProxyThread, written: list[int], events: int, at_least_s: float = 0) -> None:
    """Cut the network while ``events`` more are written (and at least ``at_least_s``), then restore."""
    proxy.cut()
    await asyncio.sleep(at_least_s)
    await while_writing(written, events)
    proxy.restore()


async def resumed(recorder: Recorder) -> None:
    await async_wait_until(lambda: recorder.states()[-1:] == ["resumed"], "the client to resume", 3 * T)


async def assert_exactly_once_in_order(recorder: Recorder, cluster: Cluster) -> None:
    """Per channel, the client's seqs equal the outbox's (after the relay published them all)."""
    await asyncio.to_thread(cluster.published, [row[0] for row in cluster.query("SELECT id FROM {outbox}")])
    expected = {channel: cluster.channel_seqs(channel) for channel in CHANNELS}

    def complete() -> bool:
        return all(recorder.seqs(ch)[-1:] == seqs[-1:] for ch, seqs in expected.items())

    try:
        await async_wait_until(complete, "the client to receive the last event of every channel", 3 * T)
    finally:
        for channel, seqs in expected.items():
            got = recorder.seqs(channel)
            assert got == seqs, (f"{channel}: missing {sorted(set(seqs) - set(got))[:10]}, "
                                 f"{len(got) - len(set(got))} duplicates, states {recorder.states()}")


async def alice(cluster: Cluster, url: str | list[str], settings: Settings = FAST, **kwargs: Any) -> Recorder:
    cluster.add_members(("c1", "alice"), ("c2", "alice"))
    kwargs.setdefault("token", token("alice"))
    client = Client(url, settings=settings, **kwargs)
    recorder = Recorder(client)  # before start: it sees every state change
    client.start()
    await client.wait_open(T)
    await client.subscribe("c1", "c2", timeout=T)
    return recorder


async def test_client_resumes_exactly_after_its_gateway_is_sigkilled_and_restarted(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.relay()
    recorder = await alice(cluster, gateway.ws_url)
    with writing(cluster) as written:
        await while_writing(written, 20)
        gateway.signal(signal.SIGKILL)
        gateway.wait_exit()
        await while_writing(written, 20)
        await asyncio.to_thread(gateway.start)  # the same port
        await resumed(recorder)
        await while_writing(written, 20)
    await assert_exactly_once_in_order(recorder, cluster)
    assert recorder.states()[:2] == ["connecting", "connected"]
    assert "disconnected" in recorder.states()
    await recorder.close()


async def test_client_resumes_exactly_after_a_network_cut_while_events_keep_coming(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.relay()
    async with alice_behind_a_proxy(cluster, gateway) as (proxy, recorder):
        with writing(cluster) as written:
            await while_writing(written, 20)
            await outage(proxy, written, events=30)
            await resumed(recorder)
            await while_writing(written, 20)
        await assert_exactly_once_in_order(recorder, cluster)
        disconnects = [c for c in recorder.changes if c.state == "disconnected"]
        assert disconnects and disconnects[0].code == 1006


async def test_a_half_open_connection_is_noticed_by_the_ping_and_resumed(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.relay()
    async with alice_behind_a_proxy(cluster, gateway, ping_interval_s=0.5) as (proxy, recorder):
        with writing(cluster) as written:
            await while_writing(written, 20)
            proxy.blackhole()  # connections stay open, nothing gets through (PITFALLS 2)
            await async_wait_until(lambda: "disconnected" in recorder.states(), "the client to give up")
            proxy.restore()
            await resumed(recorder)
            await while_writing(written, 20)
        await assert_exactly_once_in_order(recorder, cluster)


async def test_sigterm_drain_moves_the_client_to_the_other_instance_to_resume(cluster: Cluster) -> None:
    first, second = cluster.gateway(), cluster.gateway()
    cluster.relay()
    recorder = await alice(cluster, [first.ws_url, second.ws_url])
    with writing(cluster) as written:
        await while_writing(written, 20)
        first.signal(signal.SIGTERM)
        await resumed(recorder)
        await while_writing(written, 20)
    await assert_exactly_once_in_order(recorder, cluster)
    drained = [c for c in recorder.changes if c.state == "disconnected"]
    assert [c.code for c in drained] == [1001]
    assert first.wait_exit() == 0
    await recorder.close()


async def test_a_short_lived_token_is_refreshed_over_the_live_connection(cluster: Cluster) -> None:
    gateway = cluster.gateway(jwt_leeway_s=0)
    cluster.relay()
    minted: list[str] = []

    async def get_token() -> str:
        minted.append(token("alice", ttl_s=3))
        return minted[-1]

    recorder = await alice(cluster, gateway.ws_url, token=None, get_token=get_token)
    with writing(cluster, pause_s=0.1) as written:
        await while_writing(written, 70)  # ~7 s: well past the first token's exp
    await assert_exactly_once_in_order(recorder, cluster)
    assert len(minted) >= 3, minted
    assert recorder.states() == ["connecting", "connected"], "the connection never dropped"
    await recorder.close()


async def test_an_outage_past_the_resume_window_recovers_through_subscribe_with_last_seq(
        cluster: Cluster) -> None:
    gateway = cluster.gateway(resume_window_s=1)
    cluster.relay()
    async with alice_behind_a_proxy(cluster, gateway) as (proxy, recorder):
        with writing(cluster) as written:
            await while_writing(written, 20)
            await outage(proxy, written, events=10, at_least_s=2.5)  # the resume window (1 s) passes
            await async_wait_until(lambda: recorder.states().count("connected") == 2,
                                   "a new session after the outage", 3 * T)
            await while_writing(written, 20)
        await assert_exactly_once_in_order(recorder, cluster)
        assert "resumed" not in recorder.states()
        assert any(e.type == "replay.done" and e.payload["recovered"] for e in recorder.events)


async def test_disconnect_closes_the_client_with_4010_and_it_never_comes_back(cluster: Cluster) -> None:
    """CONTRACT §2 ``POST /disconnect`` (to the instance the client is not on): 4010, no
    reconnect, and what arrived before it arrived once, in order, with no gap."""
    first, second = cluster.gateway(), cluster.gateway()
    cluster.relay()
    recorder = await alice(cluster, [first.ws_url, second.ws_url])
    with writing(cluster) as written:
        await while_writing(written, 30)
        status, _ = second.http("POST", "/disconnect", {"user_id": "alice", "reason": "banned"})
        assert status == 202
        await async_wait_until(lambda: recorder.client.state.phase == "closed", "the client to stop")
        await while_writing(written, 10)
    await asyncio.sleep(3 * FAST.backoff_cap_s)  # a reconnect would have come by now
    assert recorder.states() == ["connecting", "connected", "disconnected", "closed"]
    assert [(c.code, c.reason) for c in recorder.changes if c.state == "disconnected"] == [(4010, "banned")]
    assert [gateway.http("GET", "/health")[1]["connections"] for gateway in (first, second)] == [0, 0]
    await recorder.ended()  # the final close ended the event stream

    await asyncio.to_thread(cluster.published, [row[0] for row in cluster.query("SELECT id FROM {outbox}")])
    for channel in CHANNELS:
        got, outbox = recorder.seqs(channel), cluster.channel_seqs(channel)
        assert got and got == outbox[:len(got)], f"{channel}: got {got}, outbox {outbox}"
    await recorder.close()


async def test_presence_follows_another_user_joining_and_leaving_through_presence_diff(
        start_gateway: Any) -> None:
    """The online set changes without a ``presence.query``: the gateway's ``presence.diff``."""
    gateway: GatewayProcess = start_gateway(presence_grace_s=0.5)
    bob = Recorder(Client(gateway.ws_url, token=token("bob"), settings=FAST))
    bob.client.start()
    await bob.client.wait_open(T)
    await bob.client.subscribe("c7", timeout=T)
    await bob.client.until(lambda: bob.client.presence("c7") == {"bob"}, T)
    queried = [e for e in bob.events if e.type == "presence.state"]

    carol = Client(gateway.ws_url, token=token("carol"), settings=FAST)
    carol.start()
    await carol.wait_open(T)
    await carol.subscribe("c7", timeout=T)
    await bob.client.until(lambda: bob.client.presence("c7") == {"bob", "carol"}, T)
    await carol.close()  # a clean close: she leaves after presence_grace_s
    await bob.client.until(lambda: bob.client.presence("c7") == {"bob"}, 2 * T)

    # Carol joins in one diff and leaves in a later one (bob's own join may share the first: batched).
    diffs = [(e.payload["joins"], e.payload["leaves"]) for e in bob.events if e.type == "presence.diff"]
    assert [("carol" in joins, "carol" in leaves) for joins, leaves in diffs
            if "carol" in joins + leaves] == [(True, False), (False, True)], diffs
    assert [e for e in bob.events if e.type == "presence.state"] == queried  # no query since
    await bob.close()


async def test_subscriptions_asked_before_connecting_are_made_and_presence_is_queried(
        start_gateway: Any) -> None:
    gateway: GatewayProcess = start_gateway()
    client = Client(gateway.ws_url, token=token("bob"), settings=FAST)
    await client.subscribe("c7")  # before the first connection: remembered only
    client.start()
    await client.until(lambda: "c7" in client.state.live, T)
    assert await client.query_presence("c7", timeout=T) == {"bob"}
    with pytest.raises(ValueError, match="not subscribed"):
        await client.query_presence("c8")
    status, _ = gateway.http("POST", "/publish", {"channel": "conv:c7", "type": "message.new",
                                                  "payload": {"conversation_id": "c7", "n": 1}})
    assert status == 202
    event = await asyncio.wait_for(anext(client), T)
    while event.type != "message.new":
        event = await asyncio.wait_for(anext(client), T)
    assert event.payload == {"conversation_id": "c7", "n": 1} and event.seq is not None
    await client.close()
