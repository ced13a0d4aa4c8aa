"""A verified token is trusted again for a short while without its signature being checked,
but never once it has expired, and never for a different token."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from connector_api.auth import TokenVerifier
from connector_api.devtokens import mint_dev_token
from connector_api.errors import Unauthorized
from connector_api.jwks import SharedSecretKeys
from connector_api.settings import JwtSettings

SECRET = "s" * 40


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(clock: Clock, seconds: float = 30.0) -> TokenVerifier:
    settings = JwtSettings(dev_secret=SecretStr(SECRET), verified_cache_seconds=seconds)
    return TokenVerifier(settings, SharedSecretKeys(SECRET), clock=clock)


def token(now: float, ttl: int, org: str = "org-a") -> str:
    at = datetime.fromtimestamp(now, UTC)
    return mint_dev_token(SECRET, org=org, role="viewer", subject="alice", ttl_seconds=ttl, now=at)


async def test_a_cached_token_is_refused_once_it_expires() -> None:
    clock = Clock(time.time())
    check = verifier(clock, seconds=300)
    short = token(clock.now, ttl=60)
    assert (await check.verify(short)).org_external_id == "org-a"
    clock.now += 60 + 30 + 1  # past exp and the 30 s leeway, well within the cache time
    with pytest.raises(Unauthorized):
        await check.verify(short)


async def test_a_cache_entry_ends_and_the_token_is_verified_again() -> None:
    clock = Clock(time.time())
    keys_asked = 0

    class CountingKeys(SharedSecretKeys):
        async def key_for(self, kid: str | None, algorithm: str) -> str:
            nonlocal keys_asked
            keys_asked += 1
            return SECRET

    settings = JwtSettings(dev_secret=SecretStr(SECRET), verified_cache_seconds=30)
    check = TokenVerifier(settings, CountingKeys(SECRET), clock=clock)
    same = token(clock.now, ttl=3600)
    await check.verify(same)
    await check.verify(same)
    assert keys_asked == 1  # the second request reused the verified identity
    clock.now += 31
    await check.verify(same)
    assert keys_asked == 2
    other = token(time.time(), ttl=3600, org="org-b")
    assert (await check.verify(other)).org_external_id == "org-b"
    # Another token's signature on this payload is never taken for the cached token.
    header, payload, _ = other.split(".")
    forged = f"{header}.{payload}.{same.split('.')[2]}"
    with pytest.raises(Unauthorized):
        await check.verify(forged)


async def test_zero_seconds_verifies_every_request() -> None:
    clock = Clock(time.time())
    check = verifier(clock, seconds=0)
    short = token(clock.now, ttl=60)
    await check.verify(short)
    clock.now += 120
    with pytest.raises(Unauthorized):
        await check.verify(short)
