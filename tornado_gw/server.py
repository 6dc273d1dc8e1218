"""Composition root of ``serve``: build adapters, core, app; listen; drain on SIGTERM.

Shutdown (CONTRACT §3 close 1001): ``/ready`` turns 503 and new upgrades are
refused at once; open connections are closed with 1001 in small batches
spread over ``shutdown_timeout_s`` so their clients do not all reconnect in
the same second; every session is snapshotted on its way out (the
``Disconnect`` path), so clients resume on another instance without presence
flapping; then the queued store writes are flushed and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from dataclasses import fields

from tornado.httpserver import HTTPServer

from tornado_gw import codec
from tornado_gw.adapters.backoff import backoff_s
from tornado_gw.adapters.wiring import Wiring, build_wiring
from tornado_gw.core.commands import CloseRequested, LogHeadKnown
from tornado_gw.core.protocol import CloseCode
from tornado_gw.core.state import Gateway, Limits
from tornado_gw.ports import DependencyUnavailable
from tornado_gw.runtime.clock import now, start_presence_flushing, start_ticking
from tornado_gw.runtime.dispatcher import Dispatcher
from tornado_gw.runtime.effects import EffectRunner
from tornado_gw.runtime.feed import BrokerFeed
from tornado_gw.runtime.slots import SlotKeeper
from tornado_gw.runtime.trail import Trail
from tornado_gw.settings import Settings
from tornado_gw.web.app import make_app
from tornado_gw.web.auth import TokenVerifier
from tornado_gw.web.http_handlers import HttpContext
from tornado_gw.web.writer import SocketRegistry
from tornado_gw.web.ws_handler import SocketContext

log = logging.getLogger(__name__)
DRAIN_SPREAD = 0.8  # share of shutdown_timeout_s over which closes are spread
CLOSE_BATCH_INTERVAL_S = 0.05
LOG_HEAD_TIMEOUT_S = 5.0


def limits_from(settings: Settings) -> Limits:
    """The core's limits carry the settings' names; ``check_membership`` and ``durable_log``
    are derived (the embedded log and Postgres can fill a broker gap; Redis alone cannot)."""
    derived = {"check_membership": settings.authorization == "members",
               "durable_log": settings.postgres_dsn is not None or settings.redis_host is None}
    shared = {f.name: getattr(settings, f.name) for f in fields(Limits) if f.name not in derived}
    return Limits(**shared, **derived)


class GatewayServer:
    """One running gateway: the pieces ``serve`` wires together, and its shutdown."""

    def __init__(self, settings: Settings, wiring: Wiring) -> None:
        self.settings = settings
        self.wiring = wiring
        self.draining = False
        self.dispatcher = Dispatcher(Gateway(limits=limits_from(settings)))
        self.registry = SocketRegistry(self.dispatcher.submit, settings.outbound_buffer_bytes)
        self.slots = SlotKeeper(wiring.slots, self.dispatcher.submit, settings.presence_ttl_s)
        self.runner = EffectRunner(wiring.adapters, self.registry, self.dispatcher.submit,
                                   codec.encode, codec.decode_or_none, self.slots)
        self.dispatcher.attach(self.runner.perform)
        # The debug window exists in development mode only (GET /debug/sessions/{id}).
        self.trail = Trail(self.dispatcher.state) if settings.mode == "development" else None
        if self.trail is not None:
            self.dispatcher.observe = self.trail.observe
        self.http_server: HTTPServer | None = None
        self.verifier = TokenVerifier(settings)  # SettingsError for a bad jwt_public_key

    async def start(self) -> None:
        settings = self.settings
        self.slots.start()
        if self.verifier.jwks is not None:
            await self.verifier.jwks.fetch()  # bounded; tokens of a kid it misses fetch again
        await self.wiring.adapters.broker.start(BrokerFeed(self.dispatcher.submit, codec.decode_or_none))
        app = make_app(
            HttpContext(settings, lambda: len(self.registry.sockets), self.wiring.checks,
                        lambda: self.draining, self.wiring.publisher, self.wiring.adapters.broker.publish,
                        self.wiring.adapters.sessions.delete_user,
                        self.trail),
            SocketContext(settings, self.dispatcher.submit, self.registry, lambda: self.draining,
                          self.verifier),
        )
        # Workers of one supervisor share the port; the kernel spreads connections over them.
        self.http_server = app.listen(settings.port, xheaders=False, reuse_port=settings.workers > 1)
        self.ticker = start_ticking(self.dispatcher.submit, settings.tick_interval_s)
        self.flusher = start_presence_flushing(self.dispatcher.submit, settings.presence_batch_ms)
        self.head_task = asyncio.get_running_loop().create_task(self._learn_log_head())
        log.info("= listening on port %d (%s)", settings.port, self.wiring.description)

    async def _learn_log_head(self) -> None:
        """The gap baseline of an instance that has delivered nothing yet; retried until
        the log answers, so a Redis outage right after start-up is filled too."""
        attempt = 0
        while True:
            try:
                seq = await asyncio.wait_for(self.wiring.adapters.log.head_seq(), LOG_HEAD_TIMEOUT_S)
            except (DependencyUnavailable, asyncio.TimeoutError) as exc:
                attempt += 1
                delay_s = backoff_s(attempt, base_s=0.5, cap_s=10.0, jitter=random.random())
                log.warning("! event log head unknown, retrying in %.1f s: %s", delay_s, exc)
                await asyncio.sleep(delay_s)
                continue
            self.dispatcher.submit(LogHeadKnown(seq, now()))
            return

    async def drain(self) -> None:
        self.draining = True
        deadline = asyncio.get_running_loop().time() + self.settings.shutdown_timeout_s
        conn_ids = list(self.registry.sockets)
        log.info("= draining %d connections within %.1f s", len(conn_ids), self.settings.shutdown_timeout_s)
        batches = max(1, int(self.settings.shutdown_timeout_s * DRAIN_SPREAD / CLOSE_BATCH_INTERVAL_S))
        size = max(1, -(-len(conn_ids) // batches))
        for start in range(0, len(conn_ids), size):
            for conn_id in conn_ids[start:start + size]:
                self.dispatcher.submit(CloseRequested(conn_id, CloseCode.GOING_AWAY, "server shutting down",
                                                      now()))
            await asyncio.sleep(CLOSE_BATCH_INTERVAL_S)
        while self.registry.sockets and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(CLOSE_BATCH_INTERVAL_S)
        await self.stop(max(1.0, deadline - asyncio.get_running_loop().time()))

    async def stop(self, flush_timeout_s: float) -> None:
        self.ticker.stop()
        self.flusher.stop()
        self.head_task.cancel()
        if self.http_server is not None:
            self.http_server.stop()
        try:
            await self.runner.stop(flush_timeout_s)
        except asyncio.TimeoutError:
            log.warning("! store writes still pending at exit")
        await self.slots.stop(flush_timeout_s)
        await self.wiring.close()


async def serve(settings: Settings) -> None:
    wiring = await build_wiring(settings)
    gateway = GatewayServer(settings, wiring)
    await gateway.start()
    if settings.uses_development_secret:
        log.warning("!!! DEVELOPMENT JWT SECRET IN USE: anyone can mint tokens. Set JWT_SECRET. !!!")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gateway.drain()
    log.info("= stopped")


def run(settings: Settings) -> int:
    """``python -m tornado_gw serve``: blocks until SIGTERM/SIGINT, then drains; exit code.

    With ``workers`` above 1, a supervisor forks that many such gateways on the same port.
    """
    if settings.workers > 1:
        from tornado_gw.supervisor import Supervisor

        return Supervisor(settings.workers, lambda: _serve_one(settings), settings.shutdown_timeout_s).run()
    return _serve_one(settings)


def _serve_one(settings: Settings) -> int:
    asyncio.run(serve(settings))
    return 0
