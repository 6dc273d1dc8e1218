"""What each read asks the adapters, and the command that carries the answer back.

Shared by the effect runner (which bounds and schedules the reads) and by the core
tests' stepped world, so the two cannot drift apart. A ``ReplayGap`` is an answer
(``recovered: false``), not a failure; any other exception is the caller's to report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from tornado_gw import metrics
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.ports import EventLog, Membership, PresenceStore, ReplayGap, SessionStore
from tornado_gw.runtime.clock import now

log = logging.getLogger(__name__)
Read = fx.LoadSession | fx.QueryPresence | fx.CheckMembership | fx.LoadReplay
Batchable = fx.LoadSession | fx.CheckMembership  # many of one kind go in one store call
BATCHABLE = (fx.LoadSession, fx.CheckMembership)
STORE_OF: dict[type, str] = {fx.LoadSession: "sessions", fx.QueryPresence: "presence",
                             fx.CheckMembership: "membership", fx.LoadReplay: "log"}


class Sources(Protocol):
    """The adapters a read may ask (``runtime.effects.Adapters`` has them)."""

    @property
    def sessions(self) -> SessionStore: ...

    @property
    def presence(self) -> PresenceStore: ...

    @property
    def membership(self) -> Membership: ...

    @property
    def log(self) -> EventLog: ...


async def answer(a: Sources, effect: Read, clock: Callable[[], float] = now) -> c.Command:
    """The command answering ``effect``, stamped by ``clock``."""
    if isinstance(effect, fx.LoadSession):
        return c.SessionLoaded(effect.conn_id, await a.sessions.load(effect.session_id), clock())
    if isinstance(effect, fx.QueryPresence):
        page = await a.presence.page(effect.conversation_id, effect.after, effect.limit)
        return c.PresencePageLoaded(effect.conn_id, effect.conversation_id, effect.limit, page, clock())
    if isinstance(effect, fx.CheckMembership):
        allowed = await a.membership.allowed(effect.user_id, effect.conversation_ids)
        return c.MembershipChecked(effect.conn_id, frozenset(allowed), clock())
    try:
        events = await a.log.read_after(effect.channels, effect.after_seq, effect.limit)
    except ReplayGap as exc:
        log.info("= replay not recoverable: %s", exc)
        return c.ReplayLoaded(effect.conn_id, None, clock())
    metrics.REPLAYED.inc(len(events))
    return c.ReplayLoaded(effect.conn_id, tuple(events), clock())


async def answer_many(a: Sources, effects: Sequence[Batchable],
                      clock: Callable[[], float] = now) -> list[c.Command]:
    """The commands answering ``effects`` (all of one kind), in order, from one store call."""
    loads = [e for e in effects if isinstance(e, fx.LoadSession)]
    if loads:
        assert len(loads) == len(effects), "one kind per batch"
        snapshots = await a.sessions.load_many([e.session_id for e in loads])
        at = clock()
        return [c.SessionLoaded(e.conn_id, s, at) for e, s in zip(loads, snapshots, strict=True)]
    checks = [e for e in effects if isinstance(e, fx.CheckMembership)]
    allowed = await a.membership.allowed_many([(e.user_id, e.conversation_ids) for e in checks])
    at = clock()
    return [c.MembershipChecked(e.conn_id, frozenset(granted), at)
            for e, granted in zip(checks, allowed, strict=True)]
