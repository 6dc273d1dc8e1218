"""``GET /ws``: frames in, commands out, nothing else (STYLE §4).

``on_message`` stays synchronous and short: a slow ``await`` there would stop
Tornado reading the socket, pongs included (PITFALLS 7). Token checks are
pure CPU and happen here at the edge; everything else is the reducer's.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from tornado.websocket import WebSocketHandler, WebSocketProtocol13, _WebSocketParams

from tornado_gw import metrics
from tornado_gw.core import commands as c
from tornado_gw.core.parse import AuthRequest, parse_client_frame
from tornado_gw.core.protocol import CloseCode, ErrorCode, FrameType
from tornado_gw.runtime.clock import now
from tornado_gw.settings import Settings
from tornado_gw.web import codec
from tornado_gw.web.auth import TokenError, verify_token
from tornado_gw.web.writer import SocketRegistry

log = logging.getLogger(__name__)
_CLIENT_TYPES = frozenset(t.value for t in FrameType)
_conn_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SocketContext:
    """What every ``GatewaySocket`` needs, passed through ``initialize``."""

    settings: Settings
    submit: Callable[[c.Command], None]
    registry: SocketRegistry
    is_draining: Callable[[], bool]


class _Protocol(WebSocketProtocol13):
    """Counts every close the gateway starts, including those Tornado decides itself
    (1009); and closes with 1007 on invalid UTF-8 where Tornado would just abort."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.server_terminated and not self.client_terminated and code is not None:
            metrics.CLOSES.labels(str(code)).inc()
        super().close(code, reason)

    def _handle_message(self, opcode: int, data: bytes) -> Any:
        if opcode == 0x1 and not self._frame_compressed:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.close(1007, "text frame is not valid UTF-8")
                return None
        return super()._handle_message(opcode, data)


class GatewaySocket(WebSocketHandler):
    def initialize(self, context: SocketContext) -> None:
        self.context = context
        self.conn_id = ""

    def prepare(self) -> None:
        if self.context.is_draining():
            self.set_status(503)
            self.finish({"error": "shutting down: reconnect to another instance"})

    def check_origin(self, origin: str) -> bool:
        """Browsers from other origins get 403 (``allowed_origins``; CONTRACT §1)."""
        allowed = self.context.settings.allowed_origins
        if not allowed:
            return self.context.settings.mode == "development" or _same_host(origin, self.request.host)
        return origin in allowed or "*" in allowed

    def get_compression_options(self) -> None:
        return None  # frames are built once and shared by all recipients

    def get_websocket_protocol(self) -> WebSocketProtocol13 | None:
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None
        return _Protocol(self, False, self._params())

    def _params(self) -> _WebSocketParams:
        return _WebSocketParams(ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                                max_message_size=self.max_message_size, compression_options=None)

    def open(self) -> None:
        self.conn_id = f"c{next(_conn_ids)}"
        self.context.registry.add(self.conn_id, self)
        metrics.CONNECTIONS.inc()
        self.context.submit(c.Connect(self.conn_id, now()))

    def on_message(self, message: str | bytes) -> None:
        at = now()
        if isinstance(message, bytes):
            metrics.FRAMES_IN.labels("binary").inc()
            self.context.submit(c.CloseRequested(self.conn_id, CloseCode.UNSUPPORTED_DATA,
                                                 "binary frames are not supported", at))
            return
        try:
            obj = codec.decode(message)
        except codec.DecodeError as exc:
            metrics.FRAMES_IN.labels("invalid").inc()
            bad = c.BadFrame(self.conn_id, ErrorCode.INVALID_JSON, f"invalid JSON: {exc}", None, at)
            self.context.submit(bad)
            return
        kind = obj.get("type") if isinstance(obj, dict) else None
        metrics.FRAMES_IN.labels(kind if kind in _CLIENT_TYPES else "invalid").inc()
        cmd = parse_client_frame(self.conn_id, obj, at)
        self.context.submit(self._verify(cmd) if isinstance(cmd, AuthRequest) else cmd)

    def _verify(self, request: AuthRequest) -> c.Command:
        settings = self.context.settings
        assert settings.jwt_secret is not None
        try:
            claims = verify_token(request.token, secret=settings.jwt_secret,
                                  algorithms=settings.jwt_algorithms, leeway_s=settings.jwt_leeway_s,
                                  require_exp=settings.require_exp, now=request.at)
        except TokenError as exc:
            return c.AuthFailed(self.conn_id, exc.code, str(exc), request.at)
        return c.Authenticate(self.conn_id, claims.user_id, claims.expires_at, request.session_id,
                              request.last_seq, uuid.uuid4().hex, request.at)

    def on_close(self) -> None:
        if not self.conn_id:
            return
        self.context.registry.remove(self.conn_id)
        metrics.CONNECTIONS.dec()
        self.context.submit(c.Disconnect(self.conn_id, now()))


def _same_host(origin: str, host: str) -> bool:
    return urlparse(origin).netloc.lower() == host.lower()
