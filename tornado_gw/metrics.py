"""Prometheus metrics of one process (CONTRACT §2 ``GET /metrics``).

One registry per process, created here; adapters and the runtime increment
these objects, ``web/http_handlers.py`` renders them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tornado_gw.core.protocol import FrameType

REGISTRY = CollectorRegistry(auto_describe=True)
OTHER = "other"
# Outbox event types are the application's (any string): as label values they would
# make one time series per type ever published. The contract's own types, and the
# application's best-known one, are labelled by name; the rest are "other".
_KNOWN_FRAME_TYPES = frozenset(t.value for t in FrameType) | {"presence.diff", "membership.removed"}

CONNECTIONS = Gauge("gateway_connections", "Open WebSocket connections", registry=REGISTRY)
FRAMES_IN = Counter("gateway_frames_in_total", "Frames received from clients", ["type"], registry=REGISTRY)
FRAMES_OUT = Counter("gateway_frames_out_total", "Frames sent to clients", ["type"], registry=REGISTRY)
CLOSES = Counter("gateway_closes_total", "Connections closed by the gateway", ["code"], registry=REGISTRY)
REPLAYED = Counter("gateway_replayed_events_total", "Events sent from the log on replay", registry=REGISTRY)
REDIS_RECONNECTS = Counter("gateway_redis_reconnects_total", "Broker reconnects", registry=REGISTRY)
BROKER_PUBLISHED = Counter("gateway_broker_published_total", "Frames published to the broker",
                           registry=REGISTRY)
BROKER_RECEIVED = Counter("gateway_broker_received_total", "Frames received from the broker",
                          registry=REGISTRY)
DELIVERY_LATENCY = Histogram(
    "gateway_delivery_seconds",
    "Time from receiving a broker frame to writing it to every local recipient",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)


def frame_type_label(kind: str) -> str:
    """The ``type`` label of an outgoing frame: a bounded set of names, else ``other``."""
    return kind if kind in _KNOWN_FRAME_TYPES else OTHER


_FRAMES_OUT_BY_LABEL: dict[str, Any] = {}  # one per label: a bounded set


def count_frames_out(label: str, count: int = 1) -> None:
    """``FRAMES_OUT`` for ``label`` (``frame_type_label``, or ``replay``), its labelled child
    kept: ``labels()`` on every frame was a tenth of the event loop in a resume storm."""
    child = _FRAMES_OUT_BY_LABEL.get(label)
    if child is None:
        child = _FRAMES_OUT_BY_LABEL[label] = FRAMES_OUT.labels(label)
    child.inc(count)
