"""``GET /ws``: frames in, commands out, nothing else (STYLE §4).

``on_message`` stays synchronous and short: a slow ``await`` there would stop
Tornado reading the socket, pongs included (PITFALLS 7). Token checks are
pure CPU and happen here at the edge; everything else is the reducer's.

For the idle-memory figure this module leans on Tornado internals, each one
measured worth keeping and guarded by ``tests/web/test_tornado_internals.py``
(which names the internal when a Tornado release changes it):
``_WebSocketParams`` (one shared), ``_receive_frame_loop``/``_read_bytes`` (a
callback read loop), ``_write_buffer._buffers``/``_write_futures`` (lists), the
handler's handshake attributes (deleted), ``_handle_message`` (1007). The
callback read loop also refuses unmasked client frames (RFC 6455 §5.1), which
Tornado itself would parse.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlparse

from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketHandler, WebSocketProtocol13, _WebSocketParams

from tornado_gw import codec, metrics
from tornado_gw.core import commands as c
from tornado_gw.core.parse import AuthRequest, parse_client_frame
from tornado_gw.core.protocol import CloseCode, ErrorCode, FrameType
from tornado_gw.runtime.clock import now, wall_now
from tornado_gw.settings import Settings
from tornado_gw.web.auth import KeyUnknown, TokenError, TokenVerifier
from tornado_gw.web.writer import SocketRegistry

log = logging.getLogger(__name__)
_CLIENT_TYPES = frozenset(t.value for t in FrameType)
_conn_ids = itertools.count(1)
# What a handler still uses once the handshake is over (issue 5: idle memory). The rest
# (the request with its headers and HTTP connection, the response headers, ui modules,
# path arguments, transforms) is never read again and is dropped after the upgrade.
_KEPT_AFTER_UPGRADE = frozenset({
    "application", "context", "conn_id", "ws_connection", "close_code", "close_reason",
    "_on_close_called", "_status_code", "_finished", "_auto_finish", "_prepared_future",
})


@dataclass(frozen=True, slots=True)
class SocketContext:
    """What every ``GatewaySocket`` needs, passed through ``initialize``."""

    settings: Settings
    submit: Callable[[c.Command], None]
    registry: SocketRegistry
    is_draining: Callable[[], bool]
    verifier: TokenVerifier


class _Fifo(list[Any]):
    """The deque operations IOStream uses, on a list. An empty ``collections.deque``
    allocates a 64-slot block (~600 B); each stream has two that stay empty while the
    socket keeps up. ``popleft`` is O(n), but a write backlog is capped by
    ``outbound_buffer_bytes`` in chunks of at least 2 KB (IOStream coalesces smaller
    writes), so n stays in the hundreds."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def _compact(stream: IOStream) -> None:
    """Swap the write queues of a stream for lists (issue 5: idle memory)."""
    stream._write_futures = _Fifo(stream._write_futures)  # type: ignore[assignment]
    stream._write_buffer._buffers = _Fifo(stream._write_buffer._buffers)  # type: ignore[assignment]


class _Protocol(WebSocketProtocol13):
    """Counts every close the gateway starts, including those Tornado decides itself
    (1009); and closes with 1007 on invalid UTF-8 where Tornado would just abort."""

    # Instances must not get new attributes: with its 29 the protocol's attribute dict
    # shares its keys with every other instance (~300 B); the 30th makes it a table of
    # its own (~1,600 B, CPython's SHARED_KEYS_MAX_SIZE).

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

    async def _receive_frame_loop(self) -> None:
        """Wait for frames with a callback on the stream, not in a coroutine.

        Tornado awaits its read loop at the bottom of the handshake (``_execute`` -> ``get``
        -> ``accept_connection`` -> ``_accept_connection``): those suspended frames, the
        request headers in their locals and the loop's own Task would live as long as the
        connection (issue 5: idle memory). Returning at once ends that chain; an idle
        connection then holds one read Future. Each frame is parsed by Tornado's own
        ``_receive_frame`` in a short task, whose first read gets the header read here.
        """
        self._await_frame()

    def _await_frame(self) -> None:
        if self.client_terminated:
            self._reader_stopped()
            return
        try:
            header = cast("asyncio.Future[bytes]", self.stream.read_bytes(2))  # a Future, typed Awaitable
        except StreamClosedError:
            self._stream_lost()
            return
        header.add_done_callback(self._frame_started)

    def _frame_started(self, header: asyncio.Future[bytes]) -> None:
        if header.cancelled() or header.exception() is not None:  # the stream closed
            self._stream_lost()
            return
        if not header.result()[1] & 0x80:
            # RFC 6455 §5.1: "a server MUST close the connection upon receiving a frame that
            # is not masked" (and SHOULD say 1002 first, §7.1.7); Tornado would parse it.
            self.close(1002, "client frames must be masked")
            self._stream_lost()
            return
        _read_headers[self] = header.result()
        asyncio.ensure_future(self._receive_frame()).add_done_callback(self._frame_done)

    async def _read_bytes(self, n: int) -> bytes:
        header = _read_headers.pop(self, None)
        if header is None:
            return await super()._read_bytes(n)
        self._wire_bytes_in += n
        return header

    def _frame_done(self, frame: asyncio.Future[None]) -> None:
        """What Tornado's loop (and the handshake chain above it) did with each outcome."""
        _read_headers.pop(self, None)
        exc = None if frame.cancelled() else frame.exception()
        if frame.cancelled() or isinstance(exc, (StreamClosedError, ValueError)):
            self._stream_lost()
        elif exc is not None:
            self.handler.log_exception(type(exc), exc, exc.__traceback__)
            self._stream_lost()
        else:
            self._await_frame()

    def _stream_lost(self) -> None:
        self._abort()
        self._reader_stopped()

    def _reader_stopped(self) -> None:
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)


# The header of the frame being read, read by the idle callback and handed to Tornado's
# parser: here, not in an attribute, for the reason given on ``_Protocol``.
_read_headers: dict[_Protocol, bytes] = {}
# Frames of a connection whose token names a JWKS kid being fetched: the auth first,
# then what the client sent meanwhile, submitted in order once the keys are in.
_awaiting_keys: dict[GatewaySocket, list[c.Command | AuthRequest]] = {}
_key_fetches: set[asyncio.Future[None]] = set()  # referenced until done (asyncio keeps weak refs)


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
        return _shared_params(self.ping_interval, self.ping_timeout, self.max_message_size)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        await super().get(*args, **kwargs)
        if self.ws_connection is not None and self.get_status() == 101:
            self._shed_handshake_state()

    def _shed_handshake_state(self) -> None:
        """Forget what only the HTTP handshake needed (logged at the upgrade already)."""
        assert self.ws_connection is not None
        if self.ws_connection.stream is not None and not self.ws_connection.stream.closed():
            _compact(self.ws_connection.stream)
        for name in [name for name in self.__dict__ if name not in _KEPT_AFTER_UPGRADE]:
            del self.__dict__[name]
        self.__dict__ = dict(self.__dict__)  # a table sized for what is left

    def log_exception(self, typ: type[BaseException] | None, value: BaseException | None,
                      tb: TracebackType | None) -> None:
        """Tornado's version describes the request, which is gone after the upgrade."""
        if "request" in self.__dict__:
            super().log_exception(typ, value, tb)
        else:
            log.error("! uncaught exception on a WebSocket", extra={"conn_id": self.conn_id},
                      exc_info=(typ, value, tb) if typ is not None and value is not None else None)

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
        metrics.FRAMES_IN.labels(kind if isinstance(kind, str) and kind in _CLIENT_TYPES else "invalid").inc()
        cmd = parse_client_frame(self.conn_id, obj, at)
        held = _awaiting_keys.get(self)
        if held is not None:
            held.append(cmd)
        else:
            self._forward(cmd)

    def _forward(self, cmd: c.Command | AuthRequest) -> None:
        if not isinstance(cmd, AuthRequest):
            self.context.submit(cmd)
            return
        try:
            self.context.submit(self._verify(cmd, keys_fetched=False))
        except KeyUnknown:
            _awaiting_keys[self] = [cmd]
            fetch = asyncio.ensure_future(self._verify_after_fetch())
            _key_fetches.add(fetch)
            fetch.add_done_callback(_key_fetches.discard)

    async def _verify_after_fetch(self) -> None:
        """An unknown kid: fetch the JWKS (bounded, at most every 30 s), then verify once more."""
        jwks = self.context.verifier.jwks
        assert jwks is not None
        await jwks.fetch()
        held = _awaiting_keys.pop(self, None)
        if held is None:  # the connection closed meanwhile
            return
        first = held.pop(0)
        assert isinstance(first, AuthRequest)
        self.context.submit(self._verify(first, keys_fetched=True))
        for cmd in held:
            if self in _awaiting_keys:
                _awaiting_keys[self].append(cmd)
            else:
                self._forward(cmd)

    def _verify(self, request: AuthRequest, keys_fetched: bool) -> c.Command:
        verifier = self.context.verifier
        wall = wall_now()  # ``exp`` is a calendar time: checked against the wall clock
        try:
            claims = verifier.verify(request.token, now=wall)
        except TokenError as exc:
            return c.AuthFailed(self.conn_id, exc.code, str(exc), request.at)
        except KeyUnknown as exc:
            if not keys_fetched:
                raise
            return c.AuthFailed(self.conn_id, "invalid_token", f"invalid token: {exc}", request.at)
        # ... and then kept as a deadline on the gateway's clock, which no NTP step moves.
        deadline = verifier.deadline(claims)
        expires_at = None if deadline is None else request.at + (deadline - wall)
        return c.Authenticate(self.conn_id, claims.user_id, expires_at, request.session_id,
                              request.last_seq, uuid.uuid4().hex, request.at)

    def on_close(self) -> None:
        _awaiting_keys.pop(self, None)
        if not self.conn_id:
            return
        self.context.registry.remove(self.conn_id)
        metrics.CONNECTIONS.dec()
        self.context.submit(c.Disconnect(self.conn_id, now()))


@functools.lru_cache(maxsize=4)
def _shared_params(ping_interval: float | None, ping_timeout: float | None,
                   max_message_size: int) -> _WebSocketParams:
    """One parameters object for every connection (they come from the app's settings), not
    ~100 B each; Tornado only reads it."""
    return _WebSocketParams(ping_interval=ping_interval, ping_timeout=ping_timeout,
                            max_message_size=max_message_size, compression_options=None)


def _same_host(origin: str, host: str) -> bool:
    return urlparse(origin).netloc.lower() == host.lower()
