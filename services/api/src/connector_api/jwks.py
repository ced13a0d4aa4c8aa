"""Where bearer-token keys come from: the development secret, or a JWKS document fetched from
the identity provider.

The JWKS fetch is single-flight: however many requests need keys at once, one request goes out,
and each waits for it at most ``max_wait_seconds`` (then 503, while the fetch finishes in the
background). A failed fetch is remembered with an exponential backoff (1 s doubling to
``backoff_max_seconds``): during it, requests that need a key we do not have are answered at
once (503 with ``Retry-After`` when we have no keys at all, 401 for an unknown key id otherwise)
instead of each trying again. Keys past their cache time keep serving while a background fetch
renews them; a key id we do not know triggers a fetch at most every ``min_refresh_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx
import jwt
import structlog

from connector_api.errors import Unauthorized, Unavailable

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)

# Algorithm family (first two letters) -> the JWK key type it needs.
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
BACKOFF_BASE_SECONDS = 1.0


class KeySource(Protocol):
    async def key_for(self, kid: str | None, algorithm: str) -> Any: ...

    async def aclose(self) -> None: ...


class SharedSecretKeys:
    """The development HS256 secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    async def key_for(self, kid: str | None, algorithm: str) -> Any:
        return self._secret

    async def aclose(self) -> None:
        return None


class JwksKeys:
    """Public keys from a JWKS URL (see the module docstring for the fetching rules)."""

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        min_refresh_seconds: float,
        timeout_seconds: float,
        max_wait_seconds: float = 2.0,
        backoff_max_seconds: float = 60.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._max_wait = max_wait_seconds
        self._backoff_max = backoff_max_seconds
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds))
        self._owns_http = http is None
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch started, whatever its outcome
        self._retry_at = 0.0  # after a failure, no new fetch before this
        self._failures = 0
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0  # outbound requests made (for tests and diagnostics)

    async def key_for(self, kid: str | None, algorithm: str) -> Any:
        now = self._clock()
        jwk = self._pick(kid)
        if jwk is not None:
            if self._stale(now) and now >= self._retry_at:
                self._start_fetch(now)  # renew in the background; these keys still serve
            return _checked(jwk, algorithm)
        if self._may_fetch_for_unknown(now):
            self._start_fetch(now)
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait({self._inflight}, timeout=self._max_wait)
            jwk = self._pick(kid)
            if jwk is not None:
                return _checked(jwk, algorithm)
        if not self._keys:
            # Not the caller's fault: 503, so clients retry instead of dropping a token.
            wait = max(1, math.ceil(self._retry_at - self._clock()))
            raise Unavailable(
                "the identity provider's keys cannot be fetched",
                headers={"Retry-After": str(wait)},
            )
        raise Unauthorized("the token is signed with an unknown key")

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        # A token without kid is only unambiguous when the set holds exactly one key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at > self._cache_seconds

    def _may_fetch_for_unknown(self, now: float) -> bool:
        if now < self._retry_at:
            return False  # backing off after a failure
        if not self._keys or self._attempted_at is None:
            return True
        return now - self._attempted_at >= self._min_refresh_seconds

    def _start_fetch(self, now: float) -> None:
        if self._inflight is not None and not self._inflight.done():
            return  # single flight: everyone waits for the request already out
        self._attempted_at = now
        self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            response = await self._http.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            self._failures += 1
            delay = min(self._backoff_max, BACKOFF_BASE_SECONDS * 2 ** (self._failures - 1))
            self._retry_at = self._clock() + delay
            log.warning(
                "jwks fetch failed",
                url=self._url,
                error=type(exc).__name__,
                failures=self._failures,
                retry_in_s=delay,
            )
            return
        self._keys = keys
        self._fetched_at = self._clock()
        self._failures = 0
        self._retry_at = 0.0

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inflight
        if self._owns_http:
            await self._http.aclose()


def _checked(jwk: jwt.PyJWK, algorithm: str) -> Any:
    declared = jwk._jwk_data.get("alg")  # a key that names its algorithm allows only that
    if (declared and declared != algorithm) or KEY_TYPES.get(algorithm[:2]) != jwk.key_type:
        raise Unauthorized("the token's algorithm does not match its key")
    return jwk.key


def parse_jwks(document: object) -> dict[str | None, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by key id."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in KEY_TYPES.values():
            continue  # never a symmetric ("oct") key from a public document
        try:
            jwk = jwt.PyJWK(dict(entry))
        except jwt.PyJWTError:
            continue  # a key type we cannot use (or a malformed one) must not hide the others
        keys[jwk.key_id] = jwk
    return keys
