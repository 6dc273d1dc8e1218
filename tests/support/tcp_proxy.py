"""A TCP proxy the test controls, to make Redis go away without touching Redis.

Modes:
- ``restore()``: forward both ways (the start state).
- ``cut()``: close every current connection and stop listening, so new ones are
  refused, as when the server is down.
- ``blackhole()``: keep connections open and accept new ones, but forward
  nothing, as a half-open connection or a dropped route (PITFALLS 2).
- ``mute_replies()``: forward requests but drop every reply, as when the server
  did the work and the answer was lost (a client that times out on a call that ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any


class _Link:
    """One client connection and its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (client, upstream)
        self.tasks: list[asyncio.Task[None]] = []

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class TcpProxy:
    """``async with TcpProxy("127.0.0.1:6379") as proxy``; point clients at ``proxy.address``."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._server: asyncio.Server | None = None
        self._port = 0
        self._links: set[_Link] = set()
        self.forwarding = True
        self.replying = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def open_links(self) -> int:
        """Client connections currently open through the proxy."""
        return len(self._links)

    async def __aenter__(self) -> TcpProxy:
        await self._listen()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cut()

    async def cut(self) -> None:
        self.forwarding = False
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop accepting first; wait_closed (3.12+) waits for the links too
        await self._close_links()
        if server is not None:
            await server.wait_closed()

    async def blackhole(self) -> None:
        self.forwarding = False

    async def mute_replies(self) -> None:
        self.replying = False

    async def restore(self) -> None:
        """Forward again; connections that were blackholed are closed (their bytes are lost)."""
        if not self.forwarding or not self.replying:
            await self._close_links()
        self.forwarding = self.replying = True
        if self._server is None:
            await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close_links(self) -> None:
        links, self._links = list(self._links), set()
        for link in links:
            link.close()
        await asyncio.gather(*(task for link in links for task in link.tasks), return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link, reply=False)),
            asyncio.create_task(self._pump(up_reader, writer, link, reply=True)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link,
                    reply: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if self.forwarding and (self.replying or not reply):
                    writer.write(data)
                    await writer.drain()
        link.close()
        self._links.discard(link)


class ProxyThread:
    """A ``TcpProxy`` on a thread of its own; every call waits for the proxy to act."""

    def __init__(self, target: str, timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self.proxy = TcpProxy(target)

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        self._call(self.proxy.__aenter__())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call(self.proxy.cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout_s)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout_s)

    def cut(self) -> None:
        self._call(self.proxy.cut())

    def blackhole(self) -> None:
        self._call(self.proxy.blackhole())

    def restore(self) -> None:
        self._call(self.proxy.restore())
