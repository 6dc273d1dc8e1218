"""Token verification as a client meets it: what is accepted and every refusal (CONTRACT §3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tornado_gw.core.parse import MAX_TOKEN_CHARS
from tornado_gw.settings import DEVELOPMENT_JWT_SECRET
from tornado_gw.web.auth import Claims, TokenError, mint_token, verify_token

SECRET = "test-secret-that-is-long-enough-for-hs512-0123456789abcdef0123456789"
NOW = 1_700_000_000.0


def _verify(token: object, **overrides: Any) -> Claims:
    options: dict[str, Any] = {
        "secret": SECRET, "algorithms": ["HS256"], "leeway_s": 10.0, "require_exp": True, "now": NOW,
    }
    options.update(overrides)
    return verify_token(token, **options)  # type: ignore[arg-type]


def _refused(token: object, **overrides: Any) -> TokenError:
    with pytest.raises(TokenError) as caught:
        _verify(token, **overrides)
    assert str(caught.value)
    return caught.value


def _signed(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A token built without PyJWT, so PyJWT's own encode-side checks cannot stop it."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


def test_minted_token_verifies() -> None:
    token = mint_token(SECRET, "alice", 60, NOW)
    assert _verify(token) == Claims(user_id="alice", expires_at=NOW + 60)


def test_token_without_ttl_has_no_expiry_and_needs_exp_not_required() -> None:
    token = mint_token(SECRET, "alice", None, NOW)
    assert _verify(token, require_exp=False) == Claims(user_id="alice", expires_at=None)
    assert "exp" in str(_refused(token))


def test_other_algorithm_when_pinned() -> None:
    token = mint_token(SECRET, "alice", 60, NOW, algorithm="HS512")
    assert _verify(token, algorithms=["HS256", "HS512"]).user_id == "alice"
    _refused(token, algorithms=["HS256"])


def test_bad_signature_is_refused() -> None:
    _refused(mint_token("another-secret-of-sufficient-length-000000", "alice", 60, NOW))


def test_tampered_payload_is_refused() -> None:
    header, _, signature = mint_token(SECRET, "alice", 60, NOW).split(".")
    forged = _b64(json.dumps({"sub": "mallory", "exp": NOW + 60}).encode())
    _refused(f"{header}.{forged}.{signature}")


def test_alg_none_is_refused() -> None:
    _refused(_hand_made({"alg": "none", "typ": "JWT"}, {"sub": "alice", "exp": NOW + 60}, b""))


def test_rs256_token_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _refused(_signed({"sub": "alice", "exp": NOW + 60}, key, "RS256"))  # type: ignore[arg-type]


def test_hs_rs_confusion_is_refused() -> None:
    """An attacker signs with the RSA public key as HMAC secret: it is not our secret."""
    public_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = _hand_made({"alg": "HS256", "typ": "JWT"}, {"sub": "alice", "exp": NOW + 60}, public_pem)
    _refused(token)
    _refused(token, secret=public_pem.decode())  # PyJWT refuses a PEM as HMAC key
    with pytest.raises(ValueError):
        _verify(token, algorithms=["RS256"])


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [str(int(NOW + 60)), True, None, float("nan"), [1], {"t": 1}])
def test_time_claim_must_be_a_number(claim: str, value: object) -> None:
    claims = {"sub": "alice", "exp": NOW + 60, claim: value}
    assert claim in str(_refused(_signed(claims)))


def test_expiry_depends_on_now_and_leeway() -> None:
    token = mint_token(SECRET, "alice", 60, NOW)
    assert _verify(token, now=NOW + 60 + 9.9).user_id == "alice"
    assert _refused(token, now=NOW + 60 + 10).code == "token_expired"
    assert _refused(token, now=NOW + 61, leeway_s=0).code == "token_expired"


def test_old_token_is_valid_at_an_old_now() -> None:
    token = mint_token(SECRET, "alice", 60, 1000.0)
    assert _verify(token, now=1000.0).expires_at == 1060.0


def test_not_before_and_issued_at_in_the_future() -> None:
    early = _signed({"sub": "alice", "exp": NOW + 600, "nbf": NOW + 30})
    assert _verify(early, now=NOW + 25).user_id == "alice"
    assert "nbf" in str(_refused(early))
    future = _signed({"sub": "alice", "exp": NOW + 600, "iat": NOW + 30})
    assert "iat" in str(_refused(future))


def test_newer_token_of_same_user_extends_lifetime() -> None:
    first = _verify(mint_token(SECRET, "alice", 60, NOW))
    refreshed = _verify(mint_token(SECRET, "alice", 60, NOW + 30), now=NOW + 30)
    assert refreshed.user_id == first.user_id
    assert refreshed.expires_at is not None and first.expires_at is not None
    assert refreshed.expires_at > first.expires_at


def test_user_id_falls_back_to_user_id_claim_and_prefers_sub() -> None:
    assert _verify(_signed({"user_id": "bob", "exp": NOW + 60})).user_id == "bob"
    assert _verify(_signed({"sub": "alice", "user_id": "bob", "exp": NOW + 60})).user_id == "alice"


@pytest.mark.parametrize(
    "claims",
    [{}, {"sub": ""}, {"sub": "a b"}, {"sub": "x" * 129}, {"sub": 42}, {"sub": None}, {"user_id": "conv:*?"},
     {"sub": "bad/id", "user_id": "bob"}],
)
def test_missing_or_invalid_user_id_is_refused(claims: dict[str, Any]) -> None:
    _refused(_signed({**claims, "exp": NOW + 60}))


@pytest.mark.parametrize("token", [None, 42, b"abc.def.ghi", "", "not-a-jwt", "a.b.c"])
def test_malformed_token_is_refused(token: object) -> None:
    _refused(token)


def test_overlong_token_is_refused() -> None:
    padded = _signed({"sub": "alice", "exp": NOW + 60, "pad": "x" * MAX_TOKEN_CHARS})
    assert str(MAX_TOKEN_CHARS) in str(_refused(padded))


def test_development_secret_raises_no_key_length_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token = mint_token(DEVELOPMENT_JWT_SECRET, "alice", 60, NOW)
        assert _verify(token, secret=DEVELOPMENT_JWT_SECRET).user_id == "alice"


@pytest.mark.parametrize(
    ("user_id", "ttl_s", "algorithm"),
    [("a b", 60, "HS256"), ("alice", 0, "HS256"), ("alice", -5, "HS256"), ("alice", 60, "RS256")],
)
def test_mint_token_refuses_bad_arguments(user_id: str, ttl_s: float, algorithm: str) -> None:
    with pytest.raises(ValueError):
        mint_token(SECRET, user_id, ttl_s, NOW, algorithm=algorithm)
