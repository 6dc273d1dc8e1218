"""The real runtime in process: ``Dispatcher``, ``EffectRunner`` and ``BrokerFeed``
around the reducer, with the in-process adapters (or ones that hang or fail).

Only the sockets are replaced: ``Sockets`` records what each connection would
be sent, decoded, in order (the web layer's own tests cover the bytes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tornado_gw import codec
from tornado_gw.adapters import memory
from tornado_gw.core import commands as c
from tornado_gw.core.state import Gateway, Limits
from tornado_gw.runtime.clock import now
from tornado_gw.runtime.dispatcher import Dispatcher
from tornado_gw.runtime.effects import Adapters, EffectRunner
from tornado_gw.runtime.feed import BrokerFeed

Frame = dict[str, Any]
_ids = itertools.count(1)


class Sockets:
    """The ``Transport``: frames per connection, decoded, in the order they were sent."""

    def __init__(self) -> None:
        self.frames: dict[str, list[Frame]] = {}
        self.closed: dict[str, int] = {}

    def send(self, conn_id: str, data: bytes) -> None:
        self.frames.setdefault(conn_id, []).append(json.loads(data))

    def send_many(self, conn_ids: Sequence[str], data: bytes) -> None:
        for conn_id in conn_ids:
            self.send(conn_id, data)

    def send_paced(self, conn_id: str, payloads: Sequence[bytes]) -> None:
        for data in payloads:
            self.send(conn_id, data)

    def close(self, conn_id: str, code: int, reason: str) -> None:
        self.closed.setdefault(conn_id, code)

    def of(self, conn_id: str, kind: str) -> list[Any]:
        """The payloads of the frames of type ``kind`` sent to ``conn_id``, in order."""
        return [frame["payload"] for frame in self.frames.get(conn_id, []) if frame["type"] == kind]


class LossyBroker(memory.MemoryBroker):
    """The in-process broker with a network in front of it that can fail: while down,
    what is published is lost and the sink is told, as the Redis broker does."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.confirming = True  # False: subscriptions are never confirmed (a hung Redis)

    def subscribe(self, channel: str) -> None:
        if self.confirming:
            super().subscribe(channel)

    async def publish(self, channel: str, data: bytes) -> None:
        if not self.down:
            await super().publish(channel, data)

    def outage(self, down: bool) -> None:
        self.down = down
        assert self._sink is not None
        self._sink.status(not down, "test outage" if down else "reconnected")


class Runtime:
    """One gateway's runtime, started on the running loop."""

    def __init__(self, limits: Limits | None = None, log_events: int = 1_000_000, **adapters: Any) -> None:
        self.broker = LossyBroker()
        self.log = memory.MemoryLog(self.broker, log_events)  # publishes; the runtime reads ``adapters.log``
        base = Adapters(self.broker, self.log, memory.MemorySessions(),
                        memory.MemoryPresence(self.broker.publish_nowait),
                        memory.MemoryTyping(self.broker.publish_nowait), memory.AllowAllMembership())
        self.adapters = replace(base, **adapters)
        self.dispatcher = Dispatcher(Gateway(limits or Limits()))
        self.sockets = Sockets()
        self.runner = EffectRunner(self.adapters, self.sockets, self.dispatcher.submit, codec.encode,
                                   codec.decode_or_none)
        self.dispatcher.attach(self.runner.perform)
        self.feed = BrokerFeed(self.dispatcher.submit, codec.decode_or_none)

    async def __aenter__(self) -> Runtime:
        await self.broker.start(self.feed)
        self.submit(c.LogHeadKnown(await self.log.head_seq(), now()))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(asyncio.TimeoutError):  # writes to a hung store never drain
            await self.runner.stop(1.0)

    def submit(self, cmd: c.Command) -> None:
        self.dispatcher.submit(cmd)

    def tick(self) -> None:
        self.submit(c.Tick(now()))

    def connect(self) -> str:
        conn_id = f"r{next(_ids)}"
        self.submit(c.Connect(conn_id, now()))
        return conn_id

    def auth(self, conn_id: str, user_id: str, session_id: str | None = None,
             last_seq: int | None = None) -> None:
        self.submit(c.Authenticate(conn_id, user_id, None, session_id, last_seq, f"s{next(_ids)}", now()))

    def subscribe(self, conn_id: str, *conversation_ids: str, last_seq: int | None = None) -> None:
        self.submit(c.Subscribe(conn_id, conversation_ids, last_seq, now()))

    def frames(self, conn_id: str, kind: str | None = None) -> list[Frame]:
        got = self.sockets.frames.get(conn_id, [])
        return [f for f in got if kind is None or f["type"] == kind]

    def seqs(self, conn_id: str) -> list[int]:
        return [f["seq"] for f in self.frames(conn_id) if "seq" in f]

    async def publish(self, conversation_id: str, n: int = 0) -> int:
        answer = await self.log.publish(f"conv:{conversation_id}", "message.new",
                                        {"conversation_id": conversation_id, "n": n})
        return int(answer["seq"])

    async def wait_for(self, conn_id: str, kind: str, count: int = 1, timeout_s: float = 5.0) -> list[Frame]:
        """The first ``count`` frames of ``kind`` once they have arrived; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while len(self.frames(conn_id, kind)) < count:
            assert time.monotonic() < deadline, f"{conn_id} got no {count} x {kind}: {self.frames(conn_id)}"
            await asyncio.sleep(0.005)
        return self.frames(conn_id, kind)[:count]

    async def settle(self, seconds: float = 0.05) -> None:
        await asyncio.sleep(seconds)


class Hang:
    """An adapter whose every call waits for ever (a dependency that accepts the
    connection and never answers); ``calls`` counts them."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        async def hang(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            await asyncio.Event().wait()
        return hang


class RoundTrips:
    """An adapter in front of ``inner`` whose every async call costs one round trip of
    ``round_trip_s`` (a store over the network); ``calls`` counts them by method."""

    def __init__(self, inner: Any, round_trip_s: float) -> None:
        self.inner = inner
        self.round_trip_s = round_trip_s
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            await asyncio.sleep(self.round_trip_s)
            return await method(*args, **kwargs)
        return call


class Fail:
    """An adapter whose every call raises (a dependency that refuses)."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionRefusedError(f"{name}: connection refused")
        return fail
