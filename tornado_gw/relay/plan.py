"""The relay's pure decisions: how a batch is numbered, what a frame looks like.

No I/O and no clock here; ``relay/worker.py`` reads rows, asks this module what
to publish, and writes the answer back (rules in ``adapters/pg_sql.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tornado_gw.codec import encode_frame
from tornado_gw.core.ids import is_valid_channel


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row as the relay reads it; ``seq`` is None until numbered."""

    row_id: int
    channel: str
    event_type: str
    payload: Any
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A numbered row, ready to PUBLISH on ``channel`` (no prefix)."""

    row_id: int
    seq: int
    channel: str
    frame: bytes


def in_seq_order(rows: Sequence[OutboxRow]) -> list[Delivery]:
    """Deliveries for numbered rows, with the seq they have, in seq order: rows
    just numbered, or rows a dead relay numbered but never marked (a repeat is a
    duplicate the client drops by seq, never a second number for one event).

    Raises:
        ValueError: a row has no seq.
    """
    deliveries = []
    for row in rows:
        if row.seq is None:
            raise ValueError(f"can't republish row {row.row_id}: it has no seq yet")
        deliveries.append(_delivery(row, row.seq))
    return sorted(deliveries, key=lambda delivery: delivery.seq)


def _delivery(row: OutboxRow, seq: int) -> Delivery:
    return Delivery(row.row_id, seq, row.channel, encode_frame(row.event_type, row.payload, seq))


def publishable(deliveries: Sequence[Delivery]) -> tuple[list[Delivery], list[Delivery]]:
    """Split into (valid channel, invalid channel). A row whose channel is not
    ``conv:<id>``/``user:<id>`` keeps its seq and is marked published, but is never
    sent: no outbox row can reach another channel or a pattern (CONTRACT §6), and
    one bad row must not stall the ones behind it."""
    valid = [delivery for delivery in deliveries if is_valid_channel(delivery.channel)]
    invalid = [delivery for delivery in deliveries if not is_valid_channel(delivery.channel)]
    return valid, invalid
