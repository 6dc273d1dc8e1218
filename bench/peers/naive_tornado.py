"""Naive Tornado gateway: the peer written the way a typical developer writes it.

Deliberately plain (do not optimise it; it is the baseline): a class-level registry of
handlers as in Tornado's chat demo, ``json.loads`` of each Redis message, then
``json.dumps`` + ``write_message`` per recipient, and a ``redis.asyncio`` PubSub that
pattern-subscribes ``<prefix>conv:*``. It speaks the tornado_gw protocol subset the bench
needs (CONTRACT §3): ``auth`` -> ``auth.success``, ``subscribe`` -> ``subscribed``,
``ping`` -> ``pong``.

Usage: python naive_tornado.py --port=P   env: REDIS_HOST, JWT_SECRET, WSGATEWAY_PREFIX
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections import defaultdict
from typing import Any

import jwt
import redis.asyncio as aioredis
import tornado.web
import tornado.websocket
from tornado.options import define, options, parse_command_line

define("port", default=8083, type=int, help="listen port")

PREFIX = os.environ.get("WSGATEWAY_PREFIX", "ws:")
SECRET = os.environ.get("JWT_SECRET", "dev-secret")


class GatewayHandler(tornado.websocket.WebSocketHandler):
    """One client connection; the class attributes are the whole server state."""

    clients: set[GatewayHandler] = set()
    rooms: dict[str, set[GatewayHandler]] = defaultdict(set)

    def open(self) -> None:
        self.user_id: str | None = None
        self.conversations: set[str] = set()
        GatewayHandler.clients.add(self)

    def on_close(self) -> None:
        GatewayHandler.clients.discard(self)
        for cid in self.conversations:
            GatewayHandler.rooms[cid].discard(self)

    def send(self, type_: str, payload: dict[str, Any]) -> None:
        self.write_message(json.dumps({"type": type_, "payload": payload}))

    def on_message(self, message: str | bytes) -> None:
        try:
            frame = json.loads(message)
        except ValueError:
            self.send("error", {"code": "invalid_json", "message": "bad json"})
            return
        payload = frame.get("payload") or {}
        if frame.get("type") == "auth":
            self.authenticate(payload.get("token", ""))
        elif frame.get("type") == "ping":
            self.send("pong", {})
        elif self.user_id is None:
            self.send("error", {"code": "unauthenticated", "message": "auth first"})
        elif frame.get("type") == "subscribe":
            ids = [str(cid) for cid in payload.get("conversation_ids", [])]
            for cid in ids:
                self.conversations.add(cid)
                GatewayHandler.rooms[cid].add(self)
            self.send("subscribed", {"conversation_ids": ids})

    def authenticate(self, token: str) -> None:
        try:
            claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            self.send("auth.error", {"code": "auth_failed", "message": str(exc)})
            self.close(4001)
            return
        self.user_id = str(claims["sub"])
        self.send("auth.success", {"user_id": self.user_id, "session_id": uuid.uuid4().hex,
                                   "resumed": False, "conversation_ids": []})


async def redis_listener() -> None:
    """Forward every ``<prefix>conv:<id>`` message to the handlers in that room."""
    host, port = os.environ.get("REDIS_HOST", "127.0.0.1:6379").split(":")
    client = aioredis.Redis(host=host, port=int(port))
    pubsub = client.pubsub()
    await pubsub.psubscribe(PREFIX + "conv:*")
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        cid = message["channel"].decode()[len(PREFIX) + len("conv:"):]
        frame = json.loads(message["data"])
        for handler in list(GatewayHandler.rooms.get(cid, ())):
            try:  # noqa: SIM105 (the plain form a typical developer writes; suppress() costs more)
                handler.write_message(json.dumps(frame))
            except tornado.websocket.WebSocketClosedError:
                pass


async def main() -> None:
    parse_command_line()
    app = tornado.web.Application([(r"/ws", GatewayHandler)])
    app.listen(options.port, address="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    listener = asyncio.create_task(redis_listener())
    await stop.wait()
    listener.cancel()


if __name__ == "__main__":
    asyncio.run(main())
