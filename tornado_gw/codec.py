"""The JSON of the wire, in one place: ujson, strict.

Every frame a client can receive is encoded here (``encode``, ``encode_frame``),
and every JSON text from outside is decoded here (client frames and ``POST
/publish`` bodies strictly, broker frames as they are). Strict means what browsers' ``JSON.parse``
and the contract accept (CONTRACT §3, RFC 8259): no ``NaN``/``Infinity``, no
number that overflows to infinity, no lone surrogate (``"\\ud800"`` cannot
become UTF-8). ujson accepts all three, so ``decode`` checks its result
whenever the text could contain one of them, a regular-expression scan that
costs far less than the decoding itself.

Decoding is where hostile input arrives (PITFALLS 8): deep nesting, huge
numbers and malformed text all become ``DecodeError``, never an exception that
would abort the connection.
"""

from __future__ import annotations

import math
import re
from typing import Any

import ujson


class DecodeError(ValueError):
    pass


class EncodeError(ValueError):
    """The value has no strict JSON form (a non-finite float, a lone surrogate)."""


_UJSON_ERRORS = (ValueError, RecursionError, OverflowError, TypeError, UnicodeError)
# Text that may decode to a non-finite float (a NaN/Infinity literal, a large exponent,
# a very long number) or to a lone surrogate (a \uD800-\uDFFF escape). Anything else
# decodes to strict values only, and is not walked.
_SUSPECT_TEXT = re.compile(r"NaN|Infinity|[eE]\+?[0-9]{3}|[0-9]{300}|\\u[dD][89a-fA-F]")
_SUSPECT_BYTES = re.compile(_SUSPECT_TEXT.pattern.encode())


def decode(text: str | bytes) -> Any:
    """The value of a strict JSON text (a client frame, a ``POST /publish`` body).

    Raises:
        DecodeError: not JSON, nested too deep, or not strict JSON (see the module docstring).
    """
    value = _loads(text)
    suspect = _SUSPECT_BYTES.search(text) if isinstance(text, bytes) else _SUSPECT_TEXT.search(text)
    if suspect is not None:
        problem = _not_strict(value)
        if problem is not None:
            raise DecodeError(problem)
    return value


def decode_or_none(data: bytes) -> dict[str, Any] | None:
    """A broker frame as a dict, or None when it is not a JSON object.

    Not checked for strictness: this runs once per broker frame on the fan-out path
    (the check would cost more than the decoding), and the frames on the broker are
    strict by construction: the relay and this gateway encode them with ``encode``.
    A frame another projection worker publishes is forwarded as it is (CONTRACT §3).
    """
    try:
        obj = ujson.loads(data)
    except _UJSON_ERRORS:
        return None
    return obj if isinstance(obj, dict) else None


def _loads(text: str | bytes) -> Any:
    try:
        return ujson.loads(text)
    except _UJSON_ERRORS as exc:
        raise DecodeError(str(exc) or type(exc).__name__) from exc


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON.

    Raises:
        EncodeError: ``obj`` holds a non-finite float or a lone surrogate.
    """
    try:
        return ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False, allow_nan=False).encode()
    except (OverflowError, UnicodeEncodeError) as exc:
        raise EncodeError(f"no strict JSON form: {exc}") from exc


def encode_frame(event_type: str, payload: Any, seq: int | None = None) -> bytes:
    """The client frame of an event (CONTRACT §3): ``{"type", "payload"[, "seq"]}``."""
    frame: dict[str, Any] = {"type": event_type, "payload": payload}
    if seq is not None:
        frame["seq"] = seq
    return encode(frame)


def _not_strict(value: Any) -> str | None:
    """Why a decoded value has no strict JSON form, or None. Iterative: ujson has
    already bounded the depth, but a walk must not add Python frames to it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite (no NaN, Infinity or overflowing exponent)"
        if isinstance(item, str) and not _is_utf8(item):
            return "strings must not contain lone surrogates (\\ud800-\\udfff escapes)"
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
