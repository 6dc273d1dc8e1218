"""``POST /publish`` with Redis but no Postgres (CONTRACT §2): the frame goes
straight to Pub/Sub, unnumbered, so there is nothing to replay it from."""

from __future__ import annotations

from typing import Any

from tornado_gw.codec import encode_frame
from tornado_gw.ports import Broker


class RedisPublisher:
    """The ``Publisher`` port over a broker it does not own (close the broker, not this)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def publish(self, channel: str, event_type: str, payload: Any) -> dict[str, Any]:
        """Publish ``{"type", "payload"}`` (no ``seq``) to ``prefix + channel``; returns ``{}``.

        Raises:
            DependencyUnavailable: Redis could not be reached.
        """
        await self._broker.publish(channel, encode_frame(event_type, payload))
        return {}
