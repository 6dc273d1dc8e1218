"""The socket loop around ``ClientState``: connect, feed frames, send, reconnect.

Everything the client decides lives in ``client/state.py``; this module only
moves bytes and time (``websockets`` for the socket: RFC 6455, keepalive pings
that notice a dead TCP connection, and cancellation-safe ``recv``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tornado_gw.client.backoff import reconnect_delay_s
from tornado_gw.client.state import ClientState, Event, Settings, StateChange

log = logging.getLogger(__name__)
CLOSED_BY_USER = 1000
RECONNECT_BY_USER = 4000
NO_CLOSE_FRAME = 1006  # what a browser reports when the TCP connection just went away
GetToken = Callable[[], Awaitable[str]]
Listener = Callable[[StateChange], None]


class _Silent(Exception):
    """Nothing arrived for a ping interval after a ping (``ClientState.silent``)."""


class Client:
    """A gateway connection that reconnects and resumes by itself until ``close()``.

    ``url`` may list several gateways: each connection attempt takes the next one
    (a drained or dead instance is left for another, where the session resumes).

    Read events with ``async for event in client``; watch the connection with
    ``on_state(listener)``. Subscriptions, presence and typing state survive
    reconnects.
    """

    def __init__(self, url: str | Sequence[str], *, token: str | None = None,
                 get_token: GetToken | None = None, settings: Settings | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        if (token is None) == (get_token is None):
            raise ValueError("pass exactly one of token= or get_token=")
        self.urls = [url] if isinstance(url, str) else list(url)
        self._attempts = 0
        self.state = ClientState(settings or Settings())
        self._token = token
        self._get_token = get_token
        self._rand = rand
        self._listeners: list[Listener] = []
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._new_token = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # token refreshes under way

    # --- the user's side --------------------------------------------------------------

    def on_state(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"tornado_gw client {self.urls[0]}")

    async def wait_open(self, timeout: float) -> None:
        """Until authenticated; raises ``ConnectionError`` if the client stopped or waits for a token."""
        await self.until(lambda: self.state.phase in ("open", "closed", "waiting_token"), timeout)
        if self.state.phase != "open":
            raise ConnectionError(f"gateway refused the connection: client is {self.state.phase}")

    async def subscribe(self, *conversation_ids: str, timeout: float = 10.0) -> None:
        """Subscribe (remembered across reconnects); while connected, waits for ``subscribed``
        (denied conversations are dropped from the subscriptions)."""
        self.state.subscribe(conversation_ids)
        await self._flush()
        if self.state.phase == "open":
            await self.until(lambda: all(c in self.state.live or c not in self.state.wanted
                                         for c in conversation_ids), timeout)

    async def unsubscribe(self, *conversation_ids: str) -> None:
        self.state.unsubscribe(conversation_ids)
        await self._flush()

    async def typing(self, conversation_id: str) -> None:
        self.state.typing(conversation_id, time.time())
        await self._flush()

    async def query_presence(self, conversation_id: str, timeout: float = 10.0) -> frozenset[str]:
        """Every online user of a subscribed conversation, page by page (``presence.query``).

        Raises:
            ValueError: not subscribed to ``conversation_id`` on a live connection.
        """
        if conversation_id not in self.state.live:
            raise ValueError(f"can't query presence of {conversation_id!r}: not subscribed or offline")
        self.state.query_presence(conversation_id)
        await self._flush()
        await self.until(lambda: conversation_id not in self.state.presence_pages, timeout)
        return self.presence(conversation_id)

    def presence(self, conversation_id: str) -> frozenset[str]:
        """Online users as last known (``presence.state`` and ``presence.diff``)."""
        return frozenset(self.state.presence.get(conversation_id, ()))

    def typing_users(self, conversation_id: str) -> frozenset[str]:
        return frozenset(self.state.typing_users(conversation_id, time.time()))

    def set_token(self, token: str) -> None:
        """A new token: used for the next connection; after a 4001, reconnects with it."""
        self._token = token
        if self.state.phase == "open":
            self.state.refresh(token, time.time())
            self._spawn(self._flush())
        self._new_token.set()

    async def reconnect(self) -> None:
        """Drop the connection now (as a network failure would) and resume on a new one."""
        if self._ws is not None:
            await self._ws.close(RECONNECT_BY_USER, "reconnect")

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds after some frame or change; ``TimeoutError`` after ``timeout``."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def close(self) -> None:
        self.state.stop()
        await self._flush()
        self._new_token.set()
        if self._ws is not None:
            await self._ws.close()
        if self._task is None:
            self._events.put_nowait(None)  # never started: end the iterator here
        else:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Event:
        event = await self._events.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # --- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while self.state.phase != "closed":
                if self.state.phase == "waiting_token":
                    self._new_token.clear()
                    await self._new_token.wait()
                    if self.state.phase == "closed":
                        break
                self.state.connecting()
                await self._flush()
                code, reason, authenticated = await self._session()
                after = self.state.closed(code, reason)
                await self._flush()
                attempt = 1 if authenticated else attempt + 1
                if after == "reconnect":
                    s = self.state.settings
                    await asyncio.sleep(reconnect_delay_s(attempt, base_s=s.backoff_base_s,
                                                          cap_s=s.backoff_cap_s, jitter=self._rand()))
        finally:
            self._events.put_nowait(None)

    async def _session(self) -> tuple[int, str, bool]:
        """One connection, from connect to close: ``(code, reason, whether it authenticated)``."""
        authenticated = False
        url = self.urls[self._attempts % len(self.urls)]
        self._attempts += 1
        try:
            token = await self._current_token()
        except Exception as exc:  # the user's get_token: retried with backoff like a refused connection
            log.warning("! get_token failed: %s", exc)
            return NO_CLOSE_FRAME, f"get_token failed: {exc}", authenticated
        try:
            interval = self.state.settings.ping_interval_s
            async with websockets.connect(url, max_size=None, ping_interval=interval,
                                          ping_timeout=interval, close_timeout=2) as ws:
                self._ws = ws
                if self.state.phase == "closed":  # close() came during the handshake
                    return CLOSED_BY_USER, "", False
                self.state.opened(token, time.time())
                await self._flush()
                while True:
                    await self._receive(ws)
                    authenticated = authenticated or self.state.phase == "open"
        except _Silent:
            return NO_CLOSE_FRAME, "no answer to ping", authenticated
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is None:
                return NO_CLOSE_FRAME, "", authenticated
            return exc.rcvd.code, exc.rcvd.reason, authenticated
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            log.debug("! connect to %s failed: %s", url, exc)
            return NO_CLOSE_FRAME, str(exc), authenticated
        finally:
            self._ws = None

    async def _receive(self, ws: ClientConnection) -> None:
        deadline = self.state.deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            if self.state.tick(time.time()):
                self._spawn(self._refresh())
            if self.state.silent(time.time()):  # a half-open link: give up on it
                await self._flush()
                ws.transport.abort()
                raise _Silent from None
        else:
            try:
                frame = json.loads(raw)
            except ValueError:
                log.warning("! not JSON from the gateway: %.80r", raw)
                return
            if isinstance(frame, dict):
                self.state.receive(frame, time.time())
        await self._flush()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _current_token(self) -> str:
        if self._get_token is not None:
            self._token = await self._get_token()
        assert self._token is not None
        return self._token

    async def _refresh(self) -> None:
        try:
            token = await self._current_token()
        except Exception:
            log.exception("! get_token failed; the gateway closes with 4003 at exp and the client reconnects")
            return
        self.state.refresh(token, time.time())
        await self._flush()

    async def _flush(self) -> None:
        frames, events, changes = self.state.take()
        ws = self._ws
        for frame in frames:
            if ws is None:
                break
            try:
                await ws.send(json.dumps(frame))
            except websockets.ConnectionClosed:
                break  # the loop sees the close and reconnects
        for event in events:
            self._events.put_nowait(event)
        for change in changes:
            for listener in self._listeners:
                listener(change)
        async with self._changed:
            self._changed.notify_all()


async def connect(url: str | Sequence[str], *, token: str | None = None, get_token: GetToken | None = None,
                  settings: Settings | None = None, on_state: Listener | None = None,
                  timeout: float = 10.0) -> Client:
    """A started client, once authenticated (``timeout`` bounds the first connection).

    Raises:
        ConnectionError: the gateway refused the token (4001) or the connection (4010, 4011).
        TimeoutError: no successful ``auth`` within ``timeout``; the client is closed.
    """
    client = Client(url, token=token, get_token=get_token, settings=settings)
    if on_state is not None:
        client.on_state(on_state)
    client.start()
    try:
        await client.wait_open(timeout)
    except BaseException:
        await client.close()
        raise
    return client

