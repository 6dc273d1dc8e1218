"""Load generator worker (picows + uvloop): opens connections, receives, measures latency.

Run by :mod:`bench.fleet` as ``python -m bench.worker CONFIG.json``. The config holds
``url``, ``protocol`` (``gw`` or ``sio``), ``clients`` ([token, [conversation ids]]),
``source_addrs`` (127.0.0.x addresses, spread so 19k connections never run out of
ephemeral ports), ``latency_path`` and ``connect_timeout_s``.

Stdio protocol, one JSON object per line (the Node worker speaks the same):
  -> {"event": "ready", "ok": N, "failed": M, "error": "first error or empty"}
  <- "count"  -> {"event": "count", "received": N, "warm": W, "other": O, "dropped": D}
  <- "flush"  -> latencies since the last flush (int64 µs, little-endian) written to
               latency_path, then {"event": "flushed", ...same counters}
  <- "stop"   -> connections closed, then {"event": "done", ...same counters}
The receive path is kept lean: a byte search for ``"sent_ns":`` and no JSON decoding.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from array import array
from time import time_ns
from typing import Any

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

_STAMP = b'"sent_ns":'
_WARM = b'"warm":'
_TEXT = WSMsgType.TEXT


class Stats:
    """Counters shared by every connection of this worker."""

    def __init__(self) -> None:
        self.received = 0
        self.warm = 0
        self.other = 0  # frames that are neither measured nor warm-up, e.g. presence.diff
        self.dropped = 0
        self.stopping = False
        self.latencies_us = array("q")

    def line(self, event: str) -> dict[str, Any]:
        return {"event": event, "received": self.received, "warm": self.warm, "other": self.other,
                "dropped": self.dropped}


class Client(WSListener):  # type: ignore[misc]
    """One connection: handshake state machine, then the measured receive path."""

    def __init__(self, stats: Stats, protocol: str, token: str, conversations: list[str]) -> None:
        super().__init__()
        self.stats = stats
        self.sio = protocol == "sio"
        self.token = token
        self.conversations = conversations
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if not self.sio:  # Socket.IO speaks first (engine.io "open" packet)
            self._send({"type": "auth", "payload": {"token": self.token}})

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not _TEXT:
            return
        payload = frame.get_payload_as_bytes()
        index = payload.find(_STAMP)
        if index >= 0:
            index += 10
            if payload[index] == 32:  # a space after the colon (json.dumps default separators)
                index += 1
            self.stats.latencies_us.append((time_ns() - int(payload[index:index + 19])) // 1000)
            self.stats.received += 1
        elif payload.find(_WARM) >= 0:
            self.stats.warm += 1
        elif self.sio and payload == b"2":  # engine.io ping -> pong
            self._send_text("3")
        elif self.ready.done():  # presence and the like: counted, never decoded
            self.stats.other += 1
        elif self.sio:
            self._on_sio_control(payload)
        else:
            self._on_gw_control(json.loads(payload))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))
        elif not self.stats.stopping:
            self.stats.dropped += 1

    def _send(self, frame: dict[str, Any]) -> None:
        self._send_text(json.dumps(frame, separators=(",", ":")))

    def _send_text(self, text: str) -> None:
        assert self.transport is not None
        self.transport.send(_TEXT, text.encode())

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))

    def _on_gw_control(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "auth.success":
            self._send({"type": "subscribe", "payload": {"conversation_ids": self.conversations}})
        elif kind == "subscribed" and not self.ready.done():
            self.ready.set_result(None)
        elif kind in ("auth.error", "error"):
            self._fail(f"{kind}: {frame.get('payload')}")

    def _on_sio_control(self, payload: bytes) -> None:
        if payload.startswith(b"0"):  # engine.io open -> socket.io CONNECT with auth
            self._send_text("40" + json.dumps({"token": self.token}))
        elif payload.startswith(b"40"):  # CONNECT ok
            body = json.dumps(["subscribe", {"conversation_ids": self.conversations}])
            self._send_text("42" + body)
        elif payload.startswith(b'42["subscribed"') and not self.ready.done():
            self.ready.set_result(None)
        elif payload.startswith(b"44"):  # CONNECT_ERROR
            self._fail(payload.decode(errors="replace"))


async def _open(config: dict[str, Any], stats: Stats, index: int, spec: list[Any],
                gate: asyncio.Semaphore, clients: list[Client]) -> None:
    """Connect, authenticate and subscribe one client, at most ``gate`` at a time."""
    token, conversations = spec
    addrs = config["source_addrs"]
    async with gate:
        _, client = await ws_connect(lambda: Client(stats, config["protocol"], token, conversations),
                                     config["url"], websocket_handshake_timeout=10,
                                     local_addr=(addrs[index % len(addrs)], 0))
        clients.append(client)
        await asyncio.wait_for(client.ready, config["connect_timeout_s"])


def _emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def _serve_commands(stats: Stats, clients: list[Client], latency_path: str) -> None:
    """Answer ``count`` and ``stop`` from stdin until stopped or stdin closes."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while command := (await reader.readline()).decode().strip():
        if command == "count":
            _emit(stats.line("count"))
        elif command == "flush":
            _flush(stats, latency_path)
            _emit(stats.line("flushed"))
        elif command == "stop":
            break
    stats.stopping = True
    for client in clients:
        if client.transport is not None:
            client.transport.send_close()
            client.transport.disconnect()
    _emit(stats.line("done"))


def _flush(stats: Stats, latency_path: str) -> None:
    """Hand the latencies gathered since the last flush to the fleet, then forget them."""
    with open(latency_path, "wb") as fh:
        stats.latencies_us.tofile(fh)
    stats.latencies_us = array("q")


async def main(config_path: str) -> None:
    with open(config_path) as fh:
        config = json.load(fh)
    stats, clients = Stats(), []
    gate = asyncio.Semaphore(config.get("connect_concurrency", 200))
    results = await asyncio.gather(*(_open(config, stats, i, spec, gate, clients)
                                     for i, spec in enumerate(config["clients"])), return_exceptions=True)
    errors = [repr(result) for result in results if isinstance(result, BaseException)]
    gc.collect()
    gc.freeze()  # the receive path allocates no cycles; keep the collector out of the figures
    _emit({"event": "ready", "ok": len(results) - len(errors), "failed": len(errors),
           "error": errors[0] if errors else ""})
    await _serve_commands(stats, clients, config["latency_path"])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    uvloop.run(main(sys.argv[1]))
