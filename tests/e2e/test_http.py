"""The HTTP endpoints of CONTRACT §2 as an operator and an API server see them."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.harness import Client, GatewayProcess, T, async_wait_until

pytestmark = pytest.mark.e2e
EVENT = {"channel": "conv:c1", "type": "message.new", "payload": {"conversation_id": "c1"}}


def _health(gateway: GatewayProcess) -> Any:
    status, body = gateway.http("GET", "/health")
    assert status == 200
    return body


async def _connections_become(gateway: GatewayProcess, count: int) -> None:
    await async_wait_until(lambda: _health(gateway) == {"status": "ok", "connections": count},
                           f"/health to report {count} connections")


def test_root_answers_the_seed_json(gateway: GatewayProcess) -> None:
    assert gateway.http("GET", "/") == (200, {"service": "WebSocket Gateway", "status": "ok"})


def test_ready_is_200_on_a_running_embedded_gateway(gateway: GatewayProcess) -> None:
    status, _ = gateway.http("GET", "/ready")
    assert status == 200


async def test_health_counts_open_connections_authenticated_or_not(gateway: GatewayProcess) -> None:
    assert _health(gateway) == {"status": "ok", "connections": 0}
    anonymous = await Client.connect(gateway)
    await _connections_become(gateway, 1)
    alice = await Client.connect(gateway)
    await alice.auth("alice")
    await _connections_become(gateway, 2)
    await anonymous.close()
    await _connections_become(gateway, 1)
    await alice.close()
    await _connections_become(gateway, 0)


async def test_metrics_count_connections_frames_by_type_and_close_codes(gateway: GatewayProcess) -> None:
    alice = await Client.connect(gateway)
    await alice.auth("alice")
    await alice.send("ping")
    await alice.expect("pong")
    intruder = await Client.connect(gateway)
    await intruder.send("auth", {"token": "not-a-jwt"})
    assert (await intruder.closed())[0] == 4001
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=T) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    assert "# TYPE gateway_connections gauge" in text
    assert "# TYPE gateway_frames_in_total counter" in text
    await async_wait_until(lambda: gateway.metric("gateway_connections") == 1, "one open connection")
    assert gateway.metric("gateway_frames_in_total", type="auth") == 2
    assert gateway.metric("gateway_frames_in_total", type="ping") == 1
    assert gateway.metric("gateway_frames_out_total", type="auth.success") == 1
    assert gateway.metric("gateway_frames_out_total", type="auth.error") == 1
    assert gateway.metric("gateway_frames_out_total", type="pong") == 1
    assert gateway.metric("gateway_closes_total", code="4001") == 1
    await alice.close()


async def test_metrics_label_application_event_types_from_a_fixed_set(gateway: GatewayProcess) -> None:
    """One time series per event type ever published would grow for ever (issue 9 §7)."""
    alice = await Client.connect(gateway)
    await alice.auth("alice")
    await alice.subscribe("c1")
    for n in range(3):
        kind = f"app.event.{n}"
        assert gateway.http("POST", "/publish", {**EVENT, "type": kind})[0] == 202
        await alice.expect(kind)
    assert gateway.http("POST", "/publish", EVENT)[0] == 202
    await alice.expect("message.new")
    assert gateway.metric("gateway_frames_out_total", type="other") == 3
    assert gateway.metric("gateway_frames_out_total", type="message.new") == 1
    _, text = gateway.http("GET", "/metrics")
    assert "app.event" not in str(text)
    await alice.close()


async def test_publish_answers_202_with_increasing_seq_and_delivers(gateway: GatewayProcess) -> None:
    alice = await Client.connect(gateway)
    await alice.auth("alice")
    await alice.subscribe("c1")
    assert gateway.http("POST", "/publish", EVENT) == (202, {"seq": 1})
    to_user = {"channel": "user:alice", "type": "notice", "payload": {"n": 2}}
    assert gateway.http("POST", "/publish", to_user) == (202, {"seq": 2})
    assert await alice.expect("message.new") == {"type": "message.new", "payload": EVENT["payload"], "seq": 1}
    assert await alice.expect("notice") == {"type": "notice", "payload": {"n": 2}, "seq": 2}
    await alice.close()


def test_publish_with_a_key_needs_the_right_bearer(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(PUBLISH_API_KEY="s3cret-key")
    assert gateway.http("POST", "/publish", EVENT)[0] == 401
    assert gateway.http("POST", "/publish", EVENT, {"Authorization": "Bearer wrong"})[0] == 401
    assert gateway.http("POST", "/publish", EVENT, {"Authorization": "s3cret-key"})[0] == 401
    right = {"Authorization": "Bearer s3cret-key"}
    assert gateway.http("POST", "/publish", EVENT, right) == (202, {"seq": 1})


def test_publish_without_a_key_in_production_is_disabled(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MODE="production", authorization="none")
    assert gateway.http("POST", "/publish", EVENT)[0] == 404
    assert gateway.http("POST", "/publish", EVENT, {"Authorization": "Bearer anything"})[0] == 404


BAD_BODIES: list[tuple[str, Any]] = [
    ("not JSON", b"{channel"),
    ("a list", [EVENT]),
    ("a string", "conv:c1"),
    ("channel with a pattern", {**EVENT, "channel": "conv:a*b"}),
    ("channel of no known kind", {**EVENT, "channel": "x:1"}),
    ("channel missing", {"type": "message.new", "payload": {}}),
    ("type missing", {"channel": "conv:c1", "payload": {}}),
    ("type empty", {**EVENT, "type": ""}),
    ("type reserved for presence", {**EVENT, "type": "presence.transition"}),
    ("payload a list", {**EVENT, "payload": [1, 2]}),
    ("payload missing", {"channel": "conv:c1", "type": "message.new"}),
]


def test_publish_refuses_bad_bodies_with_400_and_a_message(gateway: GatewayProcess) -> None:
    answers = {name: gateway.http("POST", "/publish", body) for name, body in BAD_BODIES}
    wrong = {name: answer for name, answer in answers.items()
             if answer[0] != 400 or not isinstance(answer[1], dict) or not answer[1].get("error")}
    assert wrong == {}
    # nothing was appended: the next good event is the first one
    assert gateway.http("POST", "/publish", EVENT) == (202, {"seq": 1})
