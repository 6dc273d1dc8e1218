"""Client frame -> command (CONTRACT §3): every type, every bad shape, never an exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tornado_gw.core import commands as c
from tornado_gw.core.parse import MAX_SEQ, MAX_TOKEN_CHARS, AuthRequest, parse_client_frame
from tornado_gw.core.protocol import ErrorCode, FrameType

AT = 5.0


def parse(obj: Any) -> c.Command | AuthRequest:
    return parse_client_frame("a", obj, AT)


def rejected(obj: Any) -> tuple[str, str | None]:
    cmd = parse(obj)
    assert isinstance(cmd, c.BadFrame), cmd
    assert (cmd.conn_id, cmd.at) == ("a", AT)
    return cmd.code.value, cmd.ref_type


def test_parse_auth_with_resume_fields() -> None:
    cmd = parse({"type": "auth", "payload": {"token": "t.k.n", "session_id": "s-1", "last_seq": 7}})
    assert cmd == AuthRequest("a", "t.k.n", "s-1", 7, AT)


def test_parse_auth_with_token_only() -> None:
    assert parse({"type": "auth", "payload": {"token": "x"}}) == AuthRequest("a", "x", None, None, AT)


@pytest.mark.parametrize("session_id", ["", "has space", "a*", "x" * 129, 12, None, ["s"]])
def test_parse_auth_treats_malformed_session_as_unknown(session_id: Any) -> None:
    """CONTRACT §3: an unknown session is not an error; the client gets a new one."""
    cmd = parse({"type": "auth", "payload": {"token": "x", "session_id": session_id}})
    assert cmd == AuthRequest("a", "x", None, None, AT)


def test_parse_subscribe_deduplicates_ids_in_order() -> None:
    cmd = parse({"type": "subscribe", "payload": {"conversation_ids": ["b", "a", "b", "c", "a"]}})
    assert cmd == c.Subscribe("a", ("b", "a", "c"), None, AT)


def test_parse_subscribe_with_last_seq() -> None:
    cmd = parse({"type": "subscribe", "payload": {"conversation_ids": ["c1"], "last_seq": 0}})
    assert cmd == c.Subscribe("a", ("c1",), 0, AT)


def test_parse_unsubscribe_deduplicates_ids() -> None:
    cmd = parse({"type": "unsubscribe", "payload": {"conversation_ids": ["c1", "c1"]}})
    assert cmd == c.Unsubscribe("a", ("c1",), AT)


def test_parse_typing_and_presence_query() -> None:
    assert parse({"type": "typing", "payload": {"conversation_id": "c-1"}}) == c.Typing("a", "c-1", AT)
    query = parse({"type": "presence.query", "payload": {"conversation_id": "c:1@x"}})
    assert query == c.PresenceQuery("a", "c:1@x", None, 500, AT)
    payload = {"conversation_id": "c1", "limit": 1000, "after": "u9"}
    query = parse({"type": "presence.query", "payload": payload})
    assert query == c.PresenceQuery("a", "c1", "u9", 1000, AT)


@pytest.mark.parametrize("extra", [{"limit": 0}, {"limit": 1001}, {"limit": "5"}, {"limit": True},
                                   {"limit": 2.5}, {"after": ""}, {"after": 7}, {"after": "a|b"}])
def test_parse_presence_query_bounds_limit_and_after(extra: dict[str, object]) -> None:
    """CONTRACT §3: ``limit`` 1-1000, ``after`` a user id (a ``next`` from before)."""
    cmd = parse({"type": "presence.query", "payload": {"conversation_id": "c1", **extra}})
    assert isinstance(cmd, c.BadFrame) and cmd.code is ErrorCode.INVALID_MESSAGE
    assert cmd.ref_type == "presence.query"


@pytest.mark.parametrize("frame", [{"type": "ping"}, {"type": "ping", "payload": {}},
                                   {"type": "ping", "payload": {"x": 1}}])
def test_parse_ping_needs_no_payload(frame: dict[str, Any]) -> None:
    assert parse(frame) == c.Ping("a", AT)


def test_parse_ignores_unknown_fields() -> None:
    frame = {"type": "subscribe", "id": 9, "extra": [1], "payload": {"conversation_ids": ["c1"], "x": {}}}
    assert parse(frame) == c.Subscribe("a", ("c1",), None, AT)
    auth = {"type": "auth", "payload": {"token": "t", "sub": "u", "last_seq": None}, "seq": 3}
    assert parse(auth) == AuthRequest("a", "t", None, None, AT)


@pytest.mark.parametrize("obj", [[], [{"type": "ping"}], "ping", 1, 1.5, None, True])
def test_parse_rejects_non_object_frame(obj: Any) -> None:
    assert rejected(obj) == ("invalid_message", None)


@pytest.mark.parametrize("frame", [{}, {"payload": {}}, {"type": 1}, {"type": None}, {"type": ["ping"]}])
def test_parse_rejects_frame_without_string_type(frame: dict[str, Any]) -> None:
    assert rejected(frame) == ("invalid_message", None)


@pytest.mark.parametrize("kind", ["", "pong", "auth.success", "PING", "subscribed", "x" * 70])
def test_parse_rejects_unknown_type_naming_it(kind: str) -> None:
    assert rejected({"type": kind, "payload": {}}) == ("unknown_type", kind[:64])


def test_parse_unknown_type_message_is_bounded() -> None:
    cmd = parse({"type": "x" * 10_000})
    assert isinstance(cmd, c.BadFrame)
    assert len(cmd.message) < 100


@pytest.mark.parametrize("kind", [t.value for t in (FrameType.AUTH, FrameType.SUBSCRIBE, FrameType.PING)])
@pytest.mark.parametrize("payload", [[], "x", 3, True])
def test_parse_rejects_non_object_payload(kind: str, payload: Any) -> None:
    assert rejected({"type": kind, "payload": payload}) == ("invalid_message", kind)


@pytest.mark.parametrize("payload", [{}, {"token": ""}, {"token": 5}, {"token": None}, {"token": ["t"]},
                                     {"token": "x" * (MAX_TOKEN_CHARS + 1)}])
def test_parse_rejects_auth_without_usable_token(payload: dict[str, Any]) -> None:
    assert rejected({"type": "auth", "payload": payload}) == ("invalid_message", "auth")


def test_parse_accepts_token_at_the_size_limit() -> None:
    assert isinstance(parse({"type": "auth", "payload": {"token": "x" * MAX_TOKEN_CHARS}}), AuthRequest)


@pytest.mark.parametrize("last_seq", [-1, 1.0, 0.5, "3", [3], {}, True, False, MAX_SEQ + 1, 10**100,
                                      -(10**100)])
@pytest.mark.parametrize("kind", ["auth", "subscribe"])
def test_parse_rejects_bad_last_seq(kind: str, last_seq: Any) -> None:
    """Booleans are ints in Python but not sequence numbers; huge ints are refused, not stored."""
    payload = {"token": "t", "conversation_ids": ["c1"], "last_seq": last_seq}
    assert rejected({"type": kind, "payload": payload}) == ("invalid_message", kind)


def test_parse_accepts_largest_last_seq() -> None:
    cmd = parse({"type": "subscribe", "payload": {"conversation_ids": ["c1"], "last_seq": MAX_SEQ}})
    assert cmd == c.Subscribe("a", ("c1",), MAX_SEQ, AT)


@pytest.mark.parametrize("ids", [None, "c1", {"c1": 1}, [], ["c1", ""], ["c1", 2], [None], [["c1"]],
                                 ["c 1"], ["c/1"], ["c*"], ["é"], ["x" * 129], ["c1\n"]])
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
def test_parse_rejects_bad_conversation_ids(kind: str, ids: Any) -> None:
    payload: dict[str, Any] = {} if ids is None else {"conversation_ids": ids}
    assert rejected({"type": kind, "payload": payload}) == ("invalid_message", kind)


@pytest.mark.parametrize("cid", [None, 1, "", "a b", "x" * 129, ["c1"], "*"])
@pytest.mark.parametrize("kind", ["typing", "presence.query"])
def test_parse_rejects_bad_conversation_id(kind: str, cid: Any) -> None:
    payload: dict[str, Any] = {} if cid is None else {"conversation_id": cid}
    assert rejected({"type": kind, "payload": payload}) == ("invalid_message", kind)


def test_parse_error_message_names_the_frame_type() -> None:
    cmd = parse({"type": "typing", "payload": {}})
    assert isinstance(cmd, c.BadFrame) and cmd.message.startswith("typing:")


def test_wire_enums_print_as_their_wire_value() -> None:
    assert str(FrameType.TYPING_START) == "typing.start"
    assert str(ErrorCode.TOO_MANY_SUBSCRIPTIONS) == "too_many_subscriptions"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
frame_types = st.sampled_from([t.value for t in FrameType]) | st.text(max_size=6)
payload_keys = st.sampled_from(["token", "session_id", "last_seq", "conversation_ids", "conversation_id"])


@settings(max_examples=300, deadline=None)
@given(kind=frame_types, payload=st.dictionaries(payload_keys, json_values, max_size=5) | json_values)
def test_parse_never_raises_and_commands_carry_valid_fields(kind: str, payload: Any) -> None:
    cmd = parse({"type": kind, "payload": payload})
    if isinstance(cmd, (c.Subscribe, AuthRequest)):
        assert cmd.last_seq is None or (type(cmd.last_seq) is int and 0 <= cmd.last_seq <= MAX_SEQ)
    if isinstance(cmd, (c.Subscribe, c.Unsubscribe)):
        assert cmd.conversation_ids and len(set(cmd.conversation_ids)) == len(cmd.conversation_ids)
    assert isinstance(cmd, (c.BadFrame, AuthRequest, c.Subscribe, c.Unsubscribe, c.Typing,
                            c.PresenceQuery, c.Ping))
