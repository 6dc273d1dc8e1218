"""Property-based tests of the reducer: random clients against a World, invariants after every step.

Rules connect, authenticate (fresh, resuming, refreshing), subscribe, unsubscribe,
type, query presence, publish (new and repeated seqs), lose the broker, close,
disconnect, remove and re-add members, the server's unsubscribe and disconnect,
finish slow reads and let time pass. After every step the invariants
of ``state.py`` and CONTRACT §3-§4 must hold (STYLE §7, issue 2 item 9): nobody
gets their own typing, a connection's seqs per channel strictly increase and
(once all has settled) have no gaps after its reply, presence and typing follow
the subscriptions, and nothing of a conversation above its ``membership.removed``
reaches the removed user (CONTRACT §3 v2). Presence entries are per connection (``ports.PresenceStore``):
a closed connection's entries linger ``presence_grace_s``, until its session
resumes on a new connection, whose reply takes the old entries away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.core.world import World, encode
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core import frames
from tornado_gw.core.events import rebuild
from tornado_gw.core.ids import conv_channel, conversation_of, user_channel
from tornado_gw.core.protocol import CloseCode
from tornado_gw.core.state import Connection, Limits, Phase

USERS = ("u1", "u2")
CONVS = ("c1", "c2", "c3")
MEMBERS = {"u1": {"c1", "c2", "c3"}, "u2": {"c1", "c2"}}
# Short timers so a few ticks cross them. Ticks come at most 7.5 s apart, so a live session's
# presence (refreshed every presence_ttl_s / 3) never lapses.
LIMITS = Limits(auth_timeout_s=10.0, idle_timeout_s=20.0, typing_ttl_s=5.0, presence_ttl_s=12.0,
                presence_grace_s=3.0, resume_window_s=30.0, max_subscriptions=2, rate_limit_per_s=1e6,
                rate_limit_burst=1_000_000, replay_max_events=4, check_membership=True)

conv_sets = st.lists(st.sampled_from(CONVS), min_size=1, max_size=3, unique=True).map(tuple)
channels = st.sampled_from([conv_channel(cid) for cid in CONVS] + [user_channel(u) for u in USERS])
events = st.lists(st.tuples(channels, st.sampled_from(USERS)), max_size=3)
Events = Sequence[tuple[str, str]]  # (channel, sender) of events to publish
timed_events = st.lists(st.tuples(channels, st.sampled_from(USERS), st.booleans()), max_size=3)
TimedEvents = Sequence[tuple[str, str, bool]]  # (channel, sender, before the broker confirms)


class GatewayMachine(RuleBasedStateMachine):
    """Clients drive the World; what they receive is checked as it arrives."""

    limits = LIMITS

    def __init__(self) -> None:
        super().__init__()
        self.w = World(self.limits, {user: set(cids) for user, cids in MEMBERS.items()})
        self.w.on_frame = self._received
        self.w.on_command = self._before
        self.w.on_effect = self._effect
        self.count = 0
        self.user_of: dict[str, str] = {}  # conn -> user, once auth.success arrived
        self.sessions: dict[str, str] = {}  # every session handed out -> its user
        self.seen: dict[str, int] = {}  # conn -> highest seq it received (a valid last_seq)
        self.last: dict[tuple[str, str], int] = {}  # (conn, channel) -> last seq received
        self.got: dict[tuple[str, str], set[int]] = {}
        self.floor: dict[tuple[str, str], int] = {}  # (conn, channel) -> log length at the reply
        self.fresh: dict[str, list[str]] = {}  # conn -> channels its last reply made live
        self.replaying: dict[str, tuple[list[str], int]] = {}  # conn -> (fresh channels, last_seq)
        self.grace: dict[tuple[str, str, str], float] = {}  # (cid, user, conn) -> offline at
        self.presence_conn: dict[str, str] = {}  # presence id -> the connection it names
        self.counts: dict[tuple[str, str], int] = {}  # (conn, cid) -> last presence count received
        self.cut: dict[tuple[str, str], int] = {}  # (conn, cid) -> seq of the removal it received
        self.ended: set[str] = set()  # conns closed by the server's disconnect: no presence grace
        self.violations: list[str] = []

    # --- what clients observe ----------------------------------------------------------------

    def _received(self, conn_id: str, frame: dict[str, Any]) -> None:
        kind, payload = frame.get("type"), frame.get("payload")
        if kind == "auth.success":
            self._replied(conn_id, payload)
        elif kind == "subscribed":
            for cid in payload["conversation_ids"]:
                self.cut.pop((conn_id, cid), None)
            self._live(conn_id, [conv_channel(cid) for cid in payload["conversation_ids"]])
        elif kind == "membership.removed":
            self.cut[(conn_id, payload["conversation_id"])] = frame["seq"]
            self.floor.pop((conn_id, conv_channel(payload["conversation_id"])), None)
        elif kind == "unsubscribed":
            for cid in payload["conversation_ids"]:
                self.floor.pop((conn_id, conv_channel(cid)), None)
        elif kind in ("presence.diff", "presence.state"):
            self.counts[(conn_id, payload["conversation_id"])] = payload["count"]
        elif kind == "replay.done":
            self._replayed(conn_id, payload["recovered"])
        elif kind in ("typing.start", "typing.stop") and payload["user_id"] == self.user_of.get(conn_id):
            self.violations.append(f"{conn_id} got its own {kind}")
        if "seq" in frame:
            self._numbered(conn_id, frame["seq"])
            cid = conversation_of(self.w.log[frame["seq"] - 1].channel)
            if cid is not None and frame["seq"] > self.cut.get((conn_id, cid), frame["seq"]):
                self.violations.append(f"{conn_id} got seq {frame['seq']} of {cid} after its removal")

    def _replied(self, conn_id: str, payload: dict[str, Any]) -> None:
        session_id, user_id = payload["session_id"], payload["user_id"]
        self.user_of[conn_id] = user_id
        self.sessions[session_id] = user_id
        channels = [user_channel(user_id)] + [conv_channel(cid) for cid in payload["conversation_ids"]]
        self._live(conn_id, channels)

    def _live(self, conn_id: str, channels: list[str]) -> None:
        self.fresh[conn_id] = [ch for ch in channels if (conn_id, ch) not in self.floor]
        for channel in self.fresh[conn_id]:  # counts received before this subscription are history
            self.counts.pop((conn_id, conversation_of(channel) or ""), None)
        for channel in channels:
            self.floor.setdefault((conn_id, channel), len(self.w.log))

    def _effect(self, effect: fx.Effect) -> None:
        if isinstance(effect, fx.LeavePresence):  # e.g. a resume leaving the old connection's entries
            old = self.presence_conn.get(effect.session_id)
            self.grace.pop((effect.conversation_id, effect.user_id, old or ""), None)
        if isinstance(effect, fx.LoadReplay):
            self.replaying[effect.conn_id] = (self.fresh.get(effect.conn_id, []), effect.after_seq)
        if isinstance(effect, fx.CloseConnection) and effect.code == CloseCode.DISCONNECTED:
            self.ended.add(effect.conn_id)

    def _replayed(self, conn_id: str, recovered: bool) -> None:
        """A recovered replay owes every event after ``last_seq`` on the channels it made live."""
        channels, last_seq = self.replaying.pop(conn_id)
        for channel in channels:
            if recovered and (conn_id, channel) in self.floor:
                self.floor[(conn_id, channel)] = min(self.floor[(conn_id, channel)], last_seq)

    def _numbered(self, conn_id: str, seq: int) -> None:
        channel = self.w.log[seq - 1].channel
        last = self.last.get((conn_id, channel), 0)
        if seq <= last:
            self.violations.append(f"{conn_id} got seq {seq} on {channel} after {last}")
        self.last[(conn_id, channel)] = seq
        self.got.setdefault((conn_id, channel), set()).add(seq)
        self.seen[conn_id] = max(self.seen.get(conn_id, 0), seq)

    def _before(self, cmd: c.Command) -> None:
        """A disconnect leaves each presence entry of the connection for the grace period
        (entries are per connection: a resume makes a new one, the old one runs out)."""
        if isinstance(cmd, c.Authenticate):  # a connection's first auth names its presence entry
            conn = self.w.state.connections.get(cmd.conn_id)
            if conn is not None and conn.presence_id is None:
                self.presence_conn[cmd.new_session_id] = cmd.conn_id
        if not isinstance(cmd, c.Disconnect) or cmd.conn_id not in self.w.state.connections:
            return
        conn = self.w.state.connections[cmd.conn_id]
        for cid in conn.conversations if cmd.conn_id not in self.ended else ():
            if conn.user_id is not None and (cmd.conn_id, conv_channel(cid)) in self.floor:
                self.grace[(cid, conn.user_id, cmd.conn_id)] = self.w.now + self.limits.presence_grace_s
        for key in [k for k in self.floor if k[0] == cmd.conn_id]:
            del self.floor[key]

    # --- helpers -----------------------------------------------------------------------------

    def _pick(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.w.state.connections)), label="conn")

    def _step(self, cmd: c.Command, hold: bool = False, during: TimedEvents = ()) -> None:
        """Run ``cmd``. ``during`` are published meanwhile: early ones before the broker confirms
        a new channel, the others while the log is read. ``hold`` leaves that read pending for
        ``finish_slow``."""
        self.w.submit(cmd)
        self.w.answer_stores()
        for channel, sender, early in during:
            if early:
                self._emit(channel, sender)
        self.w.settle(slow=False)
        self.w.answer_stores()
        for channel, sender, early in during:
            if not early:
                self._emit(channel, sender)
        self.w.settle(slow=not hold)

    def _emit(self, channel: str, sender: str) -> None:
        cid = conversation_of(channel)
        payload = {"conversation_id": cid, "message": {"id": "m", "sender_id": sender}} if cid else {}
        self.w.emit(channel, "message.new" if cid else "notification", payload)

    def _live_conns(self) -> list[Connection]:
        return [conn for conn in self.w.state.connections.values() if conn.phase is not Phase.CLOSING]

    # --- rules -------------------------------------------------------------------------------

    @rule(user=st.none() | st.sampled_from(USERS))
    def connect(self, user: str | None) -> None:
        """A new connection; with a user, it authenticates at once with a fresh session."""
        self.count += 1
        conn_id = f"k{self.count}"
        self._step(c.Connect(conn_id, self.w.now))
        if user is not None:
            self._step(c.Authenticate(conn_id, user, None, None, None, f"s{self.count}", self.w.now))

    @rule(cid=st.sampled_from(CONVS[:2]))
    def crowd(self, cid: str) -> None:
        """Every user joins ``cid`` on a new connection at once: the room fills up."""
        for user in USERS:
            self.connect(user)
            self._step(c.Subscribe(f"k{self.count}", (cid,), None, self.w.now))

    @precondition(lambda self: self.w.state.connections)
    @rule(data=st.data(), user=st.sampled_from(USERS), resume=st.booleans(), own=st.booleans(),
          with_last_seq=st.booleans(), hold=st.booleans(), during=timed_events)
    def authenticate(self, data: st.DataObject, user: str, resume: bool, own: bool, with_last_seq: bool,
                     hold: bool, during: TimedEvents) -> None:
        """Resume (own, another user's or an unknown session; also one whose old connection is
        still open, as after a half-open TCP connection), refresh, or the wrong user."""
        conn_id = self._pick(data)
        session_id = None
        if resume:
            session_id = data.draw(st.sampled_from([*sorted(self.sessions), "unknown"]), label="session")
            user = self.sessions.get(session_id, user) if own else user
        last_seq = self.seen.get(conn_id, 0) if with_last_seq else None
        self.count += 1
        self._step(c.Authenticate(conn_id, user, self.w.now + 45.0, session_id, last_seq, f"s{self.count}",
                                  self.w.now), hold, during)

    @precondition(lambda self: self.w.state.connections)
    @rule(data=st.data(), cids=conv_sets, with_last_seq=st.booleans(), hold=st.booleans(),
          during=timed_events)
    def subscribe(self, data: st.DataObject, cids: tuple[str, ...], with_last_seq: bool, hold: bool,
                  during: TimedEvents) -> None:
        conn_id = self._pick(data)
        last_seq = self.seen.get(conn_id, 0) if with_last_seq else None
        self._step(c.Subscribe(conn_id, cids, last_seq, self.w.now), hold, during)

    @precondition(lambda self: self.w.state.connections)
    @rule(data=st.data(), cids=conv_sets)
    def unsubscribe(self, data: st.DataObject, cids: tuple[str, ...]) -> None:
        self._step(c.Unsubscribe(self._pick(data), cids, self.w.now))

    @precondition(lambda self: self.w.state.connections)
    @rule(data=st.data(), cid=st.sampled_from(CONVS), query=st.booleans())
    def typing_or_query(self, data: st.DataObject, cid: str, query: bool) -> None:
        conn_id = self._pick(data)
        now = self.w.now
        self._step(c.PresenceQuery(conn_id, cid, None, 1, now) if query else c.Typing(conn_id, cid, now))

    @rule(channel=channels, sender=st.sampled_from(USERS))
    def publish(self, channel: str, sender: str) -> None:
        self._emit(channel, sender)
        self.w.settle(slow=False)

    @precondition(lambda self: self.w.log)
    @rule(data=st.data())
    def repeat(self, data: st.DataObject) -> None:
        """A relay retry or a gap fill overlapping live delivery: an old seq again."""
        event = data.draw(st.sampled_from(self.w.log[-5:]), label="event")
        self.w.broadcast(event.channel, event.data)
        self.w.settle(slow=False)

    @precondition(lambda self: self.w.slow)
    @rule(data=st.data())
    def finish_slow(self, data: st.DataObject) -> None:
        self.w.finish_slow(data.draw(st.integers(0, len(self.w.slow) - 1), label="slow"))
        self.w.settle(slow=False)

    @rule(lost=events)
    def outage(self, lost: Events) -> None:
        """The broker drops, events are published meanwhile, it comes back (PITFALLS 1)."""
        self.w.set_broker(False)
        for channel, sender in lost:
            self._emit(channel, sender)
        self.w.set_broker(True)
        self.w.settle(slow=False)

    @rule(up=st.booleans())
    def broker(self, up: bool) -> None:
        self.w.set_broker(up)
        self.w.settle(slow=False)

    @precondition(lambda self: self.w.state.connections)
    @rule(data=st.data(), server=st.booleans())
    def disconnect(self, data: st.DataObject, server: bool) -> None:
        conn_id = self._pick(data)
        if server:
            self._step(c.CloseRequested(conn_id, CloseCode.GOING_AWAY, "draining", self.w.now))
        else:
            self._step(c.Disconnect(conn_id, self.w.now))

    @rule(user=st.sampled_from(USERS), cid=st.sampled_from(CONVS), removed=st.booleans())
    def membership(self, user: str, cid: str, removed: bool) -> None:
        """The API server removes a member (row and event in one transaction, the event only
        when a row went: docs/delivery.md), or adds one back."""
        assert self.w.members is not None
        if removed and cid in self.w.members[user]:
            self.w.members[user].discard(cid)
            self.w.emit(user_channel(user), "membership.removed", {"conversation_id": cid})
        else:
            self.w.members[user].add(cid)
        self.w.settle(slow=False)

    @rule(user=st.sampled_from(USERS), cids=conv_sets, disconnect=st.booleans())
    def server_api(self, user: str, cids: tuple[str, ...], disconnect: bool) -> None:
        """``POST /unsubscribe`` or ``/disconnect``, arriving through the broker."""
        frame = frames.server_disconnect("banned") if disconnect else frames.server_unsubscribe(cids)
        self.w.broadcast(user_channel(user), encode(frame))
        self.w.settle(slow=False)

    @rule(seconds=st.floats(0.5, 7.5))
    def tick(self, seconds: float) -> None:
        """Reads finish well within a tick (adapter calls are bounded), then time passes."""
        self.w.settle()
        self.w.advance(seconds)

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def nothing_observed_went_wrong(self) -> None:
        assert not self.violations, self.violations

    @invariant()
    def the_state_is_the_fold_of_its_events(self) -> None:
        """Event-sourced for real: nothing changed the state but the events recorded."""
        assert rebuild(self.limits, self.w.history) == self.w.state

    @invariant()
    def subscriptions_belong_to_live_authenticated_connections(self) -> None:
        """State rules 1 and 2."""
        state = self.w.state
        assert set(state.subscribers) == self.w.channels
        for channel, conn_ids in state.subscribers.items():
            assert conn_ids, f"empty subscriber set for {channel}"
            for conn_id in conn_ids:
                conn = state.connections[conn_id]
                assert conn.user_id is not None
                assert channel == user_channel(conn.user_id) or conversation_of(channel) in conn.conversations
        for conn in state.connections.values():
            if conn.op is None and conn.session_id is not None:
                wanted = {conv_channel(cid) for cid in conn.conversations}
                wanted.add(user_channel(conn.user_id or ""))
                assert all(conn.conn_id in state.subscribers.get(ch, ()) for ch in wanted), conn

    @invariant()
    def online_iff_a_live_or_lingering_session_is_subscribed(self) -> None:
        for cid in CONVS:
            expected = {self.user_of[conn.conn_id] for conn in self._live_conns()
                        if (conn.conn_id, conv_channel(cid)) in self.floor}
            expected |= {user for (gcid, user, _), until in self.grace.items()
                         if gcid == cid and until > self.w.now}
            assert set(self.w.online(cid)) == expected, (cid, self.w.online(cid), expected)

    @invariant()
    def presence_count_is_the_number_of_online_users_once_settled(self) -> None:
        """CONTRACT §3 (v2): once the broker is up, nothing is in flight and no batch is open,
        every room's count, and the last count each subscriber received, is the number of
        users with a live (or lingering) session there."""
        w = self.w
        if not w.broker_up or w.slow or w.loop or w.serial or w.state.rooms_due:
            return
        for cid, room in w.state.rooms.items():
            online = len(w.online(cid))
            assert room.known and room.count == online, (cid, room, online)
            for conn in self._live_conns():
                received = self.counts.get((conn.conn_id, cid))
                subscribed = (conn.conn_id, conv_channel(cid)) in self.floor
                if conn.op is None and subscribed and received is not None:
                    assert received == online, (conn.conn_id, cid, received, online)

    @invariant()
    def typing_ends_with_the_typists_last_subscribed_session(self) -> None:
        """CONTRACT §3: ``typing.stop`` at once when the user's last session there leaves."""
        for cid in CONVS:
            subscribed = {self.user_of[conn.conn_id] for conn in self._live_conns()
                          if (conn.conn_id, conv_channel(cid)) in self.floor}
            assert self.w.typists(cid) <= subscribed, (cid, self.w.typists(cid), subscribed)

    @invariant()
    def nothing_is_kept_for_channels_nobody_here_watches(self) -> None:
        """State rules 3 and 5 (issue 9 §7): per-channel memory is bounded by the live channels."""
        state = self.w.state
        for conn in state.connections.values():
            channels = {conv_channel(cid) for cid in conn.conversations}
            channels |= conn.op.channels if conn.op else set()
            if conn.user_id is not None:
                channels.add(user_channel(conn.user_id))
            assert set(conn.delivered) <= channels, (conn.conn_id, conn.delivered, channels)
        assert {conv_channel(cid) for cid in state.typing} <= set(state.subscribers), state.typing

    @invariant()
    def no_gaps_once_everything_has_settled(self) -> None:
        """CONTRACT §4, §6: every event after the reply arrives, also across a broker outage."""
        w = self.w
        if not w.broker_up or w.slow or w.loop or w.serial:
            return
        for (conn_id, channel), floor in self.floor.items():
            conn = w.state.connections.get(conn_id)
            if conn is None or conn.op is not None:
                continue
            wanted = {e.seq for e in w.log[floor:] if e.channel == channel}
            missing = wanted - self.got.get((conn_id, channel), set())
            assert not missing, f"{conn_id} missed {sorted(missing)} on {channel}"


GatewayMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=40, deadline=None, report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_gateway_invariants = GatewayMachine.TestCase


class LargeRoomMachine(GatewayMachine):
    """The same with ``presence_list_max`` 1: two users make a large room, so diffs turn to
    counts, rooms shrink back to lists, and typing stops being fanned out, on every path."""

    limits = replace(LIMITS, presence_list_max=1, presence_count_interval_s=2.0)


LargeRoomMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_large_room_invariants = LargeRoomMachine.TestCase
