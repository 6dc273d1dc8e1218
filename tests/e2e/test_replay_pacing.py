"""A replay is written at the pace the client reads it (CONTRACT §4 v2).

Over loopback the kernel swallows a whole replay at once; a real network
does not. The client socket here gets the MSS of an Ethernet path (1448,
set with TCP_MAXSEG before connecting), so the kernel takes only part of a
large replay and the gateway has to pace the rest.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import websockets

from tests.e2e.harness import Client, GatewayProcess, T

pytestmark = pytest.mark.e2e
EVENTS = 1_000
PADDING = "x" * 1_150  # ~1.2 KB per event frame


def publish_padded(gateway: GatewayProcess, conversation_id: str, n: int) -> int:
    event = {"channel": f"conv:{conversation_id}", "type": "message.new",
             "payload": {"conversation_id": conversation_id, "n": n, "text": PADDING}}
    status, body = gateway.http("POST", "/publish", event)
    assert status == 202, body
    return int(body["seq"])


async def slow_client(gateway: GatewayProcess) -> Client:
    """A client behind a 1448-byte MSS that lets at most one frame wait unread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1448)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
    ws = await websockets.connect(gateway.ws_url, sock=sock, open_timeout=T, max_size=None, max_queue=1)
    return Client(ws)


async def test_a_replay_of_a_thousand_large_events_reaches_a_slow_reader_whole(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway()
    client = await Client.connect(gateway)
    session = (await client.auth("alice"))["session_id"]
    await client.subscribe("big")
    await client.close()
    missed = [await asyncio.to_thread(publish_padded, gateway, "big", i) for i in range(EVENTS)]

    client = await slow_client(gateway)
    auth = await client.auth("alice", session_id=session, last_seq=0)
    assert auth["resumed"] is True
    await asyncio.sleep(1.0)  # the gateway has tried to write everything by now
    replayed = []
    while len(replayed) < len(missed):
        frame = await client.next()
        if frame["type"] != "presence.diff":  # its own join may be announced meanwhile
            replayed.append(frame)
        await asyncio.sleep(0.001)  # the reader is slower than the gateway
    assert [frame.get("seq") for frame in replayed] == missed
    assert await client.expect("replay.done") == {"type": "replay.done",
                                                  "payload": {"count": EVENTS, "recovered": True}}
    # The connection is still open and live.
    live = await asyncio.to_thread(publish_padded, gateway, "big", EVENTS)
    assert (await client.expect("message.new"))["seq"] == live
