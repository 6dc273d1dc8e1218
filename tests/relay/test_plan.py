"""The relay's pure decisions: deliveries in seq order, frames, backoff."""

from __future__ import annotations

import pytest
import ujson

from tornado_gw.relay.plan import OutboxRow, backoff_s, build_frame, in_seq_order, one_line, publishable


def _row(row_id: int, channel: str = "conv:1", seq: int | None = None) -> OutboxRow:
    return OutboxRow(row_id, channel, "message.new", {"n": row_id}, seq)


def test_build_frame_is_the_client_frame() -> None:
    frame = build_frame("message.new", {"text": "héllo </b>", "n": [1, 2]}, 42)
    payload = {"text": "héllo </b>", "n": [1, 2]}
    assert ujson.loads(frame) == {"type": "message.new", "payload": payload, "seq": 42}
    assert "héllo </b>".encode() in frame  # UTF-8 and slashes as written, not escaped


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
    valid, invalid = publishable(deliveries)
    assert [d.row_id for d in valid] == [1, 3]
    assert [d.row_id for d in invalid] == [2, 4]


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(1, 0.0, 0.1), (1, 0.999999, 0.2), (2, 0.0, 0.2), (3, 0.5, 0.6), (10, 0.0, 2.5), (10, 0.999999, 5.0)],
)
def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half(attempt: int, jitter: float,
                                                                     expected: float) -> None:
    assert backoff_s(attempt, base_s=0.2, cap_s=5.0, jitter=jitter) == pytest.approx(expected, abs=1e-5)


def test_one_line_folds_a_multiline_message() -> None:
    assert one_line(OSError("connection failed:\n  is the server running?")) == (
        "connection failed: is the server running?"
    )
    assert one_line(TimeoutError()) == "TimeoutError"
