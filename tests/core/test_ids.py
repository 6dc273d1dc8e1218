"""Ids and channel names (CONTRACT §6): no id can reach another channel or a pattern."""

from __future__ import annotations

from typing import Any

import pytest

from tornado_gw.core import ids


@pytest.mark.parametrize("value", ["a", "A-z_0.9:@", "x" * 128, "user@example.com", "conv:1"])
def test_ids_accept_allowed_characters(value: str) -> None:
    assert ids.is_valid_id(value)


@pytest.mark.parametrize("value", ["", "x" * 129, "a b", "a*", "a?", "[a]", "a\n", "é", "a/b", "\uff41",
                                   None, 7, b"abc", ["a"]])
def test_ids_refuse_everything_else(value: Any) -> None:
    assert not ids.is_valid_id(value)


def test_ids_build_channel_names_without_prefix() -> None:
    assert ids.conv_channel("42") == "conv:42"
    assert ids.user_channel("u7") == "user:u7"


def test_ids_conversation_of_reads_only_conversation_channels() -> None:
    assert ids.conversation_of("conv:42") == "42"
    assert ids.conversation_of("conv:a:b") == "a:b"
    assert ids.conversation_of("user:42") is None
    assert ids.conversation_of("42") is None


@pytest.mark.parametrize(("channel", "valid"), [
    ("conv:1", True), ("user:u-1", True), ("conv:", False), ("user:", False), ("conv:a b", False),
    ("other:1", False), ("1", False), (None, False), (3, False), ("user:" + "x" * 129, False),
])
def test_ids_validate_channels(channel: Any, valid: bool) -> None:
    assert ids.is_valid_channel(channel) is valid


def test_ids_build_keys_under_the_prefix() -> None:
    assert ids.session_key("ws:", "s1") == "ws:session:s1"
    assert ids.presence_key("t1:", "c1") == "t1:{presence}:sessions:c1"
    assert ids.typing_key("ws:", "c1") == "ws:{typing}:c1"


def test_ids_keys_of_one_store_share_a_hash_tag() -> None:
    """ISSUE 9.11: every key a store script touches lands on one Redis Cluster slot."""
    presence = [ids.presence_key("ws:", "c1"), ids.presence_users_key("ws:", "c2"),
                ids.presence_ids_key("ws:", "c3"), ids.presence_due_key("ws:")]
    typing = [ids.typing_key("ws:", "c1"), ids.typing_due_key("ws:")]
    for keys, tag in ((presence, "presence"), (typing, "typing")):
        assert {key[key.index("{") + 1:key.index("}")] for key in keys} == {tag}
        assert all(key.startswith("ws:") for key in keys)
