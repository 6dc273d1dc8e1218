"""The server API, the connection cap and the token kinds against a real embedded gateway
(CONTRACT §1-§3 v2); the cluster-wide cases are in test_revocation.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, Client, GatewayProcess, T, joined, token
from tests.support.keys import ALGORITHMS, JwksServer, key_pair

pytestmark = pytest.mark.e2e
KEY = "server-api-key-for-the-access-tests"


def cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**gateway.env, "PUBLISH_API_KEY": KEY}
    command = [sys.executable, "-m", "tornado_gw", *args, "--url", gateway.url]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=2 * T)


async def test_cli_unsubscribe_and_disconnect_act_on_every_connection_of_the_user(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(PUBLISH_API_KEY=KEY)
    a1, a2 = await joined(gateway, "alice", "c1", "c2"), await joined(gateway, "alice", "c1")
    bob = await joined(gateway, "bob", "c1")
    run = cli(gateway, "unsubscribe", "--user", "alice", "--conversation", "c1,c9")
    assert run.returncode == 0, run.stderr
    for client in (a1, a2):
        frame = await client.expect("unsubscribed")
        assert frame["payload"] == {"conversation_ids": ["c1"], "reason": "server"}
    event = {"channel": "conv:c1", "type": "message.new", "payload": {}}
    status, body = gateway.http("POST", "/publish", event, {"Authorization": f"Bearer {KEY}"})
    assert status == 202, body
    assert (await bob.expect("message.new"))["seq"] == body["seq"]
    assert [f for f in await a1.silent(0.3) if f["type"] == "message.new"] == []

    run = cli(gateway, "disconnect", "--user", "alice", "--reason", "account closed")
    assert run.returncode == 0, run.stderr
    for client in (a1, a2):
        assert await client.closed() == (4010, "account closed")
    await bob.silent(0.2)
    assert bob.ws.close_code is None  # bob stays
    await bob.close()


@pytest.mark.parametrize("shared", ["embedded", "redis"])
async def test_disconnect_ends_sessions_whose_connection_had_already_closed(
        shared: str, start_gateway: Callable[..., GatewayProcess], request: pytest.FixtureRequest) -> None:
    """CONTRACT §2 ``POST /disconnect``: its sessions can no longer be resumed, also those of
    connections closed before the call (which no instance holds any more); with Redis, the
    call goes to the other instance than the one the session was on."""
    if shared == "redis":
        where = {"REDIS_HOST": request.getfixturevalue("redis_host"),
                 "prefix": request.getfixturevalue("redis_prefix")}
        first, second = (start_gateway(PUBLISH_API_KEY=KEY, **where) for _ in range(2))
    else:
        first = second = start_gateway(PUBLISH_API_KEY=KEY)
    sessions = {}
    for user in ("alice", "bob"):
        client = await Client.connect(first)
        sessions[user] = (await client.auth(user))["session_id"]
        await client.subscribe("c1")
        await client.close()  # a normal close: resumable within resume_window_s
    status, _ = second.http("POST", "/disconnect", {"user_id": "alice"}, {"Authorization": f"Bearer {KEY}"})
    assert status == 202
    for user, resumed in (("alice", False), ("bob", True)):
        again = await Client.connect(first)
        answer = await again.auth(user, session_id=sessions[user], last_seq=0)
        assert (answer["resumed"], answer["conversation_ids"]) == (resumed, ["c1"] if resumed else []), user
        await again.close()


def test_cli_refuses_bad_flags_with_exit_2(gateway: GatewayProcess) -> None:
    for args in (("unsubscribe", "--user", "alice"), ("unsubscribe", "--user", "a b", "--conversation", "c1"),
                 ("disconnect",)):
        run = cli(gateway, *args)
        assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, run.stderr


@pytest.mark.parametrize(("path", "body", "named"), [
    ("/unsubscribe", [], "JSON object"),
    ("/unsubscribe", {"conversation_ids": ["c1"]}, "user_id"),
    ("/unsubscribe", {"user_id": "alice"}, "conversation_ids"),
    ("/unsubscribe", {"user_id": "alice", "conversation_ids": []}, "conversation_ids"),
    ("/unsubscribe", {"user_id": "alice", "conversation_ids": ["c 1"]}, "conversation_ids"),
    ("/disconnect", {"user_id": "conv:*"}, "user_id"),
    ("/disconnect", {"user_id": "alice", "reason": 5}, "reason"),
    ("/disconnect", {"user_id": "alice", "reason": "x" * 124}, "reason"),
    ("/publish", {"channel": "user:alice", "type": "gw.disconnect", "payload": {}}, "gw."),
])
def test_server_api_refuses_bad_bodies_with_400_naming_the_field(
        gateway: GatewayProcess, path: str, body: object, named: str) -> None:
    status, answer = gateway.http("POST", path, body)
    assert status == 400 and named in answer["error"], answer


def test_server_api_is_authorized_like_publish(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(PUBLISH_API_KEY=KEY)
    body = {"user_id": "alice", "reason": "x"}
    assert gateway.http("POST", "/disconnect", body)[0] == 401
    assert gateway.http("POST", "/disconnect", body, {"Authorization": f"Bearer {KEY}x"})[0] == 401
    assert gateway.http("POST", "/disconnect", body, {"Authorization": f"Bearer {KEY}"})[0] == 202
    production = start_gateway(MODE="production", authorization="none")
    assert production.http("POST", "/unsubscribe", {"user_id": "a", "conversation_ids": ["c"]})[0] == 404


async def test_connections_over_the_cap_are_closed_4011_after_auth(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(max_connections_per_user=2)
    kept = [await joined(gateway, "alice") for _ in range(2)]
    extra = await Client.connect(gateway)
    await extra.auth("alice")
    assert (await extra.closed())[0] == 4011
    await kept[0].close()
    freed = await Client.connect(gateway)
    await freed.auth("alice")
    assert await freed.silent(0.3) == [] and freed.ws.close_code is None
    for client in (kept[1], freed):
        await client.close()


async def test_a_token_within_the_leeway_is_closed_at_exp_plus_leeway_not_at_exp(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    """Issue 9 item 9: auth.success and then 4003 on the next tick can no longer happen."""
    gateway = start_gateway(jwt_leeway_s=2)
    client = await Client.connect(gateway)
    await client.auth("alice", token=token("alice", ttl_s=0.5))
    started = time.monotonic()
    assert await client.closed(timeout=2 * T) == (4003, "token expired")
    assert time.monotonic() - started >= 1.5  # at exp + leeway, not at exp


def test_start_up_refuses_mixed_algorithms_and_a_short_production_secret(
        start_gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    pem.write_text(key_pair("ES256").public_pem)
    mixed = {"jwt_algorithms": "HS256,ES256", "jwt_public_key": str(pem)}
    short = {"MODE": "production", "JWT_SECRET": "short", "authorization": "none"}
    for settings, named in ((mixed, "jwt_algorithms"), (short, "jwt_secret")):
        gateway = start_gateway(wait=False, **settings)
        assert gateway.wait_exit() == 2
        lines = gateway.logs().strip().splitlines()
        assert len(lines) == 1 and named in lines[0], lines


async def test_a_pem_key_from_a_path_verifies_its_tokens(
        start_gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    pair = key_pair("ES384")
    pem = tmp_path / "key.pem"
    pem.write_text(pair.public_pem)
    gateway = start_gateway(jwt_algorithms="ES384", jwt_public_key=str(pem), jwt_audience="chat")
    client = await Client.connect(gateway)
    assert (await client.auth("alice", token=pair.token("alice", aud="chat")))["user_id"] == "alice"
    refused = await Client.connect(gateway)
    await refused.send("auth", {"token": pair.token("alice", aud="other")})
    assert (await refused.next())["type"] == "auth.error"
    assert (await refused.closed())[0] == 4001
    await client.close()


async def test_jwks_tokens_of_every_kind_rotation_and_an_outage(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    pairs = [key_pair(algorithm, f"kid-{algorithm}") for algorithm in ALGORITHMS]
    server = JwksServer(*pairs).start()
    try:
        gateway = start_gateway(jwt_algorithms=",".join(ALGORITHMS), jwt_jwks_url=server.url,
                                jwt_issuer="https://idp.test/", jwks_refetch_interval_s=1)
        for pair in pairs:  # each token kind, keys fetched at start-up
            client = await Client.connect(gateway)
            got = await client.auth(pair.algorithm, token=pair.token(pair.algorithm, iss="https://idp.test/"))
            assert got["user_id"] == pair.algorithm
            await client.close()

        rotated = key_pair("RS256", "kid-rotated")
        server.keys = [*pairs, rotated]
        await asyncio.sleep(1.1)
        client = await Client.connect(gateway)  # an unknown kid fetches the keys again
        await client.send("auth", {"token": rotated.token("carol", iss="https://idp.test/")})
        await client.send("subscribe", {"conversation_ids": ["c1"]})  # held until the keys are in
        assert [(await client.next())["type"] for _ in range(2)] == ["auth.success", "subscribed"]
        await client.close()

        server.stop()  # outage: cached keys keep working, a new kid fails fast
        await asyncio.sleep(1.1)
        cached = await Client.connect(gateway)
        assert (await cached.auth("dave", token=pairs[0].token("dave", iss="https://idp.test/")))["user_id"]
        unknown = await Client.connect(gateway)
        started = time.monotonic()
        await unknown.send("auth", {"token": key_pair("ES256", "kid-new").token("eve", iss="https://idp.test/")})
        frame = await unknown.next(timeout=2 * T)
        assert frame["type"] == "auth.error" and time.monotonic() - started < 6
        assert (await unknown.closed())[0] == 4001
        await cached.close()
    finally:
        server.stop()
