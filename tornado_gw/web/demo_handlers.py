"""``/demo``: a small chat page and the development tokens it needs (development mode only).

``make_app`` adds these routes only when ``mode`` is ``development``, so in
production every one of them is a 404. The page is plain HTML/CSS/JS over the
browser client ``clients/js/tornado-gw.js`` (served from the source tree, where
development happens) and sends messages through ``POST /publish``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tornado.web import HTTPError, RequestHandler, StaticFileHandler

from tornado_gw import codec
from tornado_gw.core.ids import is_valid_id
from tornado_gw.settings import Settings
from tornado_gw.web.auth import mint_token
from tornado_gw.web.http_handlers import LOOPBACK

PAGE_DIR = Path(__file__).with_name("demo")
CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "js"
DEV_TOKEN_TTL_S = 600.0  # short: the page refreshes it over the live connection


class DemoFileHandler(StaticFileHandler):
    """The page's files; ``.js`` as JavaScript, which browsers require of ES modules."""

    def set_extra_headers(self, path: str) -> None:
        if path.endswith(".js"):
            self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")


class DevTokenHandler(RequestHandler):
    """``POST /demo/token {"user_id": U}`` -> ``{"token": JWT}``: loopback callers only."""

    def initialize(self, settings: Settings) -> None:
        self.gateway_settings = settings

    def post(self) -> None:
        if self.request.remote_ip not in LOOPBACK:
            raise HTTPError(403, "development tokens are for loopback callers only")
        try:
            body: Any = codec.decode(self.request.body)
        except codec.DecodeError:
            body = None
        user_id = body.get("user_id") if isinstance(body, dict) else None
        if not isinstance(user_id, str) or not is_valid_id(user_id):
            self.set_status(400)
            self.finish({"error": "'user_id' must be 1-128 letters, digits or -_.:@"})
            return
        settings = self.gateway_settings
        assert settings.jwt_secret is not None  # development mode always has one
        token = mint_token(settings.jwt_secret, user_id, DEV_TOKEN_TTL_S, time.time(),
                           algorithm=settings.jwt_algorithms[0])
        self.finish({"token": token})


def demo_routes(settings: Settings) -> list[tuple[str, type[RequestHandler], dict[str, Any]]]:
    """The routes of ``/demo``; ``make_app`` adds them in development mode only."""
    return [
        (r"/demo/token", DevTokenHandler, {"settings": settings}),
        (r"/demo/(tornado-gw\.js)", DemoFileHandler, {"path": str(CLIENT_DIR)}),
        (r"/demo/?()", DemoFileHandler, {"path": str(PAGE_DIR), "default_filename": "index.html"}),
        (r"/demo/(.+)", DemoFileHandler, {"path": str(PAGE_DIR)}),
    ]
