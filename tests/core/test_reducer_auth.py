"""``auth``: new sessions, resume, token refresh and failures (CONTRACT §3, §4)."""

from __future__ import annotations

from tests.core.support import (
    closes,
    connect,
    disconnect,
    error_codes,
    kinds,
    login,
    of,
    saved,
    sent,
    subscribe,
    take,
    world,
)
from tornado_gw.core import commands as c
from tornado_gw.core import effects as fx
from tornado_gw.core.records import SessionSnapshot
from tornado_gw.core.reducer import handle
from tornado_gw.core.state import Gateway, Phase

AT = 10.0


def authenticate(conn_id: str, user_id: str, session_id: str | None = None, expires_at: float | None = None,
                 at: float = AT) -> c.Authenticate:
    return c.Authenticate(conn_id, user_id, expires_at, session_id, None, f"s-{conn_id}", at)


def test_auth_new_session_replies_once_the_user_channel_is_live() -> None:
    state = Gateway()
    handle(state, c.Connect("a", AT))
    effects = handle(state, authenticate("a", "u1")).effects
    assert of(effects, fx.SubscribeChannel) == [fx.SubscribeChannel("user:u1")]
    assert sent(effects, "a", "auth.success") == []  # CONTRACT §4: channels live before the reply

    effects = handle(state, c.ChannelReady("user:u1", AT)).effects
    assert sent(effects, "a", "auth.success") == [
        {"user_id": "u1", "session_id": "s-a", "resumed": False, "conversation_ids": []}]
    limits = state.limits
    live_ttl = limits.resume_window_s + limits.presence_ttl_s
    assert saved(effects) == [(SessionSnapshot("s-a", "u1", (), "s-a"), live_ttl)]
    assert state.subscribers == {"user:u1": {"a"}}
    assert state.connections["a"].phase is Phase.AUTHENTICATED


def test_auth_replies_at_once_when_the_user_channel_is_already_live() -> None:
    w = world()
    login(w, "a", "u1")
    connect(w, "b")
    effects = w.submit(authenticate("b", "u1", at=w.now))
    assert of(effects, fx.SubscribeChannel) == []
    assert [p["session_id"] for p in sent(effects, "b", "auth.success")] == ["s-b"]
    assert w.state.subscribers == {"user:u1": {"a", "b"}}


def test_auth_resume_restores_own_session() -> None:
    w = world()
    first = login(w, "a", "u1")
    session_id = first[0]["payload"]["session_id"]
    subscribe(w, "a", "c1", "c2")
    disconnect(w, "a")

    connect(w, "b")
    effects = w.submit(authenticate("b", "u1", session_id=session_id, at=w.now))
    assert of(effects, fx.LoadSession) == [fx.LoadSession("b", session_id)]
    assert sent(effects, "b", "auth.success") == []
    w.settle()
    assert kinds(frames := take(w, "b")) == ["auth.success"]
    assert frames[0]["payload"] == {"user_id": "u1", "session_id": session_id, "resumed": True,
                                    "conversation_ids": ["c1", "c2"]}
    assert w.state.subscribers == {"user:u1": {"b"}, "conv:c1": {"b"}, "conv:c2": {"b"}}


def test_auth_unknown_session_gets_a_new_session() -> None:
    w = world()
    frames = login(w, "a", "u1", session_id="never-made")
    assert frames[0]["payload"] == {"user_id": "u1", "session_id": "s-a", "resumed": False,
                                    "conversation_ids": []}


def test_auth_other_users_session_gets_a_new_session_and_nothing_of_theirs() -> None:
    w = world()
    login(w, "a", "u1")
    subscribe(w, "a", "secret")
    disconnect(w, "a")
    frames = login(w, "b", "u2", session_id="s-a")
    assert frames[0]["payload"] == {"user_id": "u2", "session_id": "s-b", "resumed": False,
                                    "conversation_ids": []}
    assert "conv:secret" not in w.state.subscribers


def test_auth_resume_within_the_window_succeeds() -> None:
    w = world(resume_window_s=120.0)
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    disconnect(w, "a")
    w.now += 119.0
    assert login(w, "b", "u1", session_id="s-a")[0]["payload"]["resumed"] is True


def test_auth_resume_after_the_window_gets_a_new_session() -> None:
    """CONTRACT §4: a session can be resumed ``resume_window_s`` after its connection closed."""
    w = world(resume_window_s=120.0, presence_ttl_s=90.0)
    login(w, "a", "u1")
    subscribe(w, "a", "c1")
    disconnect(w, "a")  # the client went away: no server-side close first
    w.now += 121.0
    frames = login(w, "b", "u1", session_id="s-a")
    assert frames[0]["payload"]["resumed"] is False
    assert frames[0]["payload"]["conversation_ids"] == []


def test_auth_disconnect_keeps_the_session_for_the_resume_window_only() -> None:
    w = world(resume_window_s=120.0, presence_ttl_s=90.0)
    login(w, "a", "u1")
    effects = w.submit(c.Disconnect("a", w.now))
    assert [ttl for _, ttl in saved(effects)] == [120.0]


def test_auth_refresh_with_same_user_extends_the_token() -> None:
    w = world(idle_timeout_s=1000.0)
    login(w, "a", "u1", expires_at=w.now + 30)
    subscribe(w, "a", "c1")
    effects = w.submit(c.Authenticate("a", "u1", w.now + 100, "ignored", None, "unused", w.now))
    assert sent(effects, "a", "auth.success") == [
        {"user_id": "u1", "session_id": "s-a", "resumed": False, "conversation_ids": ["c1"]}]
    assert closes(w.advance(31.0)) == {}
    assert closes(w.advance(70.0)) == {"a": 4003}


def test_auth_with_another_users_token_is_refused_and_closed() -> None:
    w = world()
    login(w, "a", "u1")
    effects = w.submit(authenticate("a", "u2", at=w.now))
    assert [p["code"] for p in sent(effects, "a", "auth.error")] == ["user_mismatch"]
    assert closes(effects) == {"a": 4001}
    assert w.state.connections["a"].user_id == "u1"
    assert handle(w.state, c.Ping("a", w.now)).effects == []  # closing: nothing more is sent


def test_auth_failed_sends_auth_error_then_closes_4001() -> None:
    state = Gateway()
    handle(state, c.Connect("a", AT))
    effects = handle(state, c.AuthFailed("a", "token_expired", "token has expired", AT)).effects
    assert effects == [
        fx.SendFrame("a", {"type": "auth.error", "payload": {"code": "token_expired",
                                                             "message": "token has expired"}}),
        fx.CloseConnection("a", effects[1].code, "authentication failed"),
    ]
    assert closes(effects) == {"a": 4001}
    assert handle(state, c.AuthFailed("a", "x", "again", AT)).effects == []


def test_auth_second_auth_while_the_first_runs_is_answered_after_it() -> None:
    w = world()
    connect(w, "a")
    w.submit(authenticate("a", "u1", session_id="s-old", at=w.now))  # waits for LoadSession
    assert w.submit(authenticate("a", "u1", at=w.now)) == []
    w.settle()
    frames = take(w, "a")
    assert kinds(frames) == ["auth.success", "auth.success"]
    assert {f["payload"]["session_id"] for f in frames} == {"s-a"}


def test_auth_resume_rechecks_membership() -> None:
    members = {"u1": {"c1", "c2"}}
    w = world(check_membership=True, members=members)
    login(w, "a", "u1")
    subscribe(w, "a", "c1", "c2")
    disconnect(w, "a")
    members["u1"] = {"c2"}
    frames = login(w, "b", "u1", session_id="s-a")
    assert frames[0]["payload"]["resumed"] is True
    assert frames[0]["payload"]["conversation_ids"] == ["c2"]
    assert "conv:c1" not in w.state.subscribers


def test_auth_session_loaded_after_the_connection_left_is_ignored() -> None:
    w = world()
    connect(w, "a")
    w.submit(authenticate("a", "u1", session_id="s-x", at=w.now))
    w.submit(c.Disconnect("a", w.now))
    snapshot = SessionSnapshot("s-x", "u1", ("c1",))
    assert w.submit(c.SessionLoaded("a", snapshot, w.now)) == []
    assert w.state.subscribers == {}


def test_auth_stray_session_loaded_does_not_touch_a_live_connection() -> None:
    w = world()
    login(w, "a", "u1")
    assert w.submit(c.SessionLoaded("a", SessionSnapshot("s-a", "u1", ("c9",)), w.now)) == []
    assert w.state.connections["a"].conversations == set()


def test_auth_required_before_other_commands() -> None:
    state = Gateway()
    handle(state, c.Connect("a", AT))
    for cmd, ref_type in [(c.Subscribe("a", ("c1",), None, AT), "subscribe"),
                          (c.Unsubscribe("a", ("c1",), AT), "unsubscribe"),
                          (c.Typing("a", "c1", AT), "typing"),
                          (c.PresenceQuery("a", "c1", None, 500, AT), "presence.query")]:
        assert error_codes(handle(state, cmd).effects, "a") == [("unauthenticated", ref_type)]
    assert state.subscribers == {}
    assert sent(handle(state, c.Ping("a", AT)).effects, "a", "pong") == [{}]


def test_auth_commands_for_unknown_connections_are_dropped() -> None:
    state = Gateway()
    assert handle(state, authenticate("ghost", "u1")).effects == []
    assert handle(state, c.Ping("ghost", AT)).effects == []
    assert state.connections == {}


def test_auth_bad_frame_is_answered_with_its_error() -> None:
    state = Gateway()
    handle(state, c.Connect("a", AT))
    effects = handle(state, c.BadFrame("a", c.ErrorCode.INVALID_JSON, "not JSON", None, AT)).effects
    assert sent(effects, "a", "error") == [{"code": "invalid_json", "message": "not JSON", "ref_type": None}]
