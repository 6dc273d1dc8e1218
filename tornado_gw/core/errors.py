"""Errors a client can cause, each with its wire code (CONTRACT §3).

    ClientError                  -> ``error`` frame, connection stays open
    ├── Unauthenticated          unauthenticated: command before ``auth``
    ├── Forbidden                forbidden: conversation not subscribed
    ├── TooManySubscriptions     too_many_subscriptions
    └── InvalidMessage           invalid_message: well-formed JSON, wrong shape

A ``ClientError`` raised while deciding a command leaves the state exactly as
it was; the reducer answers with the ``error`` frame instead.
"""

from __future__ import annotations

from tornado_gw.core.protocol import ErrorCode


class ClientError(Exception):
    code: ErrorCode = ErrorCode.INVALID_MESSAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(ClientError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(ClientError):
    code = ErrorCode.FORBIDDEN


class TooManySubscriptions(ClientError):
    code = ErrorCode.TOO_MANY_SUBSCRIPTIONS


class InvalidMessage(ClientError):
    code = ErrorCode.INVALID_MESSAGE
