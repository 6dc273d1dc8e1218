"""A connection after the gateway dropped its handshake state (issue 5: idle memory).

The handler forgets the HTTP request after the upgrade, and frames are read by a
callback, not by Tornado's coroutine loop: the upgrade is still logged, frames that
arrive in pieces still parse, pings, closes and many frames in a row still work.
"""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
import ujson

from tests.e2e.harness import Client, GatewayProcess, async_wait_until, raw_upgrade, token

pytestmark = pytest.mark.e2e


def _masked_text(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 0x10000
    header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_the_upgrade_is_logged_and_the_connection_closes_with_the_clients_code(
        gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    await client.auth("alice")
    await client.ws.close(code=4000, reason="bye")
    assert client.ws.close_code == 4000  # the gateway echoed the code (RFC 6455 §5.5.1)
    await async_wait_until(lambda: gateway.metric("gateway_connections") == 0, "the connection to be gone")
    logs = gateway.logs()
    assert "101 GET /ws" in logs
    assert "uncaught exception" not in logs.lower() and "Traceback" not in logs


async def test_a_frame_sent_in_pieces_is_parsed(gateway: GatewayProcess) -> None:
    reader, writer = await raw_upgrade(gateway)
    frame = _masked_text(ujson.dumps({"type": "auth", "payload": {"token": token("alice")}}))
    for piece in (frame[:1], frame[1:3], frame[3:9], frame[9:40], frame[40:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.05)
    header = await reader.readexactly(2)
    size = header[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    reply = ujson.loads(await reader.readexactly(size))
    assert reply["type"] == "auth.success" and reply["payload"]["user_id"] == "alice"
    writer.close()


async def test_pings_and_many_frames_in_a_row_are_answered(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    await client.auth("alice")
    await asyncio.wait_for(await client.ws.ping(b"hello"), 5)
    for _ in range(50):
        await client.send("ping")
    for _ in range(50):
        await client.expect("pong")
    await client.close()
