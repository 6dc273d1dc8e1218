"""Wire vocabulary of CONTRACT §3: frame types, close codes, error codes.

Declared once here; every other module refers to these names.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class FrameType(str, Enum):
    # client -> server
    AUTH = "auth"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    TYPING = "typing"
    PRESENCE_QUERY = "presence.query"
    PING = "ping"
    # server -> client
    AUTH_SUCCESS = "auth.success"
    AUTH_ERROR = "auth.error"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    TYPING_START = "typing.start"
    TYPING_STOP = "typing.stop"
    PRESENCE_STATE = "presence.state"
    PRESENCE_DIFF = "presence.diff"
    PONG = "pong"
    REPLAY_DONE = "replay.done"
    ERROR = "error"
    MESSAGE_NEW = "message.new"
    MEMBERSHIP_REMOVED = "membership.removed"  # an outbox event on user:{U} (CONTRACT §3 v2)
    # server -> gateways only, on user:{U} through the broker; never sent to a client
    SERVER_UNSUBSCRIBE = "gw.unsubscribe"
    SERVER_DISCONNECT = "gw.disconnect"
    # between instances only, never sent to a client
    PRESENCE_TRANSITION = "presence.transition"

    def __str__(self) -> str:
        return self.value


class CloseCode(IntEnum):
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    AUTH_FAILED = 4001
    AUTH_TIMEOUT = 4002
    TOKEN_EXPIRED = 4003
    IDLE_TIMEOUT = 4004
    RATE_LIMITED = 4008
    SLOW_CONSUMER = 4009
    DISCONNECTED = 4010
    TOO_MANY_CONNECTIONS = 4011


class ErrorCode(str, Enum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    UNAVAILABLE = "unavailable"  # a dependency did not answer in time: try again later

    def __str__(self) -> str:
        return self.value
