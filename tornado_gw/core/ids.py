"""Id validation and the names of Redis channels and keys.

CONTRACT §6: ids are 1-128 characters of letters, digits and ``-_.:@`` so that
no id can reach another tenant's channel or a Redis pattern. Every channel and
key name is built here and nowhere else.
"""

from __future__ import annotations

import re

_ID = re.compile(r"[A-Za-z0-9\-_.:@]{1,128}")

CONV = "conv:"
USER = "user:"


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a string id the contract allows."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def conv_channel(conversation_id: str) -> str:
    """Channel name without the prefix, as stored in the outbox ``channel`` column."""
    return CONV + conversation_id


def user_channel(user_id: str) -> str:
    return USER + user_id


def conversation_of(channel: str) -> str | None:
    """The conversation id of a ``conv:`` channel, else None."""
    return channel[len(CONV):] if channel.startswith(CONV) else None


def is_valid_channel(channel: object) -> bool:
    """True for ``conv:<id>`` or ``user:<id>`` with a valid id."""
    if not isinstance(channel, str):
        return False
    for kind in (CONV, USER):
        if channel.startswith(kind):
            return is_valid_id(channel[len(kind):])
    return False


def session_key(prefix: str, session_id: str) -> str:
    return f"{prefix}session:{session_id}"


def presence_key(prefix: str, conversation_id: str) -> str:
    return f"{prefix}presence:{conversation_id}"


def connections_key(prefix: str, user_id: str) -> str:
    """The user's open connections, cluster-wide (``max_connections_per_user``)."""
    return f"{prefix}connections:{user_id}"


def typing_key(prefix: str, conversation_id: str) -> str:
    return f"{prefix}typing:{conversation_id}"
