"""The session snapshot's stored form (docs/redis.md): versioned, the previous version read."""

from __future__ import annotations

from typing import Any

import pytest

from tornado_gw.core.records import SNAPSHOT_VERSION, SessionSnapshot, snapshot_from_record, snapshot_record


def test_a_snapshot_round_trips_with_its_version() -> None:
    snapshot = SessionSnapshot("s1", "u1", ("c1", "c2"), "p1")
    record = snapshot_record(snapshot)
    assert record["v"] == SNAPSHOT_VERSION
    assert snapshot_from_record("s1", record) == snapshot


def test_a_record_of_the_previous_version_is_read() -> None:
    old = {"user_id": "u1", "conversation_ids": ["c1"], "presence_id": None}
    assert snapshot_from_record("s1", old) == SessionSnapshot("s1", "u1", ("c1",), None)


@pytest.mark.parametrize("record", [
    {"v": SNAPSHOT_VERSION + 1, "user_id": "u1", "conversation_ids": []},  # a newer gateway's
    {"user_id": 5, "conversation_ids": []},
    {"user_id": "u1", "conversation_ids": "c1"},
    {"user_id": "u1", "conversation_ids": [1]},
    ["u1"],
])
def test_a_newer_or_malformed_record_gives_no_snapshot(record: Any) -> None:
    assert snapshot_from_record("s1", record) is None
