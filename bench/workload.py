"""What the bench asks of a server: who subscribes to what, and the events it publishes.

Events go through Redis PUBLISH, the way an API server or the relay sends them:
- ``gw`` peers (tornado_gw, the naive Tornado peer): channel ``<prefix>conv:<id>``, the
  exact client frame JSON with a strictly increasing ``seq`` (CONTRACT §3, §6);
- ``sio`` (Socket.IO): the @socket.io/redis-emitter format, msgpack ``[uid, packet,
  opts]`` on ``<key>#/#<room>#``, which the Redis adapter broadcasts to the room.
Each measured event carries ``sent_ns`` (CLOCK_REALTIME ns, shared by all processes on
the box) so the receiver computes the delivery latency; warm-up events carry ``warm``
instead and are only counted.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import jwt
import redis

JWT_SECRET = "bench-only-secret-never-use-in-production"
_CREATED_AT = "2025-01-01T00:00:00Z"
# Frame skeleton: what an API server's message.new looks like; the content pads it.
_GW_FRAME = ('{"type":"message.new","payload":{"conversation_id":"%s","message":{"id":"m%d",'
             '"sender_id":"u%d","content":"%s","created_at":"' + _CREATED_AT + '",%s}},"seq":%d}')


@dataclass(frozen=True)
class Workload:
    """Shape of one traffic run: ``connections`` each in ``per_connection`` of ``conversations``."""

    connections: int
    conversations: int
    per_connection: int
    event_rate: float  # events per second, spread round-robin over the conversations
    duration_s: float
    frame_bytes: int = 260

    def conversation_ids(self) -> list[str]:
        return [f"c{index}" for index in range(self.conversations)]

    def memberships(self) -> list[list[str]]:
        """Connection i joins conversations i*k .. i*k+k-1 (mod n): every one gets the same count."""
        ids = self.conversation_ids()
        k, n = self.per_connection, self.conversations
        return [[ids[(i * k + j) % n] for j in range(k)] for i in range(self.connections)]

    def members_per_conversation(self) -> Counter[str]:
        return Counter(cid for convs in self.memberships() for cid in convs)

    def deliveries_per_s(self) -> float:
        members = self.members_per_conversation()
        return self.event_rate * sum(members.values()) / self.conversations


def small_groups(first: int, end: int, per_connection: int = 5, group_size: int = 5) -> list[list[str]]:
    """Memberships of connections ``first`` .. ``end - 1``: ``per_connection`` conversations
    of ``group_size`` members each (``g<j>-<n // group_size>``)."""
    return [[f"g{j}-{n // group_size}" for j in range(per_connection)] for n in range(first, end)]


@dataclass(frozen=True)
class ClientSpec:
    """One connection the generator opens: its JWT and the conversations it subscribes to."""

    token: str
    conversations: list[str]


def make_clients(memberships: list[list[str]], first_user: int = 0) -> list[ClientSpec]:
    """A token per connection (user ``u<n>``, HS256, 6 h expiry)."""
    exp = int(time.time()) + 6 * 3600
    return [ClientSpec(jwt.encode({"sub": f"u{first_user + i}", "exp": exp}, JWT_SECRET, "HS256"), convs)
            for i, convs in enumerate(memberships)]


@dataclass
class PublishReport:
    """What one publishing phase sent: per-conversation event counts and how late it ran."""

    per_conversation: Counter[str] = field(default_factory=Counter)
    started_ns: int = 0
    ended_ns: int = 0
    max_lag_s: float = 0.0

    def expected(self, members: Counter[str]) -> int:
        return sum(count * members[cid] for cid, count in self.per_conversation.items())


class Publisher:
    """Publishes events for one server run; ``seq`` keeps increasing across phases."""

    def __init__(self, client: redis.Redis, protocol: str, prefix: str, frame_bytes: int) -> None:
        self._redis = client
        self._protocol = protocol
        self._prefix = prefix
        self._seq = 0
        skeleton = len(_GW_FRAME % ("c00", 1000000, 100, "", '"sent_ns":' + "9" * 19, 1000000))
        self._content = "x" * max(0, frame_bytes - skeleton)

    def _message(self, cid: str, stamp_key: str, stamp: int) -> tuple[str, bytes | str]:
        """Channel and body of the next event, stamped with ``stamp_key: stamp``."""
        self._seq += 1
        seq = self._seq
        if self._protocol == "sio":
            message = {"id": f"m{seq}", "sender_id": f"u{seq % 1000}", "content": self._content,
                       "created_at": _CREATED_AT, stamp_key: stamp}
            packet = {"type": 2, "data": ["message.new", {"conversation_id": cid, "message": message}],
                      "nsp": "/"}
            opts = {"rooms": [cid], "except": [], "flags": {}}
            import msgpack  # only the Socket.IO peer needs it; tools in the project's venv import this module

            return f"{self._prefix}socket.io#/#{cid}#", msgpack.packb(["emitter", packet, opts])
        frame = _GW_FRAME % (cid, seq, seq % 1000, self._content, f'"{stamp_key}":{stamp}', seq)
        return f"{self._prefix}conv:{cid}", frame

    def warm(self, conversation_ids: list[str]) -> None:
        """One warm-up event per conversation: proves the path works before measuring."""
        pipe = self._redis.pipeline(transaction=False)
        for cid in conversation_ids:
            pipe.publish(*self._message(cid, "warm", 1))
        pipe.execute()

    def run(self, conversation_ids: list[str], rate: float, duration_s: float) -> PublishReport:
        """Publish ``rate * duration_s`` events at a fixed rate, round-robin over conversations."""
        report = PublishReport(started_ns=time.time_ns())
        total, start, sent = int(rate * duration_s), time.monotonic(), 0
        while sent < total:
            elapsed = time.monotonic() - start
            due = min(total, int(elapsed * rate) + 1)
            if due <= sent:
                time.sleep(max(0.0, sent / rate - elapsed))
                continue
            report.max_lag_s = max(report.max_lag_s, elapsed - sent / rate)
            pipe = self._redis.pipeline(transaction=False)
            for index in range(sent, due):
                cid = conversation_ids[index % len(conversation_ids)]
                pipe.publish(*self._message(cid, "sent_ns", time.time_ns()))
                report.per_conversation[cid] += 1
            pipe.execute()
            sent = due
        report.ended_ns = time.time_ns()
        return report
