"""The commands of CONTRACT §1 against a running gateway: serve, token, emit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import SECRET, Client, GatewayProcess, T, free_port

pytestmark = pytest.mark.e2e
_OURS = ("WSGATEWAY_", "REDIS_", "POSTGRES_", "JWT_SECRET", "MODE", "LOGGER_", "PUBLISH_API_KEY")


async def _cli(cwd: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """``python -m tornado_gw ARGS`` in ``cwd`` (no config file) with only ``environ`` of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env.update({"JWT_SECRET": SECRET, **environ})
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "tornado_gw", *args], cwd=cwd,
                                   env=env, capture_output=True, text=True, timeout=T * 2)


async def _subscriber(gateway: GatewayProcess, user_id: str, conversation_id: str) -> Client:
    client = await Client.connect(gateway)
    await client.auth(user_id)
    await client.subscribe(conversation_id)
    return client


async def test_no_command_means_serve(start_gateway: Callable[..., GatewayProcess]) -> None:
    port = free_port()
    # The harness runs `python -m tornado_gw COMMAND`; a flag in its place leaves the command out.
    gateway = start_gateway(command=f"--port={port}", port=port)
    client = await _subscriber(gateway, "alice", "c1")
    assert gateway.http("GET", "/") == (200, {"service": "WebSocket Gateway", "status": "ok"})
    await client.close()


async def test_token_command_prints_a_token_the_gateway_accepts(start_gateway: Callable[..., GatewayProcess],
                                                                tmp_path: Path) -> None:
    gateway = start_gateway(jwt_leeway_s=0)  # the short token closes at exp + leeway
    done = await _cli(tmp_path, "token", "--user", "bob")
    assert done.returncode == 0, done.stderr
    client = await Client.connect(gateway)
    assert (await client.auth("bob", token=done.stdout.strip()))["user_id"] == "bob"
    short = await _cli(tmp_path, "token", "--user=carol", "--ttl=1")
    minted = time.time()
    carol = await Client.connect(gateway)
    await carol.auth("carol", token=short.stdout.strip())
    assert (await carol.closed())[0] == 4003 and time.time() - minted >= 0.5
    await client.close()


async def test_emit_reaches_a_subscriber_through_publish(gateway: GatewayProcess, tmp_path: Path) -> None:
    alice = await _subscriber(gateway, "alice", "c1")
    by_url = await _cli(tmp_path, "emit", "--conversation", "c1", "--type", "message.new",
                        "--payload", '{"conversation_id": "c1", "text": "hi"}', "--url", gateway.url)
    assert by_url.returncode == 0, by_url.stderr
    assert json.loads(by_url.stdout) == {"seq": 1}
    assert await alice.expect("message.new") == {
        "type": "message.new", "payload": {"conversation_id": "c1", "text": "hi"}, "seq": 1}
    by_port = await _cli(tmp_path, "emit", "--user=alice", "--type=notice", '--payload={"n": 2}',
                         WSGATEWAY_PORT=str(gateway.port))
    assert by_port.returncode == 0, by_port.stderr
    assert await alice.expect("notice") == {"type": "notice", "payload": {"n": 2}, "seq": 2}
    await alice.close()


async def test_emit_to_a_production_gateway_uses_the_publish_key(
        start_gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    gateway = start_gateway(MODE="production", authorization="none", PUBLISH_API_KEY="the-key")
    alice = await _subscriber(gateway, "alice", "c1")
    args = ("emit", "--conversation=c1", "--type=message.new", "--payload={}", f"--url={gateway.url}")
    refused = await _cli(tmp_path, *args)
    assert refused.returncode == 1 and "401" in refused.stderr
    accepted = await _cli(tmp_path, *args, PUBLISH_API_KEY="the-key")
    assert accepted.returncode == 0, accepted.stderr
    assert await alice.expect("message.new") == {"type": "message.new", "payload": {}, "seq": 1}
    await alice.close()
