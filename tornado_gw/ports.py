"""The ports: what the core needs from the world, one small Protocol each.

Every adapter (``adapters/memory.py`` for the embedded default, the Redis and
Postgres adapters for a cluster) implements these and passes the same contract
suite under ``tests/adapters/``. Channel names here carry no prefix
(``conv:42``, ``user:7``); an adapter that talks to Redis adds the ``prefix``
setting itself. Times are UNIX seconds passed in by the caller, never read
from a clock inside an adapter method, so tests can drive them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tornado_gw.core.records import LoggedEvent, PresencePage, SessionSnapshot


class BrokerSink(Protocol):
    """Where a broker delivers. Called on the event loop, never concurrently."""

    def message(self, channel: str, data: bytes) -> None:
        """A frame published to ``channel`` (prefix already stripped)."""

    def channel_ready(self, channel: str) -> None:
        """The subscription to ``channel`` is live: anything published from now on arrives."""

    def status(self, up: bool, reason: str) -> None:
        """``up=False``: the connection is lost (messages are being missed).
        ``up=True`` after a loss: reconnected and every channel resubscribed; what
        was published in between is gone and must be filled from the event log."""


class Broker(Protocol):
    """Fan-out between instances. At most once (CONTRACT §6, PITFALLS 1):
    frames published while the connection is down are lost, but every loss is
    reported through ``BrokerSink.status``. Order per channel is preserved."""

    async def start(self, sink: BrokerSink) -> None:
        """Connect and begin delivering to ``sink``; returns once running."""

    def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``; idempotent, never blocks. ``sink.channel_ready``
        follows once the subscription is live (also for an already live channel)."""

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``; idempotent, never blocks."""

    async def publish(self, channel: str, data: bytes) -> None:
        """Send ``data`` to every instance subscribed to ``channel``.
        Raises ``DependencyUnavailable`` when the broker cannot be reached."""

    async def close(self) -> None:
        """Stop delivering and release connections."""


class ReplayGap(Exception):
    """The log cannot prove it has every event asked for (trimmed, over the
    limit, or unreachable): the client must be told ``recovered: false``."""


class DependencyUnavailable(Exception):
    """Redis or Postgres could not be reached; the message names which."""


class EventLog(Protocol):
    """The replay source: the Postgres outbox, or the in-process bounded log."""

    async def read_after(self, channels: Sequence[str], after_seq: int, limit: int,
                         until_seq: int | None = None) -> list[LoggedEvent]:
        """Every event with ``seq > after_seq`` (and ``<= until_seq`` when given) on any
        of ``channels``, in ``seq`` order. Raises ``ReplayGap`` when that is more than
        ``limit`` events or cannot be known completely."""

    async def head_seq(self) -> int:
        """The highest seq in the log (0 when empty): where an instance that has
        delivered nothing yet starts counting what a broker outage made it miss.
        Raises ``DependencyUnavailable`` when the log cannot be reached."""


class Publisher(Protocol):
    """What ``POST /publish`` and ``emit`` use to inject an event (CONTRACT §2)."""

    async def publish(self, channel: str, event_type: str, payload: Any) -> dict[str, Any]:
        """Accept an event for ``channel``; returns the JSON body of the 202 answer
        (``{"id": N}`` with Postgres, ``{"seq": N}`` embedded, ``{}`` Redis only)."""


class Membership(Protocol):
    """Who may subscribe to what (``authorization`` setting)."""

    async def allowed(self, user_id: str, conversation_ids: Sequence[str]) -> set[str]:
        """The subset of ``conversation_ids`` that ``user_id`` may subscribe to."""

    async def allowed_many(self, asked: Sequence[tuple[str, Sequence[str]]]) -> list[set[str]]:
        """``allowed`` for each (user, conversations) of ``asked``, in order, in one round
        trip where the store has them (a resume storm asks for thousands at once)."""

    def forget(self, user_id: str, conversation_id: str) -> None:
        """The user's access to the conversation was revoked: a cached grant must not
        answer a later ``allowed`` (not even one cached by a lookup under way)."""


class SessionStore(Protocol):
    async def save(self, snapshots: Sequence[SessionSnapshot], ttl_s: float) -> None:
        """Store or replace the snapshots (in one round trip); each disappears after ``ttl_s``."""

    async def load(self, session_id: str) -> SessionSnapshot | None:
        """The snapshot if it exists and has not expired."""

    async def load_many(self, session_ids: Sequence[str]) -> list[SessionSnapshot | None]:
        """``load`` of each id, in order, in one round trip where the store has them."""

    async def delete(self, session_id: str) -> None: ...

    async def delete_user(self, user_id: str) -> None:
        """Delete every snapshot of ``user_id`` that ``load`` could still return, also those
        of connections closed long ago (CONTRACT §2 ``POST /disconnect``: no resume)."""


Announce = Callable[[str, bytes], None]
"""Publish encoded ``data`` on a channel (no prefix): what an in-process store
uses to announce its transitions through the broker."""


class PresenceStore(Protocol):
    """Who is online where, per connection with its own expiry (PITFALLS 10).

    The ``session_id`` arguments name one connection's presence entry (a resumed
    session gets a new one, so a late close of its old connection cannot take
    the user offline). A user is online in a conversation while at least one of
    their entries there has not expired.

    Transitions (a user's first entry in, last one out) are announced by the store
    itself, in the same atomic step that makes them: one ``presence.transition``
    frame (``frames.presence_transition``, with the count after it) on the
    conversation's channel per step and conversation. So each one is announced
    exactly once cluster-wide, in the order they happened, even when the caller gives
    up waiting for the answer (ISSUE 9.5); a call that never ran is reconciled by the
    next refresh or by expiry. Calls are idempotent."""

    async def join(self, conversation_id: str, user_id: str, session_id: str, expires_at: float) -> None:
        """Add or refresh the session; announces the user online if they were not."""

    async def leave(self, conversation_id: str, user_id: str, session_id: str, now: float) -> None:
        """Remove the session (and the user's other sessions there expired by ``now``);
        announces the user offline when none is left."""

    async def rejoin(self, entries: Sequence[tuple[str, str, str]], expires_at: float) -> None:
        """``join`` for many live sessions ``(conversation_id, user_id, session_id)``, in
        bounded chunks: set their expiry, re-creating entries that were lost (e.g. expired
        while Redis was away) and announcing the users that thereby came online."""

    async def refresh(self, entries: Sequence[tuple[str, str, str]], expires_at: float) -> None:
        """Set the expiry of entries that still exist to ``expires_at``, earlier or later
        (a disconnect pulls it in to ``presence_grace_s`` from now), in bounded chunks."""

    async def page(self, conversation_id: str, after: str | None, limit: int) -> PresencePage:
        """At most ``limit`` online user ids greater than ``after``, read in one bounded call."""

    async def announce(self, conversation_id: str, list_limit: int) -> None:
        """Publish a ``presence.transition`` with no joins or leaves and the current count
        (and, when ``list_limit`` > 0, ``users``: the first ``list_limit`` online ids), in
        order with the conversation's transitions."""

    async def announce_many(self, asked: Sequence[tuple[str, int]]) -> None:
        """``announce`` for each ``(conversation_id, list_limit)``, in one round trip."""

    async def expire(self, now: float) -> None:
        """Drop sessions expired by ``now``, in bounded chunks; announces the users that
        thereby went offline."""


class TypingStore(Protocol):
    """Who is typing where; an entry lives ``typing_ttl_s`` after the last ``typing``.
    Like presence, the store announces its own transitions (``typing.start`` /
    ``typing.stop`` client frames on the conversation's channel) atomically with them."""

    async def start(self, conversation_id: str, user_id: str, expires_at: float) -> None:
        """Add or refresh; announces ``typing.start`` when the user was not typing there."""

    async def stop(self, conversation_id: str, user_id: str) -> None:
        """Remove; announces ``typing.stop`` when the user was typing there."""

    async def expire(self, now: float) -> None:
        """Drop entries expired by ``now``, announcing ``typing.stop`` for each."""


class ConnectionSlots(Protocol):
    """Open connections per user (``max_connections_per_user``), cluster-wide where the
    store is shared. A slot expires ``ttl_s`` (``presence_ttl_s``) after its last claim or
    refresh, so the slots of an instance that died without a word stop counting then."""

    async def claim(self, user_id: str, slot_id: str, limit: int, now: float) -> bool:
        """Take a slot (or keep one already held); False when ``limit`` live slots are taken."""

    async def claim_many(self, claims: Sequence[tuple[str, str, int]], now: float) -> list[bool]:
        """``claim`` of each (user_id, slot_id, limit), in order, in one round trip where the
        store has them (a resume storm claims 10,000 slots at once)."""

    async def release(self, user_id: str, slot_id: str) -> None:
        """Give the slot back; idempotent."""

    async def refresh(self, slots: Sequence[tuple[str, str]], now: float) -> None:
        """Push the expiry of ``(user_id, slot_id)`` slots still held forward (one round trip)."""
