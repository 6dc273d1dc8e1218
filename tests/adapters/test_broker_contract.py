"""The Broker port's contract, run against every implementation.

One broker instance subscribes and publishes: what an instance observes through
its ``BrokerSink`` must be the same whichever adapter is configured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import ujson

from tests.support.redis import WAIT_S, RecordingSink, eventually, run
from tornado_gw.adapters.memory import MemoryBroker
from tornado_gw.adapters.redis_broker import RedisBroker
from tornado_gw.adapters.redis_publisher import RedisPublisher
from tornado_gw.ports import Broker
from tornado_gw.settings import Settings

BrokerFactory = Callable[[], Broker]


@pytest.fixture(params=["memory", "redis"])
def new_broker(request: pytest.FixtureRequest) -> BrokerFactory:
    """A factory of fresh, unstarted brokers of one implementation."""
    if request.param == "memory":
        return MemoryBroker
    settings = redis_settings(request)
    return lambda: RedisBroker(settings)


def redis_settings(request: pytest.FixtureRequest) -> Settings:
    return Settings(
        redis_host=request.getfixturevalue("redis_host"),
        prefix=request.getfixturevalue("redis_prefix"),
        probe_interval_s=0.2,
        probe_timeout_s=1.0,
    )


@asynccontextmanager
async def _started(new_broker: BrokerFactory) -> AsyncIterator[tuple[Broker, RecordingSink]]:
    broker, sink = new_broker(), RecordingSink()
    await broker.start(sink)
    try:
        yield broker, sink
    finally:
        await broker.close()


async def _ready(broker: Broker, sink: RecordingSink, *channels: str) -> None:
    for channel in channels:
        broker.subscribe(channel)
    for channel in channels:
        await eventually(lambda c=channel: sink.readies(c) > 0, f"channel_ready({channel})")


def test_broker_calls_channel_ready_before_any_message_of_the_channel(new_broker: BrokerFactory) -> None:
    async def scenario() -> None:
        async with _started(new_broker) as (broker, sink):
            broker.subscribe("conv:1")
            for n in range(50):  # published while the subscription may still be in flight
                await broker.publish("conv:1", b"early-%d" % n)
            await eventually(lambda: sink.readies("conv:1") > 0, "channel_ready(conv:1)")
            await broker.publish("conv:1", b"late")
            await eventually(lambda: b"late" in sink.messages("conv:1"), "the message published after ready")
            first_message = next(i for i, e in enumerate(sink.log) if e[:2] == ("message", "conv:1"))
            assert sink.log.index(("ready", "conv:1")) < first_message

    run(scenario())


def test_broker_preserves_order_per_channel(new_broker: BrokerFactory) -> None:
    async def scenario() -> None:
        async with _started(new_broker) as (broker, sink):
            await _ready(broker, sink, "conv:a", "user:b")
            for n in range(200):
                await broker.publish("conv:a" if n % 3 else "user:b", b"%d" % n)
            await eventually(lambda: len(sink.messages("conv:a")) + len(sink.messages("user:b")) == 200,
                             "all 200 messages")
            assert sink.messages("conv:a") == [b"%d" % n for n in range(200) if n % 3]
            assert sink.messages("user:b") == [b"%d" % n for n in range(200) if not n % 3]

    run(scenario())


def test_broker_delivers_nothing_after_unsubscribe(new_broker: BrokerFactory) -> None:
    async def scenario() -> None:
        async with _started(new_broker) as (broker, sink):
            await _ready(broker, sink, "conv:gone", "conv:marker")
            broker.unsubscribe("conv:gone")
            await broker.publish("conv:gone", b"after-unsubscribe")
            await broker.publish("conv:never", b"never-subscribed")
            await broker.publish("conv:marker", b"marker")
            await eventually(lambda: sink.messages("conv:marker") == [b"marker"], "the marker message")
            assert sink.messages("conv:gone") == []
            assert sink.messages("conv:never") == []

    run(scenario())


def test_broker_resubscribe_after_unsubscribe_is_ready_again_and_delivers(new_broker: BrokerFactory) -> None:
    async def scenario() -> None:
        async with _started(new_broker) as (broker, sink):
            await _ready(broker, sink, "conv:x")
            broker.unsubscribe("conv:x")
            broker.subscribe("conv:x")
            await eventually(lambda: sink.readies("conv:x") == 2, "a second channel_ready(conv:x)")
            await broker.publish("conv:x", b"again")
            await eventually(lambda: sink.messages("conv:x") == [b"again"], "delivery after resubscribe")

    run(scenario())


def test_broker_subscribe_on_a_live_channel_reports_ready_again(new_broker: BrokerFactory) -> None:
    async def scenario() -> None:
        async with _started(new_broker) as (broker, sink):
            await _ready(broker, sink, "conv:live")
            broker.subscribe("conv:live")
            await eventually(lambda: sink.readies("conv:live") == 2, "channel_ready for the live channel")
            assert False not in sink.statuses()

    run(scenario(), timeout=2 * WAIT_S)


# --- Redis only: between instances ------------------------------------------------------------


def test_redis_brokers_fan_out_between_instances_of_one_prefix_only(request: pytest.FixtureRequest) -> None:
    settings = redis_settings(request)
    other_tenant = Settings(redis_host=settings.redis_host, prefix=settings.prefix + "other:")

    async def scenario() -> None:
        async with _started(lambda: RedisBroker(settings)) as (sender, sender_sink), \
                _started(lambda: RedisBroker(settings)) as (receiver, sink), \
                _started(lambda: RedisBroker(other_tenant)) as (stranger, stranger_sink):
            await _ready(receiver, sink, "conv:shared")
            await _ready(stranger, stranger_sink, "conv:shared")
            await sender.publish("conv:shared", b"one")
            assert await RedisPublisher(sender).publish("conv:shared", "message.new", {"a": 1}) == {}
            await eventually(lambda: len(sink.messages("conv:shared")) == 2, "both frames at the receiver")
            first, second = sink.messages("conv:shared")
            assert first == b"one"
            assert ujson.loads(second) == {"type": "message.new", "payload": {"a": 1}}  # no seq
            assert sender_sink.messages("conv:shared") == []  # not subscribed there
            assert stranger_sink.messages("conv:shared") == []  # another prefix is another tenant

    run(scenario())
