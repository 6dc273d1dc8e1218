"""The relay's pure decisions: deliveries in seq order, what may be published."""

from __future__ import annotations

import json

import pytest
import ujson

from tornado_gw.relay.plan import OutboxRow, in_seq_order, publishable


def _row(row_id: int, channel: str = "conv:1", seq: int | None = None) -> OutboxRow:
    return OutboxRow(row_id, channel, "message.new", {"n": row_id}, seq)


def test_in_seq_order_keeps_each_seq_and_publishes_in_seq_order() -> None:
    deliveries = in_seq_order([_row(8, seq=12), _row(5, seq=11)])
    assert [(d.row_id, d.seq) for d in deliveries] == [(5, 11), (8, 12)]
    assert ujson.loads(deliveries[0].frame) == {"type": "message.new", "payload": {"n": 5}, "seq": 11}


def test_in_seq_order_refuses_a_row_without_seq() -> None:
    with pytest.raises(ValueError, match="row 3: it has no seq yet"):
        in_seq_order([_row(3)])


def test_publishable_holds_back_rows_whose_channel_is_not_a_valid_channel() -> None:
    rows = [_row(1, seq=1), _row(2, "conv:*", seq=2), _row(3, "user:u@x", seq=3), _row(4, "room:1", seq=4)]
    deliveries = in_seq_order(rows)
    valid, held = publishable(deliveries)
    assert [channel for channel, _ in valid] == ["conv:1", "user:u@x"]
    assert [d.row_id for d in held] == [2, 4]


def test_publishable_holds_back_rows_whose_payload_has_no_strict_json_form() -> None:
    """jsonb keeps a 400-digit decimal; as a float it overflows, and ``Infinity`` is not JSON."""
    rows = [_row(1, seq=1), OutboxRow(2, "conv:1", "message.new", {"n": float("inf")}, 2), _row(3, seq=3)]
    valid, held = publishable(in_seq_order(rows))
    assert [json.loads(frame)["seq"] for _, frame in valid] == [1, 3]
    assert [(d.row_id, d.seq, d.frame) for d in held] == [(2, 2, None)]
