"""Presence and typing writes: which lane each takes, what merges, how each runs.

Presence writes share one ordered lane: the periodic re-join of every live
entry must not re-create an entry that a ``leave`` queued after it removed.
Typing writes are ordered per conversation and user. Refreshes that pile up
behind a slow store merge into the newest (it carries the current live set);
the stores split large ones into bounded calls themselves. Joins that pile up
behind a running write (a join storm) leave together as one ``Joins``: one
store call, one announcement per conversation, the order of the lane kept.
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


PresenceWrite = (fx.JoinPresence | Joins | fx.LeavePresence | fx.RejoinPresence | fx.RefreshPresence
                 | fx.AnnouncePresence | fx.StartTyping | fx.StopTyping | fx.ExpireStale)
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
    return None


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
        elif isinstance(effect, fx.StartTyping):
            await t.start(effect.conversation_id, effect.user_id, effect.expires_at)
        elif isinstance(effect, fx.StopTyping):
            await t.stop(effect.conversation_id, effect.user_id)
        else:
            await p.expire(effect.at)
            await t.expire(effect.at)
