"""Close codes and limits of CONTRACT §3 as clients and operators observe them."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import ujson
import websockets

from tests.e2e.harness import Client, GatewayProcess, T, async_wait_until, joined, token, wait_until

pytestmark = pytest.mark.e2e


def _padded_ping(size: int) -> str:
    """A valid ``ping`` frame of exactly ``size`` bytes (an unknown field is ignored)."""
    frame = '{"type":"ping","pad":"' + "x" * (size - 24) + '"}'
    assert len(frame) == size
    return frame


async def test_binary_frame_closes_1003(gateway: GatewayProcess) -> None:
    client = await joined(gateway, "alice")
    await client.send_raw(b'{"type": "ping"}')
    assert (await client.closed())[0] == 1003
    assert gateway.metric("gateway_closes_total", code="1003") == 1


async def test_frame_over_8192_bytes_closes_1009_and_smaller_ones_are_served(gateway: GatewayProcess) -> None:
    client = await joined(gateway, "alice")
    for size in (8000, 8192):
        await client.send_raw(_padded_ping(size))
        assert (await client.next())["type"] == "pong", size
    await client.send_raw(_padded_ping(8193))
    assert (await client.closed())[0] == 1009


async def test_metrics_count_the_closes_tornado_sends_itself(gateway: GatewayProcess) -> None:
    """1009 (too big) and 1007 (invalid UTF-8) are decided below the reducer; operators count them too."""
    too_big = await joined(gateway, "alice")
    await too_big.send_raw(_padded_ping(8193))
    not_utf8 = await joined(gateway, "bob")
    await not_utf8.ws.send(b'{"type": "ping", "x": "\xff"}', text=True)
    assert ((await too_big.closed())[0], (await not_utf8.closed())[0]) == (1009, 1007)
    await async_wait_until(lambda: gateway.http("GET", "/health")[1]["connections"] == 0, "both to close")
    counted = {code: gateway.metric("gateway_closes_total", code=code) for code in ("1009", "1007")}
    assert counted == {"1009": 1, "1007": 1}


async def _closes_after(client: Client, code: int, at_least_s: float, since: float) -> None:
    assert (await client.closed())[0] == code
    assert time.monotonic() - since >= at_least_s


async def test_no_auth_in_time_closes_4002_even_when_pinging(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(auth_timeout_s=0.5)
    opened = time.monotonic()
    client = await Client.connect(gateway)
    await client.send("ping")
    assert (await client.next())["type"] == "pong"
    await _closes_after(client, 4002, 0.45, opened)
    assert gateway.metric("gateway_closes_total", code="4002") == 1


@pytest.mark.slow
async def test_auth_timeout_default_is_10_s(gateway: GatewayProcess) -> None:
    opened = time.monotonic()
    client = await Client.connect(gateway)
    assert (await client.closed(timeout=15.0))[0] == 4002
    assert 9.5 <= time.monotonic() - opened <= 13.0


async def test_websocket_pings_do_not_keep_an_idle_connection(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(idle_timeout_s=0.5)
    client = await joined(gateway, "alice")
    since = time.monotonic()

    async def control_pings() -> None:
        while True:
            await client.ws.ping()  # answered by the gateway with a pong control frame
            await asyncio.sleep(0.1)

    pinger = asyncio.ensure_future(control_pings())
    try:
        await _closes_after(client, 4004, 0.45, since)
    finally:
        pinger.cancel()


async def test_application_pings_keep_a_connection_until_they_stop(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(idle_timeout_s=0.5)
    client = await joined(gateway, "alice")
    busy_until = time.monotonic() + 1.2
    while True:
        last_frame = time.monotonic()
        await client.send("ping")
        assert (await client.expect("pong"))["type"] == "pong"
        if last_frame > busy_until:
            break
        await asyncio.sleep(0.15)
    await _closes_after(client, 4004, 0.45, last_frame)


async def test_flooding_client_is_warned_then_closed_4008(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(rate_limit_burst=5, rate_limit_per_s=1)
    client = await Client.connect(gateway)
    for _ in range(8):
        await client.send("ping")
    assert (await client.closed())[0] == 4008
    assert [f["type"] for f in client.received] == ["pong"] * 5 + ["error"]
    error = client.received[-1]["payload"]
    assert error["code"] == "rate_limited" and error["message"]
    assert gateway.metric("gateway_closes_total", code="4008") == 1


async def test_allowed_origins_refuse_other_origins_at_the_upgrade(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(allowed_origins="https://app.example")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.connect(gateway, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    allowed = await Client.connect(gateway, origin="https://app.example")
    await allowed.auth("alice")
    await allowed.close()


async def test_production_without_allowed_origins_refuses_cross_origin(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MODE="production", authorization="none")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.connect(gateway, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    same_origin = await Client.connect(gateway, origin=f"http://127.0.0.1:{gateway.port}")
    await same_origin.auth("alice")
    await same_origin.close()


class RawWebSocket:
    """A WebSocket client at the byte level that reads only when told to: a slow consumer.

    The harness's ``Client`` always reads in the background; this one leaves the
    gateway's frames in a small kernel receive buffer until ``close_code`` drains them.
    """

    def __init__(self, port: int, receive_buffer: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(T)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.pending = b""
        while b"\r\n\r\n" not in self.pending:
            self._fill()
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, kind: str, payload: dict[str, object]) -> None:
        data = ujson.dumps({"type": kind, "payload": payload}).encode()
        assert len(data) <= 0xFFFF
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))
        self.sock.sendall(struct.pack("!BBH", 0x81, 0x80 | 126, len(data)) + mask + masked)

    def frame(self) -> tuple[int, bytes]:
        """The next frame from the gateway: (opcode, payload)."""
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
        return first & 0x0F, self._take(length)

    def wait_for(self, kind: str) -> None:
        while True:
            opcode, data = self.frame()
            if opcode == 0x1 and ujson.loads(data)["type"] == kind:
                return

    def close_code(self) -> int:
        """Read everything the gateway queued; the code of its close frame."""
        while True:
            opcode, data = self.frame()
            if opcode == 0x8:
                self.sock.close()
                return int(struct.unpack("!H", data[:2])[0])

    def _take(self, size: int) -> bytes:
        while len(self.pending) < size:
            self._fill()
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("the gateway closed the TCP connection without a close frame")
        self.pending += chunk


def _rss_mb(gateway: GatewayProcess) -> float:
    assert gateway.proc is not None
    for line in Path(f"/proc/{gateway.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def _publish_many(port: int, count: int, blob: str) -> None:
    """POST /publish ``count`` times over one keep-alive connection (run in a thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=T)
    try:
        for n in range(count):
            body = ujson.dumps({"channel": "conv:flood", "type": "bulk", "payload": {"n": n, "blob": blob}})
            connection.request("POST", "/publish", body.encode(), {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 202, response.read()
            response.read()
    finally:
        connection.close()


def _close_code_once_dropped(gateway: GatewayProcess, slow: RawWebSocket) -> int:
    """Once /metrics counts a 4009, read what the gateway had queued: its close frame ends it."""
    wait_until(lambda: gateway.metric("gateway_closes_total", code="4009") == 1,
               "the slow consumer to be closed with 4009", timeout=T * 6)
    return slow.close_code()


async def _read_flood(client: Client, count: int) -> list[tuple[int, int]]:
    got = []
    while len(got) < count:
        frame = await client.expect("bulk")
        got.append((frame["seq"], frame["payload"]["n"]))
    client.received.clear()  # 32 KB frames: keep the test process small
    return got


async def test_client_that_never_reads_is_closed_4009_while_a_reader_gets_everything(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(memory_log_events=64)  # the replay log must not hide what buffers hold
    reader = await joined(gateway, "reader", "flood")
    slow = RawWebSocket(gateway.port, receive_buffer=4096)
    slow.send("auth", {"token": token("slow")})
    slow.send("subscribe", {"conversation_ids": ["flood"]})
    slow.wait_for("subscribed")
    rss_before = _rss_mb(gateway)
    count, blob = 1200, "x" * 32_000  # ~38 MB through the default 1 MiB outbound cap
    _, got, close_code = await asyncio.wait_for(asyncio.gather(
        asyncio.to_thread(_publish_many, gateway.port, count, blob), _read_flood(reader, count),
        asyncio.to_thread(_close_code_once_dropped, gateway, slow)), T * 12)
    assert close_code == 4009
    assert [n for _, n in got] == list(range(count))
    seqs = [seq for seq, _ in got]
    assert seqs == sorted(set(seqs))  # strictly increasing
    # without the cap the gateway holds every unread frame: ~37 MB more here; with it, a few MB
    rss_after = _rss_mb(gateway)
    assert rss_after - rss_before < 16 and rss_after < 200, (rss_before, rss_after)
    await async_wait_until(lambda: gateway.http("GET", "/health")[1]["connections"] == 1,
                           "/health to drop the slow consumer")
    await reader.close()
