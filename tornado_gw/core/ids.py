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


def user_sessions_key(prefix: str, user_id: str) -> str:
    """The session ids of one user, so ``POST /disconnect`` can end them all."""
    return f"{prefix}user-sessions:{user_id}"


# Presence and typing keys share one hash tag per store, so every key a store script
# touches (a conversation's sets and the store's due index) sits in one Redis Cluster
# slot. Sharding them later means one tag per bucket of conversations.
PRESENCE_TAG = "{presence}"
TYPING_TAG = "{typing}"


def presence_key(prefix: str, conversation_id: str) -> str:
    """Sorted set of ``user_id|presence_id`` entries scored by expiry."""
    return f"{prefix}{PRESENCE_TAG}:sessions:{conversation_id}"


def presence_users_key(prefix: str, conversation_id: str) -> str:
    """Hash of user id -> number of that user's entries (its size is the count)."""
    return f"{prefix}{PRESENCE_TAG}:users:{conversation_id}"


def presence_ids_key(prefix: str, conversation_id: str) -> str:
    """Online user ids, all scored 0: read in pages by ``ZRANGE BYLEX``."""
    return f"{prefix}{PRESENCE_TAG}:ids:{conversation_id}"


def presence_versions_key(prefix: str) -> str:
    """Hash of conversation id -> number of the last presence transition announced."""
    return f"{prefix}{PRESENCE_TAG}:versions"


def presence_due_key(prefix: str) -> str:
    """Conversations scored by a lower bound of their earliest entry expiry."""
    return f"{prefix}{PRESENCE_TAG}:due"


def connections_key(prefix: str, user_id: str) -> str:
    """The user's open connections, cluster-wide (``max_connections_per_user``)."""
    return f"{prefix}connections:{user_id}"


def typing_key(prefix: str, conversation_id: str) -> str:
    return f"{prefix}{TYPING_TAG}:{conversation_id}"


def typing_due_key(prefix: str) -> str:
    return f"{prefix}{TYPING_TAG}:due"
