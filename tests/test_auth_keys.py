"""Public-key tokens (CONTRACT §3 v2): each algorithm with a PEM key or a JWKS, aud and iss,
and the leeway agreeing with the 4003 deadline (issue 9 item 9)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.keys import ALGORITHMS, JwksServer, key_pair
from tornado_gw.settings import Settings, SettingsError
from tornado_gw.web.auth import KeyUnknown, TokenError, TokenVerifier


def _verifier(**settings: Any) -> TokenVerifier:
    return TokenVerifier(Settings(**settings))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_public_key_algorithm_verifies_with_a_pem_key(algorithm: str) -> None:
    pair = key_pair(algorithm)
    verifier = _verifier(jwt_algorithms=(algorithm,), jwt_public_key=pair.public_pem)
    assert verifier.verify(pair.token("alice"), time.time()).user_id == "alice"
    with pytest.raises(TokenError):
        verifier.verify(key_pair(algorithm).token("alice"), time.time())  # another key pair


def test_a_token_of_an_algorithm_not_listed_is_refused() -> None:
    rs256 = key_pair("RS256")
    verifier = _verifier(jwt_algorithms=("RS384",), jwt_public_key=rs256.public_pem)
    with pytest.raises(TokenError, match="alg"):
        verifier.verify(rs256.token("alice"), time.time())


def test_a_bad_pem_key_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="jwt_public_key"):
        _verifier(jwt_algorithms=("RS256",), jwt_public_key="-----BEGIN PUBLIC KEY-----\nnope\n")


def test_audience_and_issuer_are_checked_when_set() -> None:
    pair = key_pair("ES256")
    verifier = _verifier(jwt_algorithms=("ES256",), jwt_public_key=pair.public_pem, jwt_audience="chat",
                         jwt_issuer="https://idp.test/")
    now = time.time()
    assert verifier.verify(pair.token("alice", aud="chat", iss="https://idp.test/"), now).user_id == "alice"
    for claims in ({"iss": "https://idp.test/"}, {"aud": "other", "iss": "https://idp.test/"},
                   {"aud": "chat"}, {"aud": "chat", "iss": "https://evil.test/"}):
        with pytest.raises(TokenError):
            verifier.verify(pair.token("alice", **claims), now)


def test_without_audience_setting_a_token_with_aud_is_accepted() -> None:
    pair = key_pair("EdDSA")
    verifier = _verifier(jwt_algorithms=("EdDSA",), jwt_public_key=pair.public_pem, jwt_issuer="idp")
    assert verifier.verify(pair.token("alice", aud="anything", iss="idp"), time.time()).user_id == "alice"


def test_the_close_deadline_is_the_last_moment_the_token_is_accepted() -> None:
    """Issue 9 item 9: accepted until exp + leeway, so 4003 must not come at exp."""
    pair = key_pair("RS256")
    verifier = _verifier(jwt_algorithms=("RS256",), jwt_public_key=pair.public_pem, jwt_leeway_s=10.0)
    token = pair.token("alice", ttl_s=60)
    issued = time.time()
    claims = verifier.verify(token, issued + 65)  # past exp, within the leeway: accepted
    deadline = verifier.deadline(claims)
    assert deadline is not None and issued + 65 < deadline
    with pytest.raises(TokenError):
        verifier.verify(token, deadline)


def test_jwks_keys_verify_rotate_and_survive_an_outage() -> None:
    async def scenario() -> None:
        first, second, third = key_pair("RS256", "k1"), key_pair("ES256", "k2"), key_pair("EdDSA", "k3")
        server = JwksServer(first).start()
        verifier = _verifier(jwt_algorithms=("RS256", "ES256", "EdDSA"), jwt_jwks_url=server.url,
                             jwks_refetch_interval_s=0.2)
        assert verifier.jwks is not None
        with pytest.raises(KeyUnknown):
            verifier.verify(first.token("alice"), time.time())
        await verifier.jwks.fetch()
        assert verifier.verify(first.token("alice"), time.time()).user_id == "alice"

        server.keys = [first, second]  # rotation: a new kid fetches again...
        with pytest.raises(KeyUnknown):
            verifier.verify(second.token("bob"), time.time())
        await verifier.jwks.fetch()
        assert server.requests == 1  # ...but not within the refetch interval
        await asyncio.sleep(0.25)
        await verifier.jwks.fetch()
        assert verifier.verify(second.token("bob"), time.time()).user_id == "bob"

        server.stop()  # outage: cached keys go on working, a new kid fails fast
        await asyncio.sleep(0.25)
        started = time.monotonic()
        await verifier.jwks.fetch()
        assert time.monotonic() - started < 5.5
        assert verifier.verify(first.token("alice"), time.time()).user_id == "alice"
        with pytest.raises(KeyUnknown):
            verifier.verify(third.token("carol"), time.time())

    asyncio.run(scenario())
