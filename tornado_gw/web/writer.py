"""The outbound fast path: frames built once per event, written to each socket.

Server frames are unmasked (RFC 6455 §5.1), so one event's frame bytes are the
same for every recipient: the header is built once and the same ``bytes``
object is handed to every stream. Frames for one socket within one loop
iteration are joined into one write, straight to the socket when nothing is
queued for it (no Future per write). Tornado has no limit on a connection's
write buffer (PITFALLS 6); ``IOStream.max_write_buffer_size`` is set to
``outbound_buffer_bytes`` and a stream that passes it is closed with 4009.

A replay is the exception (CONTRACT §4 v2): it is written at the pace the
client reads it, one chunk after the kernel took the previous one, so however
large it is it never trips the cap by itself. Frames that follow it queue
behind it, and the cap applies to those.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.websocket import WebSocketProtocol

from tornado_gw.core.commands import CloseRequested, Command
from tornado_gw.core.protocol import CloseCode
from tornado_gw.runtime.clock import now

if TYPE_CHECKING:
    from tornado_gw.web.ws_handler import GatewaySocket

log = logging.getLogger(__name__)
_TEXT_FIN = 0x81
PACE_CHUNK_BYTES = 64 * 1024  # what a paced replay hands the stream at a time


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked text frame carrying ``payload``."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", _TEXT_FIN, size)
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", _TEXT_FIN, 126, size)
    else:
        header = struct.pack("!BBQ", _TEXT_FIN, 127, size)
    return header + payload


class _Paced:
    """A replay still being written, and the live frames queued behind it."""

    __slots__ = ("frames", "live_bytes", "replay_left")

    def __init__(self, frames: Sequence[bytes]) -> None:
        self.frames: deque[bytes] = deque(frames)
        self.replay_left = len(frames)  # the first ``replay_left`` frames are the replay
        self.live_bytes = 0  # bytes of the live frames behind it: what the cap measures

    def take(self, budget: int) -> bytes:
        """The next frames, at least one, up to ``budget`` bytes, joined."""
        taken: list[bytes] = []
        size = 0
        while self.frames and (not taken or size + len(self.frames[0]) <= budget):
            frame = self.frames.popleft()
            if self.replay_left:
                self.replay_left -= 1
            else:
                self.live_bytes -= len(frame)
            taken.append(frame)
            size += len(frame)
        return b"".join(taken)


class SocketRegistry:
    """Open sockets by connection id; the runtime's ``Transport``.

    Frames wait for the end of the loop iteration as ``(recipients, frame)`` in
    send order: one event for many recipients is one entry, not one per recipient.
    """

    def __init__(self, submit: Callable[[Command], None], outbound_buffer_bytes: int) -> None:
        self._submit = submit
        self._limit = outbound_buffer_bytes
        self.sockets: dict[str, GatewaySocket] = {}
        self._protocols: dict[str, WebSocketProtocol] = {}  # where each connection's frames go
        self._batch: list[tuple[Sequence[str], bytes]] = []
        self._flush_scheduled = False
        self._paced: dict[str, _Paced] = {}  # connections with a replay being written

    def add(self, conn_id: str, socket: GatewaySocket) -> None:
        self.sockets[conn_id] = socket
        protocol = socket.ws_connection
        if protocol is not None and protocol.stream is not None:
            protocol.stream.max_write_buffer_size = self._limit
            self._protocols[conn_id] = protocol

    def remove(self, conn_id: str) -> None:
        self.sockets.pop(conn_id, None)
        self._protocols.pop(conn_id, None)
        self._paced.pop(conn_id, None)

    def send(self, conn_id: str, data: bytes) -> None:
        self._enqueue((conn_id,), text_frame(data))

    def send_many(self, conn_ids: Sequence[str], data: bytes) -> None:
        self._enqueue(conn_ids, text_frame(data))

    def send_paced(self, conn_id: str, payloads: Sequence[bytes]) -> None:
        """A replay: written as fast as the client reads it, outside the cap."""
        if not payloads:
            return
        self._flush()  # what was sent before the replay goes first
        paced = self._paced.get(conn_id)
        if paced is not None:  # a second replay behind the first: both are exempt
            paced.frames.extend(text_frame(payload) for payload in payloads)
            paced.replay_left = len(paced.frames)
            paced.live_bytes = 0
            return
        self._paced[conn_id] = _Paced([text_frame(payload) for payload in payloads])
        self._pump(conn_id)

    def close(self, conn_id: str, code: int, reason: str) -> None:
        self._flush()  # what was sent before the close goes first
        self._paced.pop(conn_id, None)
        socket = self.sockets.get(conn_id)
        if socket is None or socket.ws_connection is None:
            return
        if socket.ws_connection.stream is not None:
            socket.ws_connection.stream.max_write_buffer_size = None  # room for the close frame
        socket.close(code, reason)

    def _enqueue(self, conn_ids: Sequence[str], frame: bytes) -> None:
        self._batch.append((conn_ids, frame))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write what this loop iteration queued; a socket's frames leave in one write (one syscall)."""
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if len(batch) == 1:  # the common case: one event, nothing to join
            conn_ids, frame = batch[0]
            for conn_id in conn_ids:
                self._write(conn_id, frame)
            return
        joined: dict[str, list[bytes]] = {}
        for conn_ids, frame in batch:
            for conn_id in conn_ids:
                joined.setdefault(conn_id, []).append(frame)
        for conn_id, frames in joined.items():
            self._write(conn_id, frames[0] if len(frames) == 1 else b"".join(frames))

    def _write(self, conn_id: str, data: bytes) -> None:
        paced = self._paced.get(conn_id)
        if paced is not None:
            paced.frames.append(data)
            paced.live_bytes += len(data)
            if paced.live_bytes > self._limit:
                self._slow_consumer(conn_id)
            return
        stream = self._open_stream(conn_id)
        if stream is None:
            return
        try:
            if not stream.writing():
                # Nothing queued: hand the bytes to the kernel directly. IOStream.write would
                # allocate a Future per recipient (PITFALLS 12); only a remainder needs it.
                # A plain IOStream's write_to_fd is this send (the gateway serves no TLS itself).
                try:
                    sent = stream.socket.send(data)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            stream.write(data)
        except StreamBufferFullError:
            self._slow_consumer(conn_id)
        except (StreamClosedError, OSError):
            pass  # the stream notices the broken socket; on_close submits Disconnect

    def _open_stream(self, conn_id: str) -> IOStream | None:
        """The connection's stream while frames can still be written to it."""
        protocol = self._protocols.get(conn_id)
        if protocol is None or protocol.server_terminated:
            return None
        stream = protocol.stream
        if stream is None or stream.closed():  # its socket is gone (None) until on_close runs
            return None
        return stream

    def _slow_consumer(self, conn_id: str) -> None:
        log.info("! slow consumer closed", extra={"conn_id": conn_id})
        self._paced.pop(conn_id, None)
        self._submit(CloseRequested(conn_id, CloseCode.SLOW_CONSUMER, "outbound buffer full", now()))

    def _pump(self, conn_id: str) -> None:
        """Hand the stream the next chunk of a paced replay once it has written the last."""
        paced = self._paced.get(conn_id)
        if paced is None:
            return
        stream = self._open_stream(conn_id)
        if stream is None or not paced.frames:  # gone, or done: frames go straight to the stream
            del self._paced[conn_id]
            return
        chunk = paced.take(PACE_CHUNK_BYTES)
        stream.max_write_buffer_size = None  # the chunk is exempt; the stream is empty anyway
        try:
            written = stream.write(chunk)
        except StreamClosedError:
            del self._paced[conn_id]
            return
        finally:
            stream.max_write_buffer_size = self._limit
        written.add_done_callback(lambda done: self._pumped(conn_id, done))

    def _pumped(self, conn_id: str, done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is not None:  # the stream closed meanwhile
            self._paced.pop(conn_id, None)
            return
        self._pump(conn_id)
