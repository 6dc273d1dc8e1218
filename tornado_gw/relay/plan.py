"""The relay's pure decisions: how a batch is numbered, what a frame looks like.

No I/O and no clock here; ``relay/worker.py`` reads rows, asks this module what
to publish, and writes the answer back (rules in ``adapters/pg_sql.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tornado_gw.codec import EncodeError, encode_frame
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
    frame: bytes | None  # None: the payload has no strict JSON form (see ``publishable``)


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
    try:
        frame: bytes | None = encode_frame(row.event_type, row.payload, seq)
    except EncodeError:
        frame = None
    return Delivery(row.row_id, seq, row.channel, frame)


def publishable(deliveries: Sequence[Delivery]) -> tuple[list[tuple[str, bytes]], list[Delivery]]:
    """Split into (``(channel, frame)`` to PUBLISH, deliveries held back). A row whose
    channel is not ``conv:<id>``/``user:<id>``, or whose payload has no strict JSON form
    (jsonb keeps a number like ``1...1.5`` of 400 digits, a float overflows to infinity,
    and browsers cannot parse ``Infinity``), keeps its seq and is marked published, but
    is never sent: no outbox row can reach another channel or a pattern (CONTRACT §6),
    no client gets invalid JSON, and one bad row must not stall the ones behind it.
    ``PgEventLog`` skips the same rows on replay."""
    valid: list[tuple[str, bytes]] = []
    held: list[Delivery] = []
    for delivery in deliveries:
        if delivery.frame is not None and is_valid_channel(delivery.channel):
            valid.append((delivery.channel, delivery.frame))
        else:
            held.append(delivery)
    return valid, held
