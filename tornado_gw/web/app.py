"""``make_app``: routes and Tornado settings; dependencies arrive as contexts."""

from __future__ import annotations

from tornado.web import Application

from tornado_gw.web.http_handlers import (
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
    return Application(
        [
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
