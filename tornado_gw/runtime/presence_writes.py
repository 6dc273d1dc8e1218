"""Presence and typing writes: which lane each takes, what merges, how each runs.

Presence writes share one ordered lane: the periodic re-join of every live
entry must not re-create an entry that a ``leave`` queued after it removed.
Typing writes are ordered per conversation and user. Refreshes that pile up
behind a slow store merge into the newest (it carries the current live set),
and large ones go to the store in chunks. Transitions the store reports come
back to the reducer through ``announce``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.ports import PresenceStore, TypingStore
from tornado_gw.runtime.clock import now

CHUNK = 1_000  # entries per store call of a refresh
PresenceWrite = (fx.JoinPresence | fx.LeavePresence | fx.RejoinPresence | fx.RefreshPresence
                 | fx.StartTyping | fx.StopTyping | fx.ExpireStale)
PRESENCE_WRITES = (fx.JoinPresence, fx.LeavePresence, fx.RejoinPresence, fx.RefreshPresence,
                   fx.StartTyping, fx.StopTyping, fx.ExpireStale)
T = TypeVar("T")


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
    return None


def chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]


class PresenceWriter:
    def __init__(self, presence: PresenceStore, typing: TypingStore, announce: Callable[[c.Command], None],
                 clock: Callable[[], float] = now) -> None:
        self._presence = presence
        self._typing = typing
        self._announce = announce
        self._clock = clock

    async def run(self, effect: PresenceWrite) -> None:
        p, t, announce, clock = self._presence, self._typing, self._announce, self._clock
        if isinstance(effect, fx.JoinPresence):
            if await p.join(effect.conversation_id, effect.user_id, effect.session_id, effect.expires_at):
                announce(c.PresenceChanged(effect.conversation_id, effect.user_id, True, clock()))
        elif isinstance(effect, fx.LeavePresence):
            if await p.leave(effect.conversation_id, effect.user_id, effect.session_id, effect.at):
                announce(c.PresenceChanged(effect.conversation_id, effect.user_id, False, clock()))
        elif isinstance(effect, fx.RejoinPresence):
            for part in chunks(effect.entries):
                for cid, uid in await p.rejoin(part, effect.expires_at):
                    announce(c.PresenceChanged(cid, uid, True, clock()))
        elif isinstance(effect, fx.RefreshPresence):
            for part in chunks(effect.entries):
                await p.refresh(part, effect.expires_at)
        elif isinstance(effect, fx.StartTyping):
            if await t.start(effect.conversation_id, effect.user_id, effect.expires_at):
                announce(c.TypingChanged(effect.conversation_id, effect.user_id, True, clock()))
        elif isinstance(effect, fx.StopTyping):
            if await t.stop(effect.conversation_id, effect.user_id):
                announce(c.TypingChanged(effect.conversation_id, effect.user_id, False, clock()))
        else:
            for cid, uid in await p.expire(effect.at):
                announce(c.PresenceChanged(cid, uid, False, clock()))
            for cid, uid in await t.expire(effect.at):
                announce(c.TypingChanged(cid, uid, False, clock()))
