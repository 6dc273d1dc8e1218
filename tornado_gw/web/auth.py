"""JWT verification for the ``auth`` frame (CONTRACT §3, PITFALLS 9).

Rules:
1. The accepted algorithms come from settings, never from the token header.
   They are all HMAC (one shared ``jwt_secret``) or all public-key (a PEM key
   or a JWKS, CONTRACT §3 v2): a token cannot pick the kind of key that checks
   it, and ``none`` is never accepted.
2. Time is an argument: ``exp``, ``nbf`` and ``iat`` are checked against
   ``now`` with ``leeway_s``, never against the wall clock, so tests and the
   reducer's ``at=`` agree.
3. Time claims must be JSON numbers: PyJWT would take ``"1700000000"``, and
   ``true`` is an int in Python; both are refused.
4. A token is accepted until ``exp + leeway_s`` and the connection is closed
   with 4003 at that same moment (``TokenVerifier.deadline``), never earlier.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from tornado_gw.core.ids import is_valid_id
from tornado_gw.core.parse import MAX_TOKEN_CHARS
from tornado_gw.settings import HMAC_ALGORITHMS, Settings, SettingsError
from tornado_gw.web.jwks import JwksKeys

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
    """Check signature, time claims and user id of an HS* ``token``.

    Raises:
        TokenError: the client must get ``auth.error`` (and close 4001).
        ValueError: ``algorithms`` names a non-HMAC algorithm (a configuration bug).
    """
    _check_algorithms(algorithms)
    rules = _Rules(tuple(algorithms), leeway_s, require_exp, None, None)
    return _verified(token, lambda _token: secret, rules, now)


class KeyUnknown(Exception):
    """The token names a JWKS ``kid`` not loaded yet: fetch the keys, then verify again."""


@dataclass(frozen=True, slots=True)
class _Rules:
    algorithms: tuple[str, ...]
    leeway_s: float
    require_exp: bool
    audience: str | None
    issuer: str | None


class TokenVerifier:
    """Verifies tokens as the settings say: HS* with ``jwt_secret``, or public-key
    algorithms with ``jwt_public_key`` or the keys of ``jwt_jwks_url``."""

    def __init__(self, settings: Settings) -> None:
        self._rules = _Rules(settings.jwt_algorithms, settings.jwt_leeway_s, settings.require_exp,
                             settings.jwt_audience, settings.jwt_issuer)
        self.jwks: JwksKeys | None = None
        self._key: Any = settings.jwt_secret
        if settings.jwt_public_key is not None:
            self._key = _load_public_key(settings.jwt_public_key)
        elif settings.jwt_jwks_url is not None:
            self.jwks = JwksKeys(settings.jwt_jwks_url, settings.jwks_refetch_interval_s)

    def verify(self, token: str, now: float) -> Claims:
        """Raises ``TokenError`` (refuse) or ``KeyUnknown`` (await ``jwks.fetch``, then retry)."""
        return _verified(token, self._key_for, self._rules, now)

    def deadline(self, claims: Claims) -> float | None:
        """When the connection must close with 4003: the last moment ``verify`` accepts the token."""
        return None if claims.expires_at is None else claims.expires_at + self._rules.leeway_s

    def _key_for(self, token: str) -> Any:
        """The key to check ``token`` with; its header is read only for a JWKS ``kid`` (PyJWT
        reads it again to decode: twice would double the cost of a connection storm's auths)."""
        if self.jwks is None:
            return self._key
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        kid = header.get("kid")
        key = self.jwks.get(kid if isinstance(kid, str) else None)
        if key is None:
            raise KeyUnknown(f"no key for kid {kid!r:.80}")
        return key


def _load_public_key(pem: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:  # also an unsupported key type
        raise SettingsError("jwt_public_key", f"not a PEM public key: {' '.join(str(exc).split())}") from None


def _verified(token: str, key_for: Callable[[str], Any], rules: _Rules, now: float) -> Claims:
    if not isinstance(token, str):
        raise TokenError("token must be a string")
    if not token:
        raise TokenError("token is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"token is longer than {MAX_TOKEN_CHARS} characters")
    payload = _decode(token, key_for(token), rules)
    expires_at = _check_times(payload, leeway_s=rules.leeway_s, require_exp=rules.require_exp, now=now)
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


def _decode(token: str, key: Any, rules: _Rules) -> Mapping[str, Any]:
    options: Any = {**_DECODE_OPTIONS, "verify_aud": rules.audience is not None,
                    "verify_iss": rules.issuer is not None}
    try:
        with _short_keys_allowed():
            return jwt.decode(token, key, algorithms=list(rules.algorithms), options=options,
                              audience=rules.audience, issuer=rules.issuer)
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
