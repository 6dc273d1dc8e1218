"""Presence and typing writes: which lane each takes, what merges, how each runs.

Presence writes share one ordered lane: the periodic re-join of every live
entry must not re-create an entry that a ``leave`` queued after it removed.
Typing writes are ordered per conversation and user. Writes that pile up behind
a slow store merge: re-joins into the newest (it carries the current live set),
joins into one ``Joins`` (one store call, one announcement per conversation),
disconnect refreshes into one, announcements into one ``Announces`` (one
pipeline). A write may merge into one queued a few places before it when it
``commutes`` with every write in between (they touch other presence entries):
in a connection storm joins, announcements and refreshes alternate in the lane,
and merging only with the last one left the lane as long as the storm (one
store call each, "store lane full" at 800 connects a second). The stores split
large writes into bounded calls themselves.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from tornado_gw.core import effects as fx
from tornado_gw.ports import PresenceStore, TypingStore


@dataclass(slots=True)
class Joins:
    """Consecutive ``JoinPresence`` writes merged in the lane, run as one ``rejoin`` at the
    latest of their expiries (a few milliseconds more of a 90 s TTL); reported one by one
    if it fails. Grows in place while it waits (merging stays linear in a storm)."""

    joins: list[fx.JoinPresence]

    @property
    def entries(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((j.conversation_id, j.user_id, j.session_id) for j in self.joins)

    @property
    def expires_at(self) -> float:
        return max(j.expires_at for j in self.joins)


@dataclass(slots=True)
class Announces:
    """Consecutive ``AnnouncePresence`` writes merged in the lane, run as one pipeline;
    reported one by one if it fails."""

    announces: list[fx.AnnouncePresence]


PresenceWrite = (fx.JoinPresence | Joins | fx.LeavePresence | fx.RejoinPresence | fx.RefreshPresence
                 | fx.AnnouncePresence | Announces | fx.StartTyping | fx.StopTyping | fx.ExpireStale)
MERGED = (Joins, Announces)  # the writes that stand for several effects
Entry = tuple[str, str, str]  # (conversation_id, user_id, session_id)
PRESENCE_WRITES = (fx.JoinPresence, fx.LeavePresence, fx.RejoinPresence, fx.RefreshPresence,
                   fx.AnnouncePresence, fx.StartTyping, fx.StopTyping, fx.ExpireStale)


def lane_of(effect: PresenceWrite) -> Hashable:
    if isinstance(effect, (fx.StartTyping, fx.StopTyping)):
        return ("typing", effect.conversation_id, effect.user_id)
    if isinstance(effect, fx.ExpireStale):
        return "sweep"
    return "presence"


def merge(queued: PresenceWrite, new: PresenceWrite) -> PresenceWrite | None:
    """The write that replaces ``queued`` followed by ``new``, or None if both must run."""
    same_kind = type(queued) is type(new)
    if same_kind and isinstance(new, (fx.RejoinPresence, fx.StartTyping, fx.ExpireStale)):
        return new  # the newer refresh / sweep covers what the older one would do
    if isinstance(new, fx.JoinPresence):
        if isinstance(queued, fx.JoinPresence):
            return Joins([queued, new])
        if isinstance(queued, Joins):
            queued.joins.append(new)
            return queued
    if isinstance(new, fx.AnnouncePresence):
        if isinstance(queued, fx.AnnouncePresence):
            return Announces([queued, new])
        if isinstance(queued, Announces):
            queued.announces.append(new)
            return queued
    if isinstance(new, fx.RefreshPresence) and isinstance(queued, fx.RefreshPresence):
        # the later expiry for both: a few milliseconds more of the disconnect grace
        return fx.RefreshPresence(queued.entries + new.entries, max(queued.expires_at, new.expires_at))
    return None


def commutes(queued: PresenceWrite, new: PresenceWrite) -> bool:
    """Whether ``new`` may run before ``queued``: they touch different presence entries
    (an announcement touches its whole conversation; a sweep, everything)."""
    if isinstance(queued, fx.ExpireStale) or isinstance(new, fx.ExpireStale):
        return False
    queued_entries, queued_rooms = _touches(queued)
    new_entries, new_rooms = _touches(new)
    return (queued_entries.isdisjoint(new_entries) and queued_rooms.isdisjoint(new_rooms)
            and not any(cid in new_rooms for cid, _user, _session in queued_entries)
            and not any(cid in queued_rooms for cid, _user, _session in new_entries))


def _touches(write: PresenceWrite) -> tuple[set[Entry], set[str]]:
    """The entries a write changes, and the conversations it reads whole."""
    if isinstance(write, (fx.JoinPresence, fx.LeavePresence)):
        return {(write.conversation_id, write.user_id, write.session_id)}, set()
    if isinstance(write, (Joins, fx.RejoinPresence, fx.RefreshPresence)):
        return set(write.entries), set()
    if isinstance(write, fx.AnnouncePresence):
        return set(), {write.conversation_id}
    if isinstance(write, Announces):
        return set(), {a.conversation_id for a in write.announces}
    return set(), set()  # typing: lanes of their own, never beside presence writes


def parts(write: Joins | Announces) -> tuple[fx.JoinPresence, ...] | tuple[fx.AnnouncePresence, ...]:
    """The effects a merged write stands for, each to be reported if it fails."""
    return tuple(write.joins) if isinstance(write, Joins) else tuple(write.announces)


class PresenceWriter:
    """Runs presence and typing writes. The stores announce their own transitions
    (through the broker, atomically with them: ISSUE 9.5), so nothing comes back."""

    def __init__(self, presence: PresenceStore, typing: TypingStore) -> None:
        self._presence = presence
        self._typing = typing

    async def run(self, effect: PresenceWrite) -> None:
        p, t = self._presence, self._typing
        if isinstance(effect, fx.JoinPresence):
            await p.join(effect.conversation_id, effect.user_id, effect.session_id, effect.expires_at)
        elif isinstance(effect, fx.LeavePresence):
            await p.leave(effect.conversation_id, effect.user_id, effect.session_id, effect.at)
        elif isinstance(effect, (Joins, fx.RejoinPresence)):
            await p.rejoin(effect.entries, effect.expires_at)
        elif isinstance(effect, fx.RefreshPresence):
            await p.refresh(effect.entries, effect.expires_at)
        elif isinstance(effect, fx.AnnouncePresence):
            await p.announce(effect.conversation_id, effect.list_limit)
        elif isinstance(effect, Announces):
            await p.announce_many([(a.conversation_id, a.list_limit) for a in effect.announces])
        elif isinstance(effect, fx.StartTyping):
            await t.start(effect.conversation_id, effect.user_id, effect.expires_at)
        elif isinstance(effect, fx.StopTyping):
            await t.stop(effect.conversation_id, effect.user_id)
        else:
            await p.expire(effect.at)
            await t.expire(effect.at)
