"""Which closes the client reconnects after, against a tiny WebSocket server that
closes every connection with one code: every code, quickly. The real gateway's 4010
(``POST /disconnect``) is in test_client_e2e.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from tests.e2e.harness import T, async_wait_until
from tornado_gw.client import Client, Settings, StateChange

QUICK = Settings(backoff_base_s=0.01, backoff_cap_s=0.05)


class Closer:
    """Answers ``auth`` like the gateway, then closes with ``code``; keeps every auth payload."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.auths: list[dict[str, Any]] = []

    async def handle(self, ws: ServerConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):  # the client may close first
            await self._answer(ws)

    async def _answer(self, ws: ServerConnection) -> None:
        auth = json.loads(await ws.recv())
        self.auths.append(auth["payload"])
        if self.code == 4001:
            reply = {"type": "auth.error", "payload": {"code": "invalid_token", "message": "bad"}}
        else:
            reply = {"type": "auth.success", "payload": {"user_id": "alice", "session_id": "s1",
                                                         "resumed": False, "conversation_ids": []}}
        await ws.send(json.dumps(reply))
        await ws.close(self.code, "closed by the test")


@asynccontextmanager
async def client_of(closer: Closer, **options: Any) -> AsyncIterator[tuple[Client, list[StateChange]]]:
    """A started client of ``closer`` (``token="first"`` unless ``options`` say otherwise)."""
    async with websockets.serve(closer.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = Client(f"ws://127.0.0.1:{port}/ws", settings=QUICK, **(options or {"token": "first"}))
        changes: list[StateChange] = []
        client.on_state(changes.append)
        client.start()
        try:
            yield client, changes
        finally:
            await client.close()


@pytest.mark.parametrize("code", [4010, 4011])
async def test_client_never_reconnects_after_4010_or_4011(code: int) -> None:
    closer = Closer(code)
    async with client_of(closer) as (client, changes):
        await client.until(lambda: client.state.phase == "closed", T)
        await asyncio.sleep(0.5)  # a reconnect would come within ~0.05 s
        assert len(closer.auths) == 1
        assert [c.state for c in changes] == ["connecting", "connected", "disconnected", "closed"]
        assert (changes[2].code, changes[2].reason) == (code, "closed by the test")


async def test_client_waits_for_a_new_token_after_4001_then_reconnects_with_it() -> None:
    closer = Closer(4001)
    async with client_of(closer) as (client, changes):
        await client.until(lambda: client.state.phase == "waiting_token", T)
        await asyncio.sleep(0.5)
        assert [a["token"] for a in closer.auths] == ["first"]
        client.set_token("second")
        await async_wait_until(lambda: len(closer.auths) == 2, "a connection with the new token")
        assert closer.auths[1]["token"] == "second"
        assert changes[:2] == [StateChange("connecting"),
                               StateChange("disconnected", 4001, "closed by the test")]


@pytest.mark.parametrize("code", [1000, 1001, 1011, 4003, 4004, 4008, 4009])
async def test_client_reconnects_and_resumes_after_other_codes(code: int) -> None:
    closer = Closer(code)
    async with client_of(closer) as (client, changes):
        await async_wait_until(lambda: len(closer.auths) >= 3, "two reconnects")
        assert closer.auths[1] == {"token": "first", "session_id": "s1"}  # no seq seen yet: no last_seq
        assert client.state.phase != "closed"
        assert [c.code for c in changes if c.state == "disconnected"][:2] == [code, code]


async def test_a_failing_get_token_is_retried_with_backoff() -> None:
    closer = Closer(1001)
    calls: list[int] = []

    async def get_token() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("token service down")
        return "fresh"

    async with client_of(closer, get_token=get_token) as (_, changes):
        await async_wait_until(lambda: len(closer.auths) >= 1, "a connection once get_token works")
    assert closer.auths[0]["token"] == "fresh"
    assert changes[1] == StateChange("disconnected", 1006, "get_token failed: token service down")
