"""Hostile input never kills a connection silently and never touches anyone else (issue 2 §8).

Every test keeps a well-behaved ``bystander`` on the same gateway and checks,
after the attack, that it still receives what is published to it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
import time
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import ujson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.harness import SECRET, Client, GatewayProcess, T, raw_upgrade
from tornado_gw.web.auth import mint_token

pytestmark = pytest.mark.e2e


class Bystander:
    """A client minding its own business in conversation ``calm``."""

    def __init__(self, gateway: GatewayProcess, client: Client, headers: dict[str, str]) -> None:
        self.gateway = gateway
        self.client = client
        self.headers = headers

    @classmethod
    async def join(cls, gateway: GatewayProcess, publish_key: str | None = None) -> Bystander:
        client = await Client.connect(gateway)
        await client.auth("bystander")
        await client.subscribe("calm")
        return cls(gateway, client, {"Authorization": f"Bearer {publish_key}"} if publish_key else {})

    async def still_served(self) -> None:
        event = {"channel": "conv:calm", "type": "message.new", "payload": {"conversation_id": "calm"}}
        status, body = self.gateway.http("POST", "/publish", event, self.headers)
        assert status == 202
        assert (await self.client.expect("message.new"))["seq"] == body["seq"]
        await self.client.close()


async def _attacker(gateway: GatewayProcess) -> Client:
    client = await Client.connect(gateway)
    await client.auth("mallory")
    return client


async def _errors_for(client: Client, frames: dict[str, str]) -> dict[str, tuple[str, Any]]:
    """Send each raw frame; the (code, ref_type) of the error each one gets."""
    seen = {}
    for name, raw in frames.items():
        await client.send_raw(raw)
        payload = (await client.expect("error"))["payload"]
        assert isinstance(payload["message"], str) and payload["message"], name
        seen[name] = (payload["code"], payload["ref_type"])
    return seen


async def _still_alive(client: Client) -> None:
    await client.send("ping")
    assert (await client.expect("pong"))["type"] == "pong"
    await client.close()


async def test_deeply_nested_json_is_an_error_not_a_crash(gateway: GatewayProcess) -> None:
    bystander = await Bystander.join(gateway)
    client = await _attacker(gateway)
    seen = await _errors_for(client, {
        "unclosed arrays": "[" * 8000,
        "nested objects": '{"a":' * 1300 + "1" + "}" * 1300,
        "nested payload": '{"type":"ping","payload":' + "[" * 3000 + "]" * 3000 + "}",
    })
    assert seen["unclosed arrays"] == ("invalid_json", None)
    assert {code for code, _ in seen.values()} <= {"invalid_json", "invalid_message"}
    await _still_alive(client)
    await bystander.still_served()


async def test_huge_numbers_are_an_error_not_a_crash(gateway: GatewayProcess) -> None:
    bystander = await Bystander.join(gateway)
    client = await _attacker(gateway)
    subscribe = '{"type":"subscribe","payload":{"conversation_ids":["c1"],"last_seq":%s}}'
    seen = await _errors_for(client, {
        "infinite float": subscribe % "1e999999",
        "minus infinity": subscribe % "-1e999999",
        "30 digits": subscribe % "123456789012345678901234567890",
        "negative": subscribe % "-1",
        "5000 digits": '{"type":"ping","payload":{"n":' + "9" * 5000 + "}}",
    })
    assert {code for code, _ in seen.values()} <= {"invalid_json", "invalid_message"}
    assert seen["30 digits"] == ("invalid_message", "subscribe")
    await _still_alive(client)
    await bystander.still_served()


async def test_json_that_is_not_an_object_is_invalid_message(gateway: GatewayProcess) -> None:
    bystander = await Bystander.join(gateway)
    client = await _attacker(gateway)
    kinds = ["[]", '"x"', "3", "null", "true", "{}", '{"payload": {}}']
    seen = await _errors_for(client, {raw: raw for raw in kinds})
    assert seen == {raw: ("invalid_message", None) for raw in kinds}
    await _still_alive(client)
    await bystander.still_served()


async def test_wrong_field_types_are_invalid_message(gateway: GatewayProcess) -> None:
    bystander = await Bystander.join(gateway)
    client = await _attacker(gateway)
    frames = {
        "ids a string": ("subscribe", {"conversation_ids": "c1"}),
        "ids empty": ("subscribe", {"conversation_ids": []}),
        "id a number": ("subscribe", {"conversation_ids": [1]}),
        "id with a pattern": ("subscribe", {"conversation_ids": ["a*b"]}),
        "id of 200 characters": ("subscribe", {"conversation_ids": ["c" * 200]}),
        "id with a space": ("unsubscribe", {"conversation_ids": ["a b"]}),
        "payload a list": ("subscribe", ["c1"]),
        "payload a string": ("typing", "c1"),
        "conversation_id a number": ("typing", {"conversation_id": 5}),
        "conversation_id missing": ("presence.query", {}),
        "token a number": ("auth", {"token": 123}),
    }
    seen = await _errors_for(client, {name: ujson.dumps({"type": kind, "payload": payload})
                                      for name, (kind, payload) in frames.items()})
    assert seen == {name: ("invalid_message", kind) for name, (kind, _) in frames.items()}
    await _still_alive(client)
    await bystander.still_served()


async def test_lone_surrogates_and_non_string_types_are_errors_not_drops(gateway: GatewayProcess) -> None:
    """Each of these used to drop the connection with a traceback (issue 9 §13)."""
    bystander = await Bystander.join(gateway)
    client = await Client.connect(gateway)  # no auth needed to try any of them
    seen = await _errors_for(client, {
        "surrogate type": '{"type": "\\ud800"}',
        "surrogate key": '{"type": "ping", "payload": {"\\udfff": 1}}',
        "surrogate token": '{"type": "auth", "payload": {"token": "\\ud800"}}',
        "type a list": '{"type": ["auth"]}',
        "type an object": '{"type": {"auth": 1}}',
        "NaN last_seq": '{"type": "subscribe", "payload": {"conversation_ids": ["c1"], "last_seq": NaN}}',
    })
    assert seen == {
        "surrogate type": ("invalid_json", None), "surrogate key": ("invalid_json", None),
        "surrogate token": ("invalid_json", None), "type a list": ("invalid_message", None),
        "type an object": ("invalid_message", None), "NaN last_seq": ("invalid_json", None),
    }
    await _still_alive(client)
    await bystander.still_served()
    assert "Traceback" not in gateway.logs()


@pytest.mark.parametrize("body", [
    b'{"channel": "conv:calm", "type": "message.new", "payload": {"n": NaN}}',
    b'{"channel": "conv:calm", "type": "message.new", "payload": {"n": [Infinity]}}',
    b'{"channel": "conv:calm", "type": "message.new", "payload": {"n": -1e999}}',
    b'{"channel": "conv:calm", "type": "\\ud800", "payload": {}}',
    b'{"channel": "conv:calm", "type": "message.new", "payload": {"\\udc00": "x"}}',
])
async def test_publish_refuses_what_browsers_cannot_parse(gateway: GatewayProcess, body: bytes) -> None:
    """``JSON.parse`` throws on NaN/Infinity: such a body is a 400, and nothing reaches clients."""
    bystander = await Bystander.join(gateway)
    status, answer = gateway.http("POST", "/publish", body)
    assert status == 400 and "invalid JSON" in answer["error"]
    assert [f for f in await bystander.client.silent(0.2) if f["type"] == "message.new"] == []
    await bystander.still_served()


async def test_unknown_fields_are_ignored(gateway: GatewayProcess) -> None:
    bystander = await Bystander.join(gateway)
    client = await _attacker(gateway)
    await client.send_raw(ujson.dumps({"type": "subscribe", "id": 42, "meta": [1],
                                       "payload": {"conversation_ids": ["c1"], "extra": {"x": 1}}}))
    assert (await client.expect("subscribed"))["payload"]["conversation_ids"] == ["c1"]
    await client.send_raw('{"type": "ping", "payload": {"extra": 1}, "v": 2}')
    assert (await client.expect("pong"))["payload"] == {}
    assert [f for f in client.received if f["type"] == "error"] == []
    await client.close()
    await bystander.still_served()


async def test_invalid_utf8_in_a_text_frame_closes_1007(gateway: GatewayProcess) -> None:
    bystander = await Bystander.join(gateway)
    client = await _attacker(gateway)
    await client.ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
    assert (await client.closed())[0] == 1007
    await bystander.still_served()


def _frame(first_byte: int, payload: bytes, masked: bool = True, length: bytes | None = None) -> bytes:
    """A raw client frame; ``length`` overrides the encoded payload length."""
    mask = os.urandom(4) if masked else b""
    if length is None:
        length = bytes([len(payload)]) if len(payload) < 126 else b"\x7e" + struct.pack("!H", len(payload))
    length = bytes([length[0] | (0x80 if masked else 0)]) + length[1:]
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if masked else payload
    return bytes([first_byte]) + length + mask + body


RFC6455_MUST_FAIL = {  # RFC 6455 §5: a server must fail the connection on each of these
    "unmasked frame (5.1)": _frame(0x81, b'{"type":"ping"}', masked=False),
    "reserved bit set (5.2)": _frame(0x81 | 0x40, b'{"type":"ping"}'),
    "unknown opcode 0x3 (5.2)": _frame(0x83, b"x"),
    "control frame over 125 bytes (5.5)": _frame(0x89, b"p" * 126),
    "fragmented control frame (5.5)": _frame(0x09, b"p"),
    "continuation without a start (5.4)": _frame(0x80, b'{"type":"ping"}'),
    "64-bit length with the top bit set (5.2)": _frame(0x81, b"", length=b"\x7f" + b"\x80" + b"\x00" * 7),
}


@pytest.mark.parametrize("name", list(RFC6455_MUST_FAIL))
async def test_frames_rfc6455_says_a_server_must_refuse_end_only_that_connection(
        gateway: GatewayProcess, name: str) -> None:
    bystander = await Bystander.join(gateway)
    reader, writer = await raw_upgrade(gateway)
    writer.write(RFC6455_MUST_FAIL[name])
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), T)  # until the server closes the TCP connection
    assert b"pong" not in rest
    if rest:  # a close frame (opcode 0x8) may come first; nothing else may
        assert rest[0] == 0x88, rest
    writer.close()
    await bystander.still_served()
    assert "Traceback" not in gateway.logs()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A JWT signed by hand: PyJWT itself refuses some of the keys attackers use."""
    signing_input = _b64(ujson.dumps(header).encode()) + "." + _b64(ujson.dumps(claims).encode())
    return signing_input + "." + _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def _claims() -> dict[str, Any]:
    return {"sub": "mallory", "iat": int(time.time()), "exp": int(time.time()) + 3600}


def _rsa_pems() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return private_pem, public_pem


def _exp_as_string() -> str:
    return jwt.encode({**_claims(), "exp": str(int(time.time()) + 3600)}, SECRET, algorithm="HS256")


def _alg_none() -> str:
    return jwt.encode(_claims(), None, algorithm="none")


def _alg_none_signed() -> str:
    return _hs256({"alg": "none", "typ": "JWT"}, _claims(), SECRET.encode())


def _hs256_with_rsa_public_key() -> str:
    return _hs256({"alg": "HS256", "typ": "JWT"}, _claims(), _rsa_pems()[1])


def _rs256() -> str:
    return jwt.encode(_claims(), _rsa_pems()[0], algorithm="RS256")


def _hs512_when_only_hs256_is_allowed() -> str:
    with warnings.catch_warnings():  # the shared secret is short for HS512; beside the point here
        warnings.simplefilter("ignore")
        return jwt.encode(_claims(), SECRET, algorithm="HS512")


@pytest.mark.parametrize("forge", [_exp_as_string, _alg_none, _alg_none_signed, _hs256_with_rsa_public_key,
                                   _rs256, _hs512_when_only_hs256_is_allowed],
                         ids=lambda forge: forge.__name__.strip("_"))
async def test_forged_tokens_get_auth_error_and_4001(gateway: GatewayProcess,
                                                     forge: Callable[[], str]) -> None:
    bystander = await Bystander.join(gateway)
    client = await Client.connect(gateway)
    await client.send("auth", {"token": forge()})
    assert (await client.next())["type"] == "auth.error"
    assert (await client.closed())[0] == 4001
    await bystander.still_served()


async def test_token_without_exp_is_refused_in_production(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MODE="production", authorization="none", PUBLISH_API_KEY="publish-key")
    bystander = await Bystander.join(gateway, publish_key="publish-key")
    client = await Client.connect(gateway)
    await client.send("auth", {"token": mint_token(SECRET, "mallory", None, time.time())})
    assert (await client.next())["type"] == "auth.error"
    assert (await client.closed())[0] == 4001
    await bystander.still_served()


async def test_token_without_exp_is_accepted_in_development(gateway: GatewayProcess) -> None:
    client = await Client.connect(gateway)
    assert (await client.auth("dev", token=mint_token(SECRET, "dev", None, time.time())))["user_id"] == "dev"
    await _still_alive(client)
