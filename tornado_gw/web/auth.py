"""JWT verification for the ``auth`` frame (CONTRACT §3, PITFALLS 9).

Rules:
1. The accepted algorithms come from settings, never from the token header;
   only HMAC algorithms exist here (one shared ``jwt_secret``), so an RS256 or
   ``none`` token is refused before any key is used.
2. Time is an argument: ``exp``, ``nbf`` and ``iat`` are checked against
   ``now`` with ``leeway_s``, never against the wall clock, so tests and the
   reducer's ``at=`` agree.
3. Time claims must be JSON numbers: PyJWT would take ``"1700000000"``, and
   ``true`` is an int in Python; both are refused.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from tornado_gw.core.ids import is_valid_id
from tornado_gw.core.parse import MAX_TOKEN_CHARS
from tornado_gw.settings import HMAC_ALGORITHMS

_KEY_LENGTH_WARNING: type[Warning] | None = getattr(jwt, "InsecureKeyLengthWarning", None)

# Only the signature is left to PyJWT; claims are checked below against ``now``.
_DECODE_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "require": [],
}


@dataclass(frozen=True, slots=True)
class Claims:
    """Who the token speaks for, and until when (``exp`` as given, leeway not added)."""

    user_id: str
    expires_at: float | None


class TokenError(Exception):
    """The token is refused; ``str()`` says why. ``code`` goes into ``auth.error``."""

    def __init__(self, message: str, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.code = code


def verify_token(
    token: str,
    *,
    secret: str,
    algorithms: Sequence[str],
    leeway_s: float,
    require_exp: bool,
    now: float,
) -> Claims:
    """Check signature, time claims and user id of ``token``.

    Raises:
        TokenError: the client must get ``auth.error`` (and close 4001).
        ValueError: ``algorithms`` names a non-HMAC algorithm (a configuration bug).
    """
    _check_algorithms(algorithms)
    if not isinstance(token, str):
        raise TokenError("token must be a string")
    if not token:
        raise TokenError("token is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"token is longer than {MAX_TOKEN_CHARS} characters")
    payload = _decode(token, secret, algorithms)
    expires_at = _check_times(payload, leeway_s=leeway_s, require_exp=require_exp, now=now)
    return Claims(user_id=_user_id(payload), expires_at=expires_at)


def mint_token(
    secret: str, user_id: str, ttl_s: float | None, now: float, algorithm: str = "HS256"
) -> str:
    """A token for ``user_id`` issued at ``now``, expiring ``ttl_s`` later (never when None).

    For development and tests (``python -m tornado_gw token``); API servers mint their own.
    """
    _check_algorithms([algorithm])
    if not is_valid_id(user_id):
        raise ValueError(f"invalid user id {user_id!r}: 1-128 letters, digits or -_.:@")
    if ttl_s is not None and not (math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"ttl_s must be a positive number, got {ttl_s!r}")
    payload: dict[str, Any] = {"sub": user_id, "iat": now}
    if ttl_s is not None:
        payload["exp"] = now + ttl_s
    with _short_keys_allowed():
        return jwt.encode(payload, secret, algorithm=algorithm)


def _check_algorithms(algorithms: Sequence[str]) -> None:
    unsupported = [name for name in algorithms if name not in HMAC_ALGORITHMS]
    if unsupported or not algorithms:
        raise ValueError(f"only HS256, HS384 and HS512 are supported, got {list(algorithms)!r}")


@contextlib.contextmanager
def _short_keys_allowed() -> Iterator[None]:
    """PyJWT (>= 2.10) warns on HMAC keys under 32 bytes, e.g. the development secret.

    The operator chose the secret; a warning per token would only flood the log
    (or raise under ``-W error``).
    """
    with warnings.catch_warnings():
        if _KEY_LENGTH_WARNING is not None:
            warnings.simplefilter("ignore", _KEY_LENGTH_WARNING)
        yield


def _decode(token: str, secret: str, algorithms: Sequence[str]) -> Mapping[str, Any]:
    try:
        with _short_keys_allowed():
            return jwt.decode(token, secret, algorithms=list(algorithms), options=_DECODE_OPTIONS)
    except jwt.PyJWTError as exc:  # InvalidKeyError is not an InvalidTokenError
        raise TokenError(f"invalid token: {exc}") from None


def _numeric_claim(payload: Mapping[str, Any], name: str) -> float | None:
    if name not in payload:
        return None
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenError(f"invalid token: claim {name} must be a number of seconds, got {value!r:.40}")
    return float(value)


def _check_times(
    payload: Mapping[str, Any], *, leeway_s: float, require_exp: bool, now: float
) -> float | None:
    expires_at = _numeric_claim(payload, "exp")
    not_before = _numeric_claim(payload, "nbf")
    issued_at = _numeric_claim(payload, "iat")
    if expires_at is None and require_exp:
        raise TokenError("invalid token: exp claim is required")
    if expires_at is not None and now >= expires_at + leeway_s:
        raise TokenError("token has expired", code="token_expired")
    if not_before is not None and now < not_before - leeway_s:
        raise TokenError("invalid token: not valid yet (nbf)")
    if issued_at is not None and now < issued_at - leeway_s:
        raise TokenError("invalid token: issued in the future (iat)")
    return expires_at


def _user_id(payload: Mapping[str, Any]) -> str:
    """CONTRACT §3: the user id is ``sub``, else ``user_id``."""
    name = "sub" if "sub" in payload else "user_id"
    if name not in payload:
        raise TokenError("invalid token: no sub or user_id claim")
    user_id = payload[name]
    if not is_valid_id(user_id):
        raise TokenError(f"invalid token: {name} must be an id of 1-128 letters, digits or -_.:@")
    return str(user_id)
