"""The HTTP endpoints of CONTRACT §2 besides ``/ws``.

``/publish``, ``/unsubscribe`` and ``/disconnect`` are the server API: one key
rule (``PUBLISH_API_KEY``, compared in constant time), one body reader, a 4xx
that names what is wrong. ``/unsubscribe`` and ``/disconnect`` travel to every
instance through the broker, on the user's channel (``core/access.py`` rule 2).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado.web import RequestHandler

from tornado_gw import codec, metrics
from tornado_gw.core import frames
from tornado_gw.core.access import MAX_CLOSE_REASON_BYTES
from tornado_gw.core.ids import is_valid_channel, is_valid_id, user_channel
from tornado_gw.core.protocol import FrameType
from tornado_gw.ports import DependencyUnavailable, Publisher
from tornado_gw.runtime.trail import Trail
from tornado_gw.settings import Settings

log = logging.getLogger(__name__)
MAX_PUBLISH_BYTES = 65536
LOOPBACK = frozenset({"127.0.0.1", "::1"})
MAX_SERVER_CONVERSATIONS = 1000
RESERVED_TYPE_PREFIX = "gw."
Check = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class HttpContext:
    settings: Settings
    connections: Callable[[], int]
    checks: Mapping[str, Check]  # one per configured dependency: "redis", "postgres"
    is_draining: Callable[[], bool]
    publisher: Publisher
    broadcast: Callable[[str, bytes], Awaitable[None]]  # the broker's publish: every instance
    end_sessions: Callable[[str], Awaitable[None]]  # the session store's delete_user (one, shared)
    trail: Trail | None = None  # development mode: the debug window


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


class DebugSessionHandler(_JsonHandler):
    """``GET /debug/sessions/{session_id}``: the session's state and last events
    (development mode only; the route does not exist in production)."""

    def get(self, session_id: str) -> None:
        trail = self.context.trail
        view = None if trail is None else trail.view(session_id)
        if view is None:
            self.reply(404, {"error": f"no session {session_id} on this instance"})
        else:
            self.reply(200, view)


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


class _ServerApiHandler(_JsonHandler):
    """The key rule of CONTRACT §2 ``/publish``, shared by the server API; then a JSON body."""

    def prepare(self) -> None:
        settings = self.context.settings
        key = settings.publish_api_key
        if key is None:
            if settings.mode == "production":
                self.reply(404, {"error": "the server API is disabled: set PUBLISH_API_KEY"})
            elif self.request.remote_ip not in LOOPBACK:
                self.reply(403, {"error": "without PUBLISH_API_KEY only loopback callers may call this"})
            return
        given = self.request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            self.set_header("WWW-Authenticate", "Bearer")
            self.reply(401, {"error": "missing or wrong bearer key"})

    def json_body(self, problem: Callable[[Any], str | None]) -> Any:
        """The decoded body, or None once a 4xx naming the problem was sent."""
        if len(self.request.body) > MAX_PUBLISH_BYTES:
            self.reply(413, {"error": f"body over {MAX_PUBLISH_BYTES} bytes"})
            return None
        try:
            body = codec.decode(self.request.body)
        except codec.DecodeError as exc:
            self.reply(400, {"error": f"invalid JSON: {exc}"})
            return None
        found = problem(body)
        if found:
            self.reply(400, {"error": found})
            return None
        return body

    async def to_user(self, user_id: str, frame: Mapping[str, Any],
                      then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Through the broker to every instance with a connection of ``user_id``, then
        ``then``: 202 once both are done, or 503 naming the dependency that failed."""
        try:
            await self.context.broadcast(user_channel(user_id), codec.encode(frame))
            if then is not None:
                await then()
        except DependencyUnavailable as exc:
            self.reply(503, {"error": str(exc)})
            return
        self.reply(202, {})


class PublishHandler(_ServerApiHandler):
    """Server-side publish (CONTRACT §2): key rules, then the configured publisher."""

    async def post(self) -> None:
        body = self.json_body(_publish_problem)
        if body is None:
            return
        try:
            result = await self.context.publisher.publish(body["channel"], body["type"], body["payload"])
        except DependencyUnavailable as exc:
            self.reply(503, {"error": str(exc)})
            return
        self.reply(202, result)


class UnsubscribeHandler(_ServerApiHandler):
    """CONTRACT §2 ``POST /unsubscribe``: every connection of the user leaves the conversations."""

    async def post(self) -> None:
        body = self.json_body(_unsubscribe_problem)
        if body is not None:
            await self.to_user(body["user_id"], frames.server_unsubscribe(body["conversation_ids"]))


class DisconnectHandler(_ServerApiHandler):
    """CONTRACT §2 ``POST /disconnect``: every connection of the user closes with 4010, and
    none of the user's sessions can be resumed any more.

    The open connections end their own sessions as ``gw.disconnect`` reaches them; the
    sessions of connections already closed have no instance to do it, so the handler
    deletes every session of the user from the shared store itself, once, after the
    publish (so a connection that closed while the message was on its way has most likely
    saved its snapshot by then; one closing in those milliseconds may still save after)."""

    async def post(self) -> None:
        body = self.json_body(_disconnect_problem)
        if body is not None:
            user_id = body["user_id"]
            await self.to_user(user_id, frames.server_disconnect(body.get("reason", "")),
                               then=lambda: self.context.end_sessions(user_id))


_USER_ID = "'user_id' must be an id of 1-128 letters, digits or -_.:@"


def _unsubscribe_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not is_valid_id(body.get("user_id")):
        return _USER_ID
    ids = body.get("conversation_ids")
    if not isinstance(ids, list) or not 0 < len(ids) <= MAX_SERVER_CONVERSATIONS \
            or not all(is_valid_id(cid) for cid in ids):
        return (f"'conversation_ids' must be a list of 1-{MAX_SERVER_CONVERSATIONS} conversation ids "
                "(1-128 letters, digits or -_.:@)")
    return None


def _disconnect_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not is_valid_id(body.get("user_id")):
        return _USER_ID
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason.encode()) > MAX_CLOSE_REASON_BYTES:
        return f"'reason' must be a string of at most {MAX_CLOSE_REASON_BYTES} bytes (a close frame's limit)"
    return None


def _publish_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not is_valid_channel(body.get("channel")):
        return "'channel' must be 'conv:<id>' or 'user:<id>' (ids: 1-128 of letters, digits, -_.:@)"
    kind = body.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= 128:
        return "'type' must be a non-empty string of at most 128 characters"
    if kind == FrameType.PRESENCE_TRANSITION.value:
        return f"'type' {kind} is reserved: the gateways' presence stores publish it"
    if kind.startswith(RESERVED_TYPE_PREFIX):
        return f"'type' {RESERVED_TYPE_PREFIX}* is the gateway's own: see POST /unsubscribe and /disconnect"
    if not isinstance(body.get("payload"), dict):
        return "'payload' must be a JSON object"
    return None
