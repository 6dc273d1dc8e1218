"""The broker's sink: what arrives from Redis (or the in-process broker) becomes commands."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tornado_gw import metrics
from tornado_gw.core import commands as c
from tornado_gw.runtime.clock import now

log = logging.getLogger(__name__)


class BrokerFeed:
    """Implements ``ports.BrokerSink``; decodes each frame once, for all recipients."""

    def __init__(self, submit: Callable[[c.Command], None], decode: Callable[[bytes], Any]) -> None:
        self._submit = submit
        self._decode = decode
        self.up = True

    def message(self, channel: str, data: bytes) -> None:
        started = time.perf_counter()
        self._submit(c.BrokerMessage(channel, data, self._decode(data), now()))
        metrics.DELIVERY_LATENCY.observe(time.perf_counter() - started)

    def channel_ready(self, channel: str) -> None:
        self._submit(c.ChannelReady(channel, now()))

    def status(self, up: bool, reason: str) -> None:
        if up != self.up:
            log.warning("= broker %s: %s", "up" if up else "down", reason)
        self.up = up
        self._submit(c.BrokerStatusChanged(up, reason, now()))
