"""Resume and replay on one instance from the in-process log (CONTRACT §4)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.e2e.harness import Client, GatewayProcess, publish

pytestmark = pytest.mark.e2e


def seqs(frames: list[dict]) -> list[int]:
    return [f["seq"] for f in frames if "seq" in f]


async def test_resume_replays_exactly_the_missed_events_then_live(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    session = (await client.auth("alice"))["session_id"]
    await client.subscribe("c1", "c2")
    first = [publish(gateway, "c1", 0), publish(gateway, "c2", 1)]
    got = [await client.expect("message.new") for _ in first]
    last_seq = max(seqs(got))
    await client.close()
    missed = [publish(gateway, "c1" if i % 2 else "c2", i) for i in range(2, 12)]
    publish(gateway, "other", 99)  # not subscribed: never replayed

    client = await Client.connect(gateway)
    auth = await client.auth("alice", session_id=session, last_seq=last_seq)
    assert auth["resumed"] is True and auth["session_id"] == session
    assert auth["conversation_ids"] == ["c1", "c2"]
    replayed = [await client.next() for _ in missed]
    assert seqs(replayed) == missed
    done = await client.next()
    assert done == {"type": "replay.done", "payload": {"count": len(missed), "recovered": True}}
    live = publish(gateway, "c1", 100)
    assert (await client.next())["seq"] == live


async def test_resume_while_events_keep_coming_has_no_gap_and_no_duplicate(
        gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    session = (await client.auth("alice"))["session_id"]
    await client.subscribe("c1")
    stop = asyncio.Event()

    async def keep_publishing() -> list[int]:
        sent = []
        while not stop.is_set():
            sent.append(await asyncio.to_thread(publish, gateway, "c1", len(sent)))
        return sent

    publisher = asyncio.ensure_future(keep_publishing())
    seen = seqs([await client.expect("message.new") for _ in range(5)])
    await client.close()
    await asyncio.sleep(0.1)
    client = await Client.connect(gateway)
    await client.auth("alice", session_id=session, last_seq=seen[-1])
    after = []
    while len(after) < 20:
        frame = await client.next()
        if frame["type"] == "replay.done":
            assert frame["payload"]["recovered"] is True
        elif frame["type"] == "message.new":
            after.append(frame["seq"])
    stop.set()
    sent = await publisher
    received = seen + after
    assert received == sorted(set(received)), "duplicates or disorder"
    assert received == sent[:len(received)], "a gap"


async def test_unknown_or_foreign_session_gets_a_new_one(gateway: GatewayProcess) -> None:
    alice = await Client.connect(gateway)
    alice_session = (await alice.auth("alice"))["session_id"]
    await alice.subscribe("secret")
    await alice.close()
    mallory = await Client.connect(gateway)
    auth = await mallory.auth("mallory", session_id=alice_session)
    assert auth["resumed"] is False and auth["session_id"] != alice_session and auth["conversation_ids"] == []
    other = await Client.connect(gateway)
    auth = await other.auth("bob", session_id="no-such-session")
    assert auth["resumed"] is False


async def test_session_expires_after_the_resume_window(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(resume_window_s=0.5)
    client = await Client.connect(gateway)
    session = (await client.auth("alice"))["session_id"]
    await client.subscribe("c1")
    await client.close()
    await asyncio.sleep(1.0)
    client = await Client.connect(gateway)
    auth = await client.auth("alice", session_id=session)
    assert auth["resumed"] is False and auth["conversation_ids"] == []


async def test_subscribe_with_last_seq_recovers_without_a_session(gateway: GatewayProcess) -> None:
    sent = [publish(gateway, "c1", i) for i in range(5)]
    client = await Client.connect(gateway)
    await client.auth("alice")
    await client.send("subscribe", {"conversation_ids": ["c1"], "last_seq": sent[1]})
    assert (await client.next())["type"] == "subscribed"
    assert seqs([await client.next() for _ in sent[2:]]) == sent[2:]
    assert (await client.next())["payload"] == {"count": 3, "recovered": True}


async def test_replay_past_the_limit_says_not_recovered(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(replay_max_events=3)
    sent = [publish(gateway, "c1", i) for i in range(5)]
    client = await Client.connect(gateway)
    await client.auth("alice")
    await client.send("subscribe", {"conversation_ids": ["c1"], "last_seq": 0})
    assert (await client.next())["type"] == "subscribed"
    assert await client.next() == {"type": "replay.done", "payload": {"count": 0, "recovered": False}}
    live = publish(gateway, "c1", 99)
    assert live == sent[-1] + 1
    assert (await client.expect("message.new"))["seq"] == live


async def test_replay_of_a_trimmed_log_says_not_recovered(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(memory_log_events=3)
    for i in range(6):
        publish(gateway, "c1", i)
    client = await Client.connect(gateway)
    await client.auth("alice")
    await client.send("subscribe", {"conversation_ids": ["c1"], "last_seq": 1})
    assert (await client.next())["type"] == "subscribed"
    assert (await client.next())["payload"] == {"count": 0, "recovered": False}
