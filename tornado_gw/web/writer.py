"""The outbound fast path: frames built once per event, written to each socket.

Server frames are unmasked (RFC 6455 §5.1), so one event's frame bytes are the
same for every recipient: the header is built once and the same ``bytes``
object is handed to every stream. Frames for one socket within one loop
iteration are joined into one write, straight to the socket when nothing is
queued for it (no Future per write). Tornado has no limit on a connection's
write buffer (PITFALLS 6); ``IOStream.max_write_buffer_size`` is set to
``outbound_buffer_bytes`` and a stream that passes it is closed with 4009.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tornado.ioloop import IOLoop
from tornado.iostream import StreamBufferFullError, StreamClosedError

from tornado_gw.core.commands import CloseRequested, Command
from tornado_gw.core.protocol import CloseCode
from tornado_gw.runtime.clock import now

if TYPE_CHECKING:
    from tornado_gw.web.ws_handler import GatewaySocket

log = logging.getLogger(__name__)
_TEXT_FIN = 0x81


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


class SocketRegistry:
    """Open sockets by connection id; the runtime's ``Transport``."""

    def __init__(self, submit: Callable[[Command], None], outbound_buffer_bytes: int) -> None:
        self._submit = submit
        self._limit = outbound_buffer_bytes
        self.sockets: dict[str, GatewaySocket] = {}
        self._pending: dict[str, list[bytes]] = {}  # frames queued this loop iteration, in order
        self._flush_scheduled = False

    def add(self, conn_id: str, socket: GatewaySocket) -> None:
        self.sockets[conn_id] = socket
        stream = socket.ws_connection.stream if socket.ws_connection else None
        if stream is not None:
            stream.max_write_buffer_size = self._limit

    def remove(self, conn_id: str) -> None:
        self.sockets.pop(conn_id, None)

    def send(self, conn_id: str, data: bytes) -> None:
        self._queue(conn_id, text_frame(data))

    def send_many(self, conn_ids: Sequence[str], data: bytes) -> None:
        frame = text_frame(data)
        for conn_id in conn_ids:
            self._queue(conn_id, frame)

    def close(self, conn_id: str, code: int, reason: str) -> None:
        frames = self._pending.pop(conn_id, None)
        if frames:
            self._write(conn_id, b"".join(frames))  # what was sent before the close goes first
        socket = self.sockets.get(conn_id)
        if socket is None or socket.ws_connection is None:
            return
        socket.ws_connection.stream.max_write_buffer_size = None  # room for the close frame
        socket.close(code, reason)

    def _queue(self, conn_id: str, frame: bytes) -> None:
        """Frames for one socket within one loop iteration leave in one write (one syscall)."""
        frames = self._pending.get(conn_id)
        if frames is None:
            self._pending[conn_id] = [frame]
        else:
            frames.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            IOLoop.current().add_callback(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for conn_id, frames in pending.items():
            self._write(conn_id, frames[0] if len(frames) == 1 else b"".join(frames))

    def _write(self, conn_id: str, frame: bytes) -> None:
        socket = self.sockets.get(conn_id)
        connection = socket.ws_connection if socket is not None else None
        if connection is None or connection.server_terminated:
            return
        stream = connection.stream
        if stream.closed():  # its socket is gone (None) until on_close runs: write_to_fd would raise
            return
        try:
            if not stream.writing():
                # Nothing queued: hand the bytes to the kernel directly. IOStream.write would
                # allocate a Future per recipient (PITFALLS 12); only a remainder needs it.
                sent = stream.write_to_fd(memoryview(frame))
                if sent == len(frame):
                    return
                frame = frame[sent:]
            stream.write(frame)
        except BlockingIOError:
            stream.write(frame)
        except StreamBufferFullError:
            log.info("! slow consumer closed", extra={"conn_id": conn_id})
            self._submit(CloseRequested(conn_id, CloseCode.SLOW_CONSUMER, "outbound buffer full", now()))
        except (StreamClosedError, OSError):
            pass  # the stream notices the broken socket; on_close submits Disconnect
