"""The HTTP endpoints of CONTRACT §2 besides ``/ws``."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado.web import RequestHandler

from tornado_gw import codec, metrics
from tornado_gw.core.ids import is_valid_channel
from tornado_gw.ports import DependencyUnavailable, Publisher
from tornado_gw.settings import Settings

log = logging.getLogger(__name__)
MAX_PUBLISH_BYTES = 65536
LOOPBACK = frozenset({"127.0.0.1", "::1"})
Check = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class HttpContext:
    settings: Settings
    connections: Callable[[], int]
    checks: Mapping[str, Check]  # one per configured dependency: "redis", "postgres"
    is_draining: Callable[[], bool]
    publisher: Publisher


class _JsonHandler(RequestHandler):
    def initialize(self, context: HttpContext) -> None:
        self.context = context

    def reply(self, status: int, body: Mapping[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(codec.encode(body))

    async def run_checks(self) -> dict[str, str]:
        results = {}
        for name, check in self.context.checks.items():
            try:
                results[name] = "ok" if await check() else "unreachable"
            except Exception as exc:
                log.debug("! health check %s failed: %s", name, exc)
                results[name] = "unreachable"
        return results


class RootHandler(_JsonHandler):
    def get(self) -> None:
        self.reply(200, {"service": "WebSocket Gateway", "status": "ok"})


class HealthHandler(_JsonHandler):
    """Liveness: always 200; ``degraded`` names the unreachable dependency."""

    async def get(self) -> None:
        checks = await self.run_checks()
        body: dict[str, Any] = {
            "status": "ok" if all(v == "ok" for v in checks.values()) else "degraded",
            "connections": self.context.connections(),
        }
        if checks:
            body["checks"] = checks
        self.reply(200, body)


class ReadyHandler(_JsonHandler):
    """Readiness: 503 while draining or while a dependency is unreachable."""

    async def get(self) -> None:
        if self.context.is_draining():
            self.reply(503, {"status": "draining"})
            return
        checks = await self.run_checks()
        ready = all(v == "ok" for v in checks.values())
        self.reply(200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})


class MetricsHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(metrics.REGISTRY))


class PublishHandler(_JsonHandler):
    """Server-side publish (CONTRACT §2): key rules, then the configured publisher."""

    def prepare(self) -> None:
        settings = self.context.settings
        key = settings.publish_api_key
        if key is None:
            if settings.mode == "production":
                self.reply(404, {"error": "publishing is disabled: set PUBLISH_API_KEY"})
            elif self.request.remote_ip not in LOOPBACK:
                self.reply(403, {"error": "without PUBLISH_API_KEY only loopback callers may publish"})
            return
        given = self.request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            self.set_header("WWW-Authenticate", "Bearer")
            self.reply(401, {"error": "missing or wrong bearer key"})

    async def post(self) -> None:
        if len(self.request.body) > MAX_PUBLISH_BYTES:
            self.reply(413, {"error": f"body over {MAX_PUBLISH_BYTES} bytes"})
            return
        try:
            body = codec.decode(self.request.body)
        except codec.DecodeError as exc:
            self.reply(400, {"error": f"invalid JSON: {exc}"})
            return
        problem = _publish_problem(body)
        if problem:
            self.reply(400, {"error": problem})
            return
        try:
            result = await self.context.publisher.publish(body["channel"], body["type"], body["payload"])
        except DependencyUnavailable as exc:
            self.reply(503, {"error": str(exc)})
            return
        self.reply(202, result)


def _publish_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not is_valid_channel(body.get("channel")):
        return "'channel' must be 'conv:<id>' or 'user:<id>' (ids: 1-128 of letters, digits, -_.:@)"
    kind = body.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= 128:
        return "'type' must be a non-empty string of at most 128 characters"
    if not isinstance(body.get("payload"), dict):
        return "'payload' must be a JSON object"
    return None
