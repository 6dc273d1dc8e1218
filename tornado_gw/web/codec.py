"""JSON at the edge: ujson, used nowhere else.

Decoding is where hostile input arrives (PITFALLS 8): deep nesting, huge
numbers and malformed text all become ``DecodeError``, never an exception that
would abort the connection.
"""

from __future__ import annotations

from typing import Any

import ujson


class DecodeError(ValueError):
    pass


def decode(text: str | bytes) -> Any:
    try:
        return ujson.loads(text)
    except (ValueError, RecursionError, OverflowError, TypeError, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc) or type(exc).__name__) from exc


def decode_or_none(data: bytes) -> dict[str, Any] | None:
    """A broker frame as a dict, or None when it is not a JSON object."""
    try:
        obj = decode(data)
    except DecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def encode(obj: Any) -> bytes:
    return ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False).encode()
