"""Guards for the Tornado internals that web/ws_handler.py relies on (issue 9 §12).

The idle-memory figure (docs/performance.md) rests on four uses of Tornado's
private API. Measured at 2,000 idle connections (auth + 5 subscriptions each,
one run per variant on 2026-12-04), switching each off cost per connection:
the callback read loop (``_receive_frame_loop``/``_read_bytes``) ~12 KB, dropping
the handshake state (deleting ``request`` & co.) ~7 KB, list-backed write queues
(``_write_buffer._buffers``, ``_write_futures``) ~1.8 KB, one shared
``_WebSocketParams`` ~0.45 KB (and the subclassed protocol needs that class to be
built at all). All are kept; each test here fails loudly, naming the internal,
when a Tornado release changes what it relies on. The gateway runs in process,
with the embedded default, and real clients connect over loopback.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import tornado.iostream
import tornado.websocket
import websockets
from tornado.websocket import WebSocketProtocol13

from tests.support.redis import run
from tornado_gw.adapters.wiring import build_wiring
from tornado_gw.server import GatewayServer
from tornado_gw.settings import Settings
from tornado_gw.web import ws_handler
from tornado_gw.web.auth import mint_token

SECRET = "internals-test-secret-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def gateway(**overrides: Any) -> AsyncIterator[GatewayServer]:
    settings = Settings(port=_free_port(), jwt_secret=SECRET, tick_interval_s=0.05, **overrides)
    server = GatewayServer(settings, await build_wiring(settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(1.0)


async def client(server: GatewayServer, user: str = "alice") -> websockets.ClientConnection:
    ws = await websockets.connect(f"ws://127.0.0.1:{server.settings.port}/ws")
    token = mint_token(SECRET, user, 3600, time.time())
    await ws.send(json.dumps({"type": "auth", "payload": {"token": token}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "auth.success"
    return ws


def _handlers(server: GatewayServer) -> list[ws_handler.GatewaySocket]:
    return list(server.registry.sockets.values())  # type: ignore[arg-type]


def test_websocket_params_is_the_private_class_tornado_builds_its_protocol_with() -> None:
    """``tornado.websocket._WebSocketParams``: one instance shared by every connection."""
    fields = set(inspect.signature(tornado.websocket._WebSocketParams).parameters)
    assert {"ping_interval", "ping_timeout", "max_message_size", "compression_options"} <= fields, (
        "tornado.websocket._WebSocketParams changed: ws_handler._shared_params builds it")
    assert "params" in inspect.signature(WebSocketProtocol13.__init__).parameters

    async def scenario() -> None:
        async with gateway(max_frame_bytes=400) as server:
            first, second = await client(server), await client(server, "bob")
            protocols = [handler.ws_connection for handler in _handlers(server)]
            assert protocols[0] is not None and protocols[1] is not None
            assert protocols[0].params is protocols[1].params  # shared, and Tornado reads it:
            await first.send(json.dumps({"type": "ping", "pad": "x" * 600}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(first.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            await second.close()

    run(scenario())


def test_the_read_loop_tornado_awaits_is_the_one_overridden() -> None:
    """``_receive_frame_loop`` (awaited at the end of the handshake) and ``_read_bytes``
    (the first read of ``_receive_frame`` is the 2-byte header)."""
    accept = inspect.getsource(WebSocketProtocol13._accept_connection)
    assert "self._receive_frame_loop()" in accept, "Tornado no longer reads frames in _receive_frame_loop"
    receive = inspect.getsource(WebSocketProtocol13._receive_frame)
    first_read = re.search(r"self\._read_bytes\((\w+)\)", receive)
    assert first_read is not None and first_read.group(1) == "2", (
        "WebSocketProtocol13._receive_frame no longer starts with self._read_bytes(2)")
    assert "self._wire_bytes_in += n" in inspect.getsource(WebSocketProtocol13._read_bytes)

    async def scenario() -> None:
        async with gateway() as server:
            before = len(asyncio.all_tasks())
            clients = [await client(server, f"u{n}") for n in range(10)]
            await asyncio.sleep(0.2)
            # Idle connections wait on a read Future, not in a Task each (the handshake's
            # coroutine chain would otherwise stay suspended for the connection's life).
            assert len(asyncio.all_tasks()) - before < 10
            for ws in clients:  # and frames still flow both ways, many in a row
                for _ in range(20):
                    await ws.send('{"type": "ping"}')
                for _ in range(20):
                    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
                await ws.close()

    run(scenario())


def test_write_queues_use_only_what_the_list_replacement_offers() -> None:
    """``IOStream._write_buffer._buffers`` and ``IOStream._write_futures`` become ``_Fifo``
    lists: Tornado may call only append, popleft and clear on them (and index, iterate)."""
    source = inspect.getsource(tornado.iostream)
    assert "self._write_buffer = _StreamBuffer()" in source and "self._buffers" in source
    called = set(re.findall(r"(?:self\._buffers|\bbuffers|self\._write_futures)\.(\w+)\(", source))
    assert called <= {"append", "popleft", "clear"}, f"IOStream now calls {called} on its write queues"

    async def scenario() -> None:
        async with gateway() as server:
            ws = await client(server)
            [handler] = _handlers(server)
            assert handler.ws_connection is not None and handler.ws_connection.stream is not None
            stream = handler.ws_connection.stream
            assert type(stream._write_buffer._buffers) is ws_handler._Fifo
            assert type(stream._write_futures) is ws_handler._Fifo
            await ws.close()

    run(scenario())


def test_a_handler_without_its_request_lives_a_whole_connection() -> None:
    """``_KEPT_AFTER_UPGRADE``: everything else (``request`` first) is deleted after the
    upgrade; Tornado must not read it again, whichever side closes."""

    async def scenario() -> None:
        async with gateway() as server:
            ws = await client(server)
            [handler] = _handlers(server)
            assert "request" not in vars(handler)
            assert set(vars(handler)) <= ws_handler._KEPT_AFTER_UPGRADE
            await ws.ping()
            await ws.send('{"type": "subscribe", "payload": {"conversation_ids": ["c1"]}}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
            await ws.close(code=4000, reason="bye")
            assert ws.close_code == 4000
            other = await client(server, "bob")
            await other.send(b"binary")  # the server closes this one
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(other.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
            await asyncio.sleep(0.1)
            assert server.registry.sockets == {}  # on_close ran for both

    run(scenario())


def test_invalid_utf8_is_caught_in_handle_message_and_closed_1007() -> None:
    """``_handle_message(opcode, data)`` and ``_frame_compressed``."""
    parameters = list(inspect.signature(WebSocketProtocol13._handle_message).parameters)
    assert parameters == ["self", "opcode", "data"], "WebSocketProtocol13._handle_message changed"

    async def scenario() -> None:
        async with gateway() as server:
            ws = await client(server)
            await ws.send(b'{"type": "ping", "x": "\xff"}', text=True)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007

    run(scenario())


def test_the_protocol_keeps_few_enough_attributes_to_share_its_dict_keys() -> None:
    """``_Protocol`` adds no attribute: past 29 (CPython's shared-keys limit is 30) every
    protocol object's dict would grow by ~1.3 KB. Fails when Tornado adds attributes."""

    async def scenario() -> None:
        async with gateway() as server:
            ws = await client(server)
            [handler] = _handlers(server)
            assert len(vars(handler.ws_connection)) <= 29, sorted(vars(handler.ws_connection))
            await ws.close()

    run(scenario())
