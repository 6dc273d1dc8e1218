"""``/demo`` and its development tokens: served in development mode, 404 in production."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.harness import SECRET, GatewayProcess
from tornado_gw.web.auth import verify_token

pytestmark = pytest.mark.e2e


def test_development_mode_serves_the_page_the_client_and_tokens(gateway: GatewayProcess) -> None:
    status, page = gateway.http("GET", "/demo/")
    assert status == 200 and '<script type="module" src="/demo/demo.js">' in page
    status, module = gateway.http("GET", "/demo/tornado-gw.js")
    assert status == 200 and "export class Client" in module
    status, body = gateway.http("POST", "/demo/token", {"user_id": "alice"})
    assert status == 200
    claims = verify_token(body["token"], secret=SECRET, algorithms=("HS256",), leeway_s=0, require_exp=True,
                          now=time.time())
    assert claims.user_id == "alice" and claims.expires_at is not None
    status, body = gateway.http("POST", "/demo/token", {"user_id": "no spaces"})
    assert status == 400 and "user_id" in body["error"]


def test_production_mode_has_no_demo_and_no_development_tokens(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MODE="production", authorization="none")
    for method, path, body in (("GET", "/demo/", None), ("GET", "/demo/tornado-gw.js", None),
                               ("POST", "/demo/token", {"user_id": "alice"})):
        assert gateway.http(method, path, body)[0] == 404, path
