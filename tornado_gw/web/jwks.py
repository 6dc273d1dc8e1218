"""The keys of a JWKS URL (CONTRACT §1 ``jwt_jwks_url``), cached.

Rules:
1. Keys are fetched at start-up and again when a token names an unknown
   ``kid``, at most once per ``refetch_interval_s`` (30 s): a flood of tokens with
   made-up kids costs the identity provider one request per interval.
2. A fetch is asynchronous (Tornado's ``AsyncHTTPClient``) and bounded by
   ``FETCH_TIMEOUT_S``; ``PyJWKClient`` would block the event loop. Concurrent
   callers share one fetch.
3. A failed fetch keeps the cached keys: tokens signed with them go on
   verifying while the JWKS server is down; only new kids fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

log = logging.getLogger(__name__)
FETCH_TIMEOUT_S = 5.0


class JwksKeys:
    def __init__(self, url: str, refetch_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._refetch_interval_s = refetch_interval_s
        self._clock = clock
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None
        self._fetching: asyncio.Future[None] | None = None

    def get(self, kid: str | None) -> Any:
        """The key for ``kid`` (a token without kid uses the only key, if there is one)."""
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def fetch(self) -> None:
        """Load the keys again unless that happened less than ``refetch_interval_s`` ago.
        Never raises: a failure is logged and the cached keys stay."""
        if self._fetching is not None:
            await asyncio.shield(self._fetching)
            return
        if self._fetched_at is not None and self._clock() - self._fetched_at < self._refetch_interval_s:
            return
        self._fetched_at = self._clock()
        self._fetching = asyncio.get_running_loop().create_future()
        try:
            self._keys = await self._load() or self._keys
        finally:
            self._fetching.set_result(None)
            self._fetching = None

    async def _load(self) -> dict[str | None, Any] | None:
        try:
            response = await AsyncHTTPClient().fetch(self.url, connect_timeout=FETCH_TIMEOUT_S,
                                                     request_timeout=FETCH_TIMEOUT_S)
            key_set = jwt.PyJWKSet.from_json(response.body.decode())
        except (HTTPClientError, OSError, UnicodeDecodeError, jwt.PyJWTError, ValueError) as exc:
            log.warning("! JWKS %s not loaded, keeping %d cached keys: %s", self.url, len(self._keys),
                        " ".join(str(exc).split()) or type(exc).__name__)
            return None
        keys = {key.key_id: key.key for key in key_set.keys}
        log.info("= JWKS %s: %d keys", self.url, len(keys))
        return keys
