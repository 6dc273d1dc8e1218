"""Performs the reducer's effects; results come back as commands.

Three lanes: socket effects run at once, in order; store and publish effects
run one at a time in order on a single worker (a ``join`` must not overtake
the ``leave`` before it); replay, membership and gap reads may be slow and run
concurrently. Every adapter call is bounded in time, so a hung dependency
costs latency, never a stuck gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tornado_gw import metrics
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.records import LoggedEvent
from tornado_gw.ports import Broker, EventLog, Membership, PresenceStore, ReplayGap, SessionStore, TypingStore
from tornado_gw.runtime.clock import now

log = logging.getLogger(__name__)
ADAPTER_TIMEOUT_S = 10.0
GAP_FILL_LIMIT = 100_000


class Transport(Protocol):
    """The sockets, as the web layer exposes them to the runtime."""

    def send(self, conn_id: str, data: bytes) -> None: ...

    def send_many(self, conn_ids: Sequence[str], data: bytes) -> None: ...

    def close(self, conn_id: str, code: int, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Adapters:
    broker: Broker
    log: EventLog
    sessions: SessionStore
    presence: PresenceStore
    typing: TypingStore
    membership: Membership


class EffectRunner:
    def __init__(self, adapters: Adapters, transport: Transport, submit: Callable[[c.Command], None],
                 encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]) -> None:
        self._adapters = adapters
        self._transport = transport
        self._submit = submit
        self._encode = encode
        self._decode = decode
        self._serial: asyncio.Queue[fx.Effect] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeping = False

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run_serial())

    async def stop(self, timeout_s: float) -> None:
        """Finish the queued store effects (sessions saved on shutdown), then stop."""
        await asyncio.wait_for(self._serial.join(), timeout_s)
        if self._worker is not None:
            self._worker.cancel()
        for task in list(self._tasks):
            task.cancel()

    def perform(self, effects: Sequence[fx.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, fx.Deliver):
                self._transport.send_many(effect.conn_ids, effect.data)
                metrics.FRAMES_OUT.labels(metrics.frame_type_label(effect.frame_type)).inc(len(effect.conn_ids))
            elif isinstance(effect, fx.SendFrame):
                self._transport.send(effect.conn_id, self._encode(effect.frame))
                metrics.FRAMES_OUT.labels(metrics.frame_type_label(effect.frame["type"])).inc()
            elif isinstance(effect, fx.CloseConnection):
                self._transport.close(effect.conn_id, int(effect.code), effect.reason)
            elif isinstance(effect, fx.SubscribeChannel):
                self._adapters.broker.subscribe(effect.channel)
            elif isinstance(effect, fx.UnsubscribeChannel):
                self._adapters.broker.unsubscribe(effect.channel)
            elif isinstance(effect, fx.CONCURRENT):
                self._spawn(self._concurrent(effect))
            elif isinstance(effect, fx.ExpireStale):
                if not self._sweeping:  # a slow store must not pile sweeps up
                    self._sweeping = True
                    self._serial.put_nowait(effect)
            else:
                self._serial.put_nowait(effect)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_serial(self) -> None:
        while True:
            effect = await self._serial.get()
            try:
                await asyncio.wait_for(self._store_effect(effect), ADAPTER_TIMEOUT_S)
            except Exception as exc:  # a dependency failed: log, keep serving
                log.warning("! %s failed: %s", type(effect).__name__, exc or type(exc).__name__)
                self._store_failed(effect)
            finally:
                self._serial.task_done()

    def _store_failed(self, effect: fx.Effect) -> None:
        """Let the waiting operation go on as if there were nothing to restore."""
        if isinstance(effect, fx.ExpireStale):
            self._sweeping = False
        elif isinstance(effect, fx.LoadSession):
            self._submit(c.SessionLoaded(effect.conn_id, None, now()))
        elif isinstance(effect, fx.QueryPresence):
            self._submit(c.PresenceListed(effect.conn_id, effect.conversation_id, (), now()))

    async def _store_effect(self, effect: fx.Effect) -> None:
        a = self._adapters
        if isinstance(effect, fx.Publish):
            await a.broker.publish(effect.channel, self._encode(effect.frame))
        elif isinstance(effect, fx.LoadSession):
            snapshot = await a.sessions.load(effect.session_id)
            self._submit(c.SessionLoaded(effect.conn_id, snapshot, now()))
        elif isinstance(effect, fx.SaveSession):
            await a.sessions.save(effect.snapshots, effect.ttl_s)
        elif isinstance(effect, fx.JoinPresence):
            joined = await a.presence.join(effect.conversation_id, effect.user_id, effect.session_id,
                                           effect.expires_at)
            if joined:
                self._submit(c.PresenceChanged(effect.conversation_id, effect.user_id, True, now()))
        elif isinstance(effect, fx.LeavePresence):
            if await a.presence.leave(effect.conversation_id, effect.user_id, effect.session_id, effect.at):
                self._submit(c.PresenceChanged(effect.conversation_id, effect.user_id, False, now()))
        elif isinstance(effect, fx.RejoinPresence):
            for cid, uid in await a.presence.rejoin(effect.entries, effect.expires_at):
                self._submit(c.PresenceChanged(cid, uid, True, now()))
        elif isinstance(effect, fx.RefreshPresence):
            await a.presence.refresh(effect.entries, effect.expires_at)
        elif isinstance(effect, fx.QueryPresence):
            users = await a.presence.online(effect.conversation_id, effect.at)
            self._submit(c.PresenceListed(effect.conn_id, effect.conversation_id, tuple(users), now()))
        elif isinstance(effect, fx.StartTyping):
            if await a.typing.start(effect.conversation_id, effect.user_id, effect.expires_at):
                self._submit(c.TypingChanged(effect.conversation_id, effect.user_id, True, now()))
        elif isinstance(effect, fx.StopTyping):
            if await a.typing.stop(effect.conversation_id, effect.user_id):
                self._submit(c.TypingChanged(effect.conversation_id, effect.user_id, False, now()))
        elif isinstance(effect, fx.ExpireStale):
            await self._sweep(effect.at)

    async def _sweep(self, at: float) -> None:
        try:
            for cid, uid in await self._adapters.presence.expire(at):
                self._submit(c.PresenceChanged(cid, uid, False, now()))
            for cid, uid in await self._adapters.typing.expire(at):
                self._submit(c.TypingChanged(cid, uid, False, now()))
        finally:
            self._sweeping = False

    async def _concurrent(self, effect: fx.Effect) -> None:
        if isinstance(effect, fx.LoadReplay):
            events = await self._read_log(effect.channels, effect.after_seq, effect.limit)
            if events is not None:
                metrics.REPLAYED.inc(len(events))
            self._submit(c.ReplayLoaded(effect.conn_id, None if events is None else tuple(events), now()))
        elif isinstance(effect, fx.CheckMembership):
            self._submit(c.MembershipChecked(effect.conn_id, await self._allowed(effect), now()))
        elif isinstance(effect, fx.LoadGap):
            await self._fill_gap(effect.after)

    async def _read_log(self, channels: Sequence[str], after_seq: int,
                        limit: int) -> list[LoggedEvent] | None:
        try:
            return await asyncio.wait_for(self._adapters.log.read_after(channels, after_seq, limit),
                                          ADAPTER_TIMEOUT_S)
        except ReplayGap as exc:
            log.info("= replay not recoverable: %s", exc)
        except Exception as exc:
            log.warning("! replay read failed: %s", exc or type(exc).__name__)
        return None

    async def _allowed(self, effect: fx.CheckMembership) -> frozenset[str]:
        try:
            allowed = await asyncio.wait_for(
                self._adapters.membership.allowed(effect.user_id, effect.conversation_ids), ADAPTER_TIMEOUT_S)
            return frozenset(allowed)
        except Exception as exc:  # fail closed: deny rather than leak a conversation
            log.warning("! membership check failed, denying: %s", exc or type(exc).__name__)
            return frozenset()

    async def _fill_gap(self, after: Sequence[tuple[str, int]]) -> None:
        """Hand what the broker lost to the core as one ``GapLoaded``; it holds the live
        frames until then and merges both by seq. Answered exactly once, also on failure."""
        since = dict(after)
        events = await self._read_log(list(since), min(since.values()), GAP_FILL_LIMIT)
        if events is None:
            log.warning("! gap after broker outage could not be filled")
            self._submit(c.GapLoaded(None, now()))
            return
        messages = tuple(c.BrokerMessage(event.channel, event.data, self._decode(event.data), now())
                         for event in events if event.seq > since[event.channel])
        self._submit(c.GapLoaded(messages, now()))
