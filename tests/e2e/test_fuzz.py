"""Property-based fuzzing of whatever a client or an API server can send (issue 9 §13).

The rules are the contract's, checked against a real gateway process:

- every frame is answered: after it, a ``ping`` still gets its ``pong``; a
  frame that is not a JSON object with a client ``type`` gets an ``error``
  first, and ``auth``, ``subscribe``, ``unsubscribe``, ``presence.query`` get
  their reply or an ``error``, unless the gateway closed the connection with a documented code that
  this frame explains (1003 binary, 1009 too big, 4001 a failed ``auth``);
- nothing a client receives is invalid or non-strict JSON (no NaN/Infinity,
  no lone surrogate), and every frame has a server ``type``;
- ``POST /publish`` answers 2xx or 4xx, never 5xx, with Postgres and Redis up;
- the gateway never logs a traceback.

RFC 6455 §5 leaves the framing errors (unmasked frames, reserved bits, bad
opcodes, fragmented control frames) to Tornado, which fails those connections
as §7.1.7 allows; the fuzzer works on what a browser can send: text and binary
messages of any content.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Collection
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.harness import Client, GatewayProcess, T, token
from tests.e2e.test_durable import Cluster, new_cluster
from tornado_gw.core.protocol import FrameType

pytestmark = pytest.mark.e2e
cluster = pytest.fixture(new_cluster, name="cluster")

CLIENT_TYPES = ["auth", "subscribe", "unsubscribe", "typing", "presence.query", "ping"]
SERVER_TYPES = {t.value for t in FrameType} - set(CLIENT_TYPES) | {"presence.diff", "membership.removed"}
MAX_FRAME_BYTES = 8192
# Enough for every branch, few enough for well under a minute on a shared 2-core box.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
GENEROUS_LIMITS = {"rate_limit_per_s": 100000, "rate_limit_burst": 100000}

# --- what is sent --------------------------------------------------------------------------

_odd_text = st.sampled_from(["", "\ud800", "\udfff", "\u0000", "\u202e", "😀", "a" * 200, "conv:*",
                             "c1", "u1", "ws:conv:c1", "\\", '"', "NaN"])
_text = st.text(max_size=12) | _odd_text
_numbers = (st.sampled_from([0, -0.0, 2**63, 2**63 - 1, -1, 1e308, 5e-324, float("nan"), float("-inf")])
            | st.integers(min_value=-(2**70), max_value=2**70) | st.floats())
_scalars = st.none() | st.booleans() | _numbers | _text
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_text, inner, max_size=4), max_leaves=12)
_wrong = st.lists(_scalars, max_size=2) | st.dictionaries(_text, _scalars, max_size=2) | _scalars
_ids = st.lists(st.sampled_from(["c1", "c2", "calm"]) | _text, max_size=3)
_payload_fields = {
    "token": st.just("VALID") | _text | _wrong, "session_id": _text | _wrong, "last_seq": _numbers | _wrong,
    "conversation_ids": _ids | _wrong, "conversation_id": st.sampled_from(["c1", "c2"]) | _text | _wrong,
    "limit": _numbers | _wrong, "after": _text | _wrong,
}
_payload = st.fixed_dictionaries({}, optional=_payload_fields) | _json
# Mostly near-valid frames, so that the wrong value sits one level down, where parsing gets deep.
_type = (st.sampled_from(CLIENT_TYPES) | st.lists(st.sampled_from(CLIENT_TYPES), max_size=2)
         | st.dictionaries(st.sampled_from(CLIENT_TYPES), _scalars, max_size=1) | _text | _wrong)
_frame_object = st.fixed_dictionaries({"type": _type},
                                      optional={"payload": _payload, "seq": _json})


def _to_text(obj: Any, ascii_only: bool) -> str:
    """JSON text as a careless client writes it: NaN allowed, surrogates escaped."""
    text = json.dumps(obj, allow_nan=True, ensure_ascii=ascii_only)
    if not ascii_only and any("\ud800" <= ch <= "\udfff" for ch in text):
        text = json.dumps(obj, allow_nan=True)  # a WebSocket text message is UTF-8: escape them
    return text.replace('"VALID"', json.dumps(token("fuzzer")))


FRAME_TEMPLATES: list[dict[str, Any]] = [
    {"type": "auth", "payload": {"token": "VALID", "session_id": "s1", "last_seq": 0}},
    {"type": "subscribe", "payload": {"conversation_ids": ["c1", "c2"], "last_seq": 0}},
    {"type": "unsubscribe", "payload": {"conversation_ids": ["c1"]}},
    {"type": "typing", "payload": {"conversation_id": "c1"}},
    {"type": "presence.query", "payload": {"conversation_id": "c1", "limit": 10, "after": "u0"}},
    {"type": "ping", "payload": {}},
]
PUBLISH_TEMPLATE = {"channel": "conv:c1", "type": "message.new",
                    "payload": {"conversation_id": "c1", "message": {"id": "m1", "content": "hi", "n": [1]}}}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``value`` a wrong value can go (each key and index, at every level)."""
    found = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        found += _paths(inner, (*prefix, key))
    return found


def _mutated(template: dict[str, Any], pick: int, wrong: Any) -> Any:
    """``template`` (a valid message) with the value at one of its paths replaced by ``wrong``."""
    paths = _paths(template)[1:]
    *parents, last = paths[pick % len(paths)]
    copy = json.loads(json.dumps(template))
    target = copy
    for key in parents:
        target = target[key]
    target[last] = wrong
    return copy


_mutated_frame = st.builds(_mutated, st.sampled_from(FRAME_TEMPLATES), st.integers(0, 50), _numbers | _json)
_mutated_frame_text = st.builds(_to_text, _mutated_frame, st.booleans())
_frame_text = st.builds(_to_text, _frame_object, st.booleans())
_message = (_mutated_frame_text | _frame_text | _mutated_frame_text
            | st.builds(_to_text, _json, st.just(True))
            | st.text(max_size=40)
            | st.binary(max_size=40)
            | st.sampled_from(["{", '{"type":', "[" * 5000, '{"type": "ping"}' + " " * MAX_FRAME_BYTES]))


def _expects_error(message: str | bytes) -> bool:
    """A message that can only be answered with ``error``: not an object with a client type."""
    if isinstance(message, bytes):
        return False
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError):
        return True
    return not isinstance(obj, dict) or obj.get("type") not in CLIENT_TYPES


def _expects_reply(message: str | bytes) -> bool:
    """A frame of a client type that always gets a reply or an ``error`` (not ``typing``,
    answered by nothing when valid, nor ``ping``, whose ``pong`` is counted apart)."""
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("type") in ("auth", "subscribe", "unsubscribe", "presence.query")


# --- what is received ----------------------------------------------------------------------

def _refuse(constant: str) -> Any:
    raise ValueError(f"non-strict JSON constant {constant}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} overflows")
    return value


def strict(raw: str | bytes, types: Collection[str] = SERVER_TYPES) -> dict[str, Any]:
    """Parse a frame as a browser would, and stricter: no NaN/Infinity, no lone surrogate.
    ``types``: what its ``type`` may be (an application's events may have any)."""
    assert isinstance(raw, str), f"the gateway sent a binary frame: {raw!r}"
    obj = json.loads(raw, parse_constant=_refuse, parse_float=_finite)
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode()  # raises on a lone surrogate
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    assert isinstance(obj, dict) and isinstance(obj.get("type"), str), raw
    assert not types or obj["type"] in types, raw
    return obj


def _explains(code: int | None, message: str | bytes) -> bool:
    """Whether ``message`` is a documented reason for closing with ``code``."""
    if code == 1003:
        return isinstance(message, bytes)
    if code == 1009:
        return len(message if isinstance(message, bytes) else message.encode()) > MAX_FRAME_BYTES
    if code == 4001:
        return isinstance(message, str) and '"auth"' in message
    return False


def _is_ping(message: str | bytes) -> bool:
    """A ``ping`` the gateway answers with ``pong`` (its own JSON is strict, its payload an object)."""
    try:
        obj = strict(message, types=())
    except (AssertionError, ValueError, RecursionError):
        return False
    return obj["type"] == "ping" and isinstance(obj.get("payload", {}), dict)


async def _until_pongs(ws: websockets.ClientConnection, pongs: int) -> list[dict[str, Any]]:
    """Every frame up to the ``pongs``-th ``pong``, pongs left out."""
    frames = []
    while pongs:
        frame = strict(await asyncio.wait_for(ws.recv(), T))
        if frame["type"] == "pong":
            pongs -= 1
        else:
            frames.append(frame)
    return frames


async def _conversation(gateway: GatewayProcess, authenticated: bool, messages: list[str | bytes]) -> None:
    async with websockets.connect(gateway.ws_url, open_timeout=T, max_size=None) as ws:
        if authenticated:
            await ws.send(json.dumps({"type": "auth", "payload": {"token": token("fuzzer")}}))
            assert strict(await asyncio.wait_for(ws.recv(), T))["type"] == "auth.success"
        for sent, message in enumerate(messages, 1):
            await ws.send(message)
            await ws.send('{"type": "ping"}')
            try:
                answers = await _until_pongs(ws, 1 + _is_ping(message))
            except websockets.ConnectionClosed as closed:
                # The close may follow the pong of a later ping: any message sent so far may explain it.
                code = closed.rcvd.code if closed.rcvd else None
                assert any(_explains(code, m) for m in messages[:sent]), f"closed with {code}: {messages}"
                return
            if _expects_error(message):
                assert "error" in [frame["type"] for frame in answers], (message, answers)
            elif _expects_reply(message):
                assert answers, f"no reply to {message!r}"


def _run(gateway: GatewayProcess, scenario: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 4 * T))
    assert "Traceback" not in gateway.logs(), gateway.logs()[-3000:]


@pytest.fixture
def fuzzed(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return start_gateway(**GENEROUS_LIMITS)


@FUZZ
@given(authenticated=st.booleans(), messages=st.lists(_message, min_size=1, max_size=4))
def test_every_frame_is_answered_and_every_answer_is_strict_json(
        fuzzed: GatewayProcess, authenticated: bool, messages: list[str | bytes]) -> None:
    _run(fuzzed, lambda: _conversation(fuzzed, authenticated, messages))


# --- POST /publish ---------------------------------------------------------------------------

_channel = st.sampled_from(["conv:c1", "user:fuzzer", "conv:c1", "conv:", "room:1", "conv:a*b"]) | _wrong
_publish_object = st.fixed_dictionaries(
    {"channel": _channel, "type": st.sampled_from(["message.new", "x"]) | _text | _wrong,
     "payload": st.dictionaries(_text, _numbers | _json, max_size=3) | _wrong}, optional={"extra": _json})
_publish_text = st.builds(_to_text, _publish_object, st.booleans()).map(str.encode)
_mutated_publish_text = st.builds(_to_text, st.builds(_mutated, st.just(PUBLISH_TEMPLATE), st.integers(0, 50),
                                                      _numbers | _json), st.booleans()).map(str.encode)
_body = (_mutated_publish_text | _publish_text | _mutated_publish_text
         | st.builds(_to_text, _json, st.just(True)).map(str.encode)
         | st.binary(max_size=60))


async def _publish_all(gateway: GatewayProcess, bodies: list[bytes]) -> None:
    subscriber = await Client.connect(gateway)
    await subscriber.auth("fuzzer")
    await subscriber.subscribe("c1")
    loop = asyncio.get_running_loop()
    for body in bodies:
        status, answer = await loop.run_in_executor(None, gateway.http, "POST", "/publish", body)
        assert 200 <= status < 500, (body, status, answer)
    marker = json.dumps({"channel": "conv:c1", "type": "fuzz.done", "payload": {}}).encode()
    status, _ = await loop.run_in_executor(None, gateway.http, "POST", "/publish", marker)
    assert status == 202
    async for raw in subscriber.ws:
        if strict(raw, types=())["type"] == "fuzz.done":
            break
    await subscriber.close()


@FUZZ
@given(bodies=st.lists(_body, min_size=1, max_size=4))
def test_publish_never_answers_5xx_and_delivers_only_strict_json(
        fuzzed: GatewayProcess, bodies: list[bytes]) -> None:
    _run(fuzzed, lambda: _publish_all(fuzzed, bodies))


@pytest.fixture
def durable(cluster: Cluster) -> GatewayProcess:
    cluster.relay()
    return cluster.gateway(authorization="none", **GENEROUS_LIMITS)


@settings(FUZZ, max_examples=30)
@given(bodies=st.lists(_body, min_size=1, max_size=4))
def test_publish_to_the_outbox_never_answers_5xx(durable: GatewayProcess, bodies: list[bytes]) -> None:
    """The same through Postgres (an outbox row) and the relay (Redis)."""
    _run(durable, lambda: _publish_all(durable, bodies))
