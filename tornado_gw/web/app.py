"""``make_app``: routes and Tornado settings; dependencies arrive as contexts."""

from __future__ import annotations

from tornado.web import Application

from tornado_gw.web.demo_handlers import demo_routes
from tornado_gw.web.http_handlers import (
    DebugSessionHandler,
    DisconnectHandler,
    HealthHandler,
    HttpContext,
    MetricsHandler,
    PublishHandler,
    ReadyHandler,
    RootHandler,
    UnsubscribeHandler,
)
from tornado_gw.web.ws_handler import GatewaySocket, SocketContext


def make_app(http: HttpContext, sockets: SocketContext) -> Application:
    settings = http.settings
    # /demo and its development tokens exist in development mode only (404 in production).
    demo = demo_routes(settings) if settings.mode == "development" else []
    if http.trail is not None:  # development mode only, like /demo
        demo.append((r"/debug/sessions/([^/]+)", DebugSessionHandler, {"context": http}))
    return Application(
        [
            *demo,
            (r"/", RootHandler, {"context": http}),
            (r"/health", HealthHandler, {"context": http}),
            (r"/ready", ReadyHandler, {"context": http}),
            (r"/metrics", MetricsHandler),
            (r"/publish", PublishHandler, {"context": http}),
            (r"/unsubscribe", UnsubscribeHandler, {"context": http}),
            (r"/disconnect", DisconnectHandler, {"context": http}),
            (r"/ws", GatewaySocket, {"context": sockets}),
        ],
        # Tornado closes oversized frames with 1009 itself (CONTRACT §3).
        websocket_max_message_size=settings.max_frame_bytes,
        xheaders=False,
    )
