"""What presence writes may merge and pass in their lane (runtime/presence_writes.py): a
connection storm alternates joins, announcements and disconnect refreshes, and each kind
must still merge with its own, without reordering two writes of one presence entry."""

from __future__ import annotations

from tornado_gw.core import effects as fx
from tornado_gw.runtime.presence_writes import Announces, Joins, commutes, merge, parts

JOIN_A = fx.JoinPresence("c1", "u1", "p1", 100.0)
JOIN_B = fx.JoinPresence("c2", "u2", "p2", 101.0)
LEAVE_A = fx.LeavePresence("c1", "u1", "p1", 50.0)
REFRESH_A = fx.RefreshPresence((("c1", "u1", "p1"),), 60.0)
REFRESH_B = fx.RefreshPresence((("c2", "u2", "p2"),), 61.0)


def test_writes_of_other_entries_and_rooms_commute() -> None:
    assert commutes(JOIN_A, JOIN_B) and commutes(REFRESH_B, JOIN_A)
    assert commutes(fx.AnnouncePresence("c2", 0), JOIN_A)
    assert commutes(Announces([fx.AnnouncePresence("c3", 0)]), REFRESH_A)


def test_writes_of_one_entry_or_its_room_keep_their_order() -> None:
    assert not commutes(JOIN_A, LEAVE_A) and not commutes(LEAVE_A, REFRESH_A)
    assert not commutes(Joins([JOIN_B, JOIN_A]), REFRESH_A)
    assert not commutes(fx.AnnouncePresence("c1", 0), JOIN_A)  # the count it publishes would change
    assert not commutes(JOIN_A, fx.AnnouncePresence("c1", 0))
    assert not commutes(fx.ExpireStale(1.0), fx.AnnouncePresence("c9", 0))


def test_announcements_and_refreshes_merge_with_their_own_kind() -> None:
    merged = merge(fx.AnnouncePresence("c1", 0), fx.AnnouncePresence("c2", 5))
    assert isinstance(merged, Announces)
    merged = merge(merged, fx.AnnouncePresence("c3", 0))
    assert parts(merged) == (fx.AnnouncePresence("c1", 0), fx.AnnouncePresence("c2", 5),
                             fx.AnnouncePresence("c3", 0))
    # the later expiry for both: a few milliseconds more of the disconnect grace
    assert merge(REFRESH_A, REFRESH_B) == fx.RefreshPresence(REFRESH_A.entries + REFRESH_B.entries, 61.0)
    assert merge(JOIN_A, REFRESH_A) is None and merge(LEAVE_A, LEAVE_A) is None
