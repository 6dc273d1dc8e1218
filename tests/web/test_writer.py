"""The outbound fast path (web/writer.py) over real sockets: what clients receive.

A small Tornado app registers each WebSocket in a ``SocketRegistry``; real
Tornado clients connect over loopback and read what arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tornado.httpserver import HTTPServer
from tornado.web import Application
from tornado.websocket import WebSocketClientConnection, WebSocketHandler, websocket_connect

from tornado_gw.core.commands import CloseRequested, Command
from tornado_gw.core.protocol import CloseCode
from tornado_gw.web.writer import SocketRegistry, text_frame

_ids = itertools.count(1)


class _Socket(WebSocketHandler):
    def initialize(self, registry: SocketRegistry, opened: asyncio.Queue[str]) -> None:
        self.registry, self.opened = registry, opened

    def open(self) -> None:
        conn_id = f"c{next(_ids)}"
        self.registry.add(conn_id, self)
        self.opened.put_nowait(conn_id)


class Rig:
    def __init__(self, registry: SocketRegistry, submitted: list[Command], port: int,
                 opened: asyncio.Queue[str]) -> None:
        self.registry, self.submitted, self.port, self.opened = registry, submitted, port, opened

    async def client(self) -> tuple[str, WebSocketClientConnection]:
        ws = await websocket_connect(f"ws://127.0.0.1:{self.port}/ws")
        return await asyncio.wait_for(self.opened.get(), 5), ws


@asynccontextmanager
async def rig(outbound_buffer_bytes: int = 1 << 20) -> AsyncIterator[Rig]:
    submitted: list[Command] = []
    registry = SocketRegistry(submitted.append, outbound_buffer_bytes)
    opened: asyncio.Queue[str] = asyncio.Queue()
    app = Application([("/ws", _Socket, {"registry": registry, "opened": opened})])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    server = HTTPServer(app)
    server.add_sockets([listener])
    try:
        yield Rig(registry, submitted, listener.getsockname()[1], opened)
    finally:
        server.stop()
        await server.close_all_connections()


async def messages(ws: WebSocketClientConnection, count: int) -> list[str | bytes | None]:
    return [await asyncio.wait_for(ws.read_message(), 5) for _ in range(count)]


def test_text_frame_lengths_use_the_three_header_forms() -> None:
    assert text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame(b"x" * 70_000)[:10] == b"\x81\x7f" + (70_000).to_bytes(8, "big")


def test_every_recipient_gets_every_frame_in_send_order() -> None:
    async def scenario() -> None:
        async with rig() as r:
            (a, ws_a), (b, ws_b), (c, ws_c) = [await r.client() for _ in range(3)]
            # One loop iteration: events for several sockets, joined per socket when flushed.
            r.registry.send_many([a, b], b'{"n":1}')
            r.registry.send(c, b'{"n":2}')
            r.registry.send_many([c, a], b'{"n":3}')
            big = b'{"n":4,"pad":"' + b"x" * 70_000 + b'"}'
            r.registry.send_many([a, b, c], big)
            assert await messages(ws_a, 3) == ['{"n":1}', '{"n":3}', big.decode()]
            assert await messages(ws_b, 2) == ['{"n":1}', big.decode()]
            assert await messages(ws_c, 3) == ['{"n":2}', '{"n":3}', big.decode()]
            # A later iteration, after the first flush.
            r.registry.send_many([b, a], b'{"n":5}')
            assert await messages(ws_a, 1) == ['{"n":5}']
            assert await messages(ws_b, 1) == ['{"n":5}']

    asyncio.run(scenario())


def test_frames_sent_before_a_close_arrive_before_it() -> None:
    async def scenario() -> None:
        async with rig() as r:
            conn_id, ws = await r.client()
            r.registry.send(conn_id, b'{"last":"words"}')
            r.registry.close(conn_id, 4001, "bye")
            assert await messages(ws, 2) == ['{"last":"words"}', None]
            assert (ws.close_code, ws.close_reason) == (4001, "bye")
            r.registry.send(conn_id, b'{"after":"close"}')  # dropped quietly, nothing raised
            await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_unknown_and_removed_connections_are_skipped_without_disturbing_others() -> None:
    async def scenario() -> None:
        async with rig() as r:
            (gone, ws_gone), (kept, ws_kept) = [await r.client() for _ in range(2)]
            r.registry.remove(gone)
            r.registry.send_many(["nobody", gone, kept], b'{"n":1}')
            assert await messages(ws_kept, 1) == ['{"n":1}']
            ws_gone.close()

    asyncio.run(scenario())


def test_a_client_that_stops_reading_is_reported_as_a_slow_consumer() -> None:
    async def scenario() -> None:
        async with rig(outbound_buffer_bytes=64 * 1024) as r:
            stalled = await raw_client(r.port)  # upgrades, then never reads again
            slow = await asyncio.wait_for(r.opened.get(), 5)
            fast, ws_fast = await r.client()
            chunk = b'{"pad":"' + b"x" * 16_000 + b'"}'
            for _ in range(1_000):
                if r.submitted:
                    break
                r.registry.send_many([slow, fast], chunk)
                assert await messages(ws_fast, 1) == [chunk.decode()]  # the reader keeps up
            assert r.submitted, "the slow consumer was never reported"
            report = r.submitted[0]
            assert isinstance(report, CloseRequested)
            assert (report.conn_id, report.code) == (slow, CloseCode.SLOW_CONSUMER)
            stalled.close()

    asyncio.run(scenario())


def test_a_socket_whose_kernel_buffer_is_full_does_not_stop_the_rest_of_the_batch() -> None:
    async def scenario() -> None:
        async with rig(outbound_buffer_bytes=16 * 1024) as r:
            stalled = await raw_client(r.port)
            full = await asyncio.wait_for(r.opened.get(), 5)
            healthy, ws = await r.client()
            fill_kernel_buffers(r.registry, full)
            # One loop iteration: the full socket's send raises BlockingIOError, its frame
            # goes over the cap; the other socket's frame must still go out.
            r.registry.send(full, b'{"pad":"' + b"x" * 20_000 + b'"}')
            r.registry.send(healthy, b'{"n":1}')
            assert await messages(ws, 1) == ['{"n":1}']
            assert [(cmd.conn_id, cmd.code) for cmd in r.submitted
                    if isinstance(cmd, CloseRequested)] == [(full, CloseCode.SLOW_CONSUMER)]
            stalled.close()

    asyncio.run(scenario())


def test_a_replay_larger_than_the_cap_reaches_a_reader_whole_and_in_order() -> None:
    async def scenario() -> None:
        async with rig(outbound_buffer_bytes=16 * 1024) as r:
            conn_id, ws = await r.client()
            replay = [b'{"seq":%d,"pad":"%s"}' % (n, b"x" * 1_200) for n in range(200)]  # ~250 KB
            r.registry.send(conn_id, b'{"reply":1}')
            r.registry.send_paced(conn_id, replay)
            r.registry.send(conn_id, b'{"done":1}')  # queued behind the replay
            got = await messages(ws, len(replay) + 2)
            assert got == ['{"reply":1}', *(frame.decode() for frame in replay), '{"done":1}']
            assert r.submitted == []
            r.registry.send(conn_id, b'{"live":1}')  # after the replay: straight to the stream again
            assert await messages(ws, 1) == ['{"live":1}']

    asyncio.run(scenario())


def test_the_cap_guards_the_live_frames_behind_a_replay_of_a_reader_that_stopped() -> None:
    async def scenario() -> None:
        async with rig(outbound_buffer_bytes=16 * 1024) as r:
            stalled = await raw_client(r.port)
            conn_id = await asyncio.wait_for(r.opened.get(), 5)
            fill_kernel_buffers(r.registry, conn_id)
            r.registry.send_paced(conn_id, [b'{"pad":"' + b"x" * 4_000 + b'"}'] * 100)  # 400 KB
            await asyncio.sleep(0.1)
            assert r.submitted == []  # the replay alone never trips the cap
            for _ in range(5):
                r.registry.send(conn_id, b'{"pad":"' + b"y" * 4_000 + b'"}')
                await asyncio.sleep(0)
            assert [(cmd.conn_id, cmd.code) for cmd in r.submitted
                    if isinstance(cmd, CloseRequested)] == [(conn_id, CloseCode.SLOW_CONSUMER)]
            stalled.close()

    asyncio.run(scenario())


def fill_kernel_buffers(registry: SocketRegistry, conn_id: str) -> None:
    """Fill a stalled connection's kernel buffers behind the writer's back: its stream has
    nothing queued, and the next send raises BlockingIOError."""
    protocol = registry.sockets[conn_id].ws_connection
    assert protocol is not None and protocol.stream is not None
    with contextlib.suppress(BlockingIOError):
        for _ in range(10_000):
            protocol.stream.socket.send(b"\0" * 65_536)


async def raw_client(port: int) -> socket.socket:
    """A WebSocket client with a small receive buffer that stops reading after the upgrade."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += await loop.sock_recv(sock, 1024)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock
