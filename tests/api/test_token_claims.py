"""What an attacker found in bearer-token checking (issue 13, points 1, 3 and 4): claims of the
wrong shape, organisation ids that are not canonical, and a JWKS fetch storm on a cold start."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr

from connector_api.auth import InvalidOrgId, canonical_org_id
from connector_api.devtokens import mint_dev_token
from connector_api.errors import Unauthorized, Unavailable
from connector_api.jwks import JwksKeys
from connector_api.settings import ApiSettings
from connector_cli.main import main as cli
from tests.api.conftest import Api, running_api, seed_account
from tests.fixtures.idp import IdentityProvider


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


def signed(api: Api, **overrides: Any) -> str:
    """A development token whose claims the test chooses (``None`` removes one)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "org_id": api.default_org,
        "roles": ["admin"],
        "iss": "connector-dev",
        "aud": "connector-api",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, api.dev_secret, algorithm="HS256")


async def status_of(api: Api, token: str) -> httpx.Response:
    return await api.client.get("/ebay-accounts", headers={"Authorization": f"Bearer {token}"})


# --- point 3: claim shapes ------------------------------------------------------------------

NOW = int(time.time())
BAD_CLAIMS: dict[str, dict[str, Any]] = {
    "exp 10^20 (overflows every date type)": {"exp": 10**20},
    "exp a numeric string": {"exp": str(NOW + 300)},
    "exp a boolean": {"exp": True},
    "exp a list": {"exp": [NOW + 300]},
    "exp NaN": {"exp": math.nan},
    "exp infinite": {"exp": math.inf},
    "exp negative": {"exp": -1},
    "exp missing": {"exp": None},
    "nbf in the future": {"nbf": NOW + 3600},
    "nbf 10^20": {"nbf": 10**20},
    "nbf a string": {"nbf": "now"},
    "iat in the future": {"iat": NOW + 3600},
    "iat 10^20": {"iat": 10**20},
    "iat a numeric string": {"iat": str(NOW)},
    "iat an object": {"iat": {"seconds": NOW}},
    "sub a number": {"sub": 42},
    "sub empty": {"sub": ""},
    "aud a list without us": {"aud": ["another-api"]},
    "aud a number": {"aud": 1},
    "iss missing": {"iss": None},
}


@pytest.mark.parametrize("case", sorted(BAD_CLAIMS))
async def test_a_claim_of_the_wrong_shape_is_401_never_500(api: Api, case: str) -> None:
    response = await status_of(api, signed(api, **BAD_CLAIMS[case]))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": NOW + 300.5, "iat": NOW - 0.25},  # RFC 7519 allows fractional NumericDates
        {"nbf": NOW - 10},
        {"iat": NOW + 10},  # within the 30 s clock leeway
        {"aud": ["another-api", "connector-api"]},
        {"iat": None},  # optional
    ],
)
async def test_well_formed_claims_are_accepted(api: Api, claims: dict[str, Any]) -> None:
    response = await status_of(api, signed(api, **claims))
    assert response.status_code == 200, response.text


async def test_a_token_with_critical_header_extensions_is_401(api: Api) -> None:
    token = jwt.encode(
        jwt.decode(signed(api), options={"verify_signature": False}),
        api.dev_secret,
        algorithm="HS256",
        headers={"crit": ["b64"], "b64": True},
    )
    assert (await status_of(api, token)).status_code == 401


# --- point 4: organisation ids --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("demo", "demo"),
        ("DEMO", "demo"),
        ("Org_W2bs8jF3", "org_w2bs8jf3"),
        ("acme.com", "acme.com"),
    ],
)
def test_org_ids_fold_to_lower_case(raw: str, canonical: str) -> None:
    assert canonical_org_id(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "demo ",
        " demo",
        "de mo",
        "\uff44\uff45\uff4d\uff4f",  # full-width "demo"
        "d\u0435mo",  # Cyrillic e
        "demo\u200b",  # zero-width space
        "de\x00mo",
        "de\nmo",
        "",
        "a" * 201,
        "d\u00e9mo",
    ],
)
def test_non_canonical_org_ids_are_refused(raw: str) -> None:
    with pytest.raises(InvalidOrgId):
        canonical_org_id(raw)


async def test_an_org_id_in_another_case_is_the_same_org(api: Api) -> None:
    await seed_account(api, "Shared-House")
    upper = signed(api, org_id=api.default_org.upper())
    response = await status_of(api, upper)
    assert response.status_code == 200, response.text
    assert [a["house_name"] for a in response.json()["items"]] == ["Shared-House"]


@pytest.mark.parametrize(
    "variant",
    [lambda o: o + " ", lambda o: "\uff4f" + o[1:], lambda o: o.replace("o", "\u043e", 1)],
    ids=["trailing space", "full-width letter", "Cyrillic o"],
)
async def test_a_token_with_a_non_canonical_org_id_is_401(api: Api, variant: Any) -> None:
    response = await status_of(api, signed(api, org_id=variant(api.default_org)))
    assert response.status_code == 401
    assert "org_id" in response.json()["message"]


def test_minting_refuses_a_non_canonical_org_id(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="canonical form 'demo'"):
        mint_dev_token("s" * 40, org="DEMO", role="admin", subject="a")
    with pytest.raises(ValueError, match="organisation id"):
        mint_dev_token("s" * 40, org="demo ", role="admin", subject="a")
    with pytest.raises(SystemExit) as exited:
        cli(["token", "mint", "--org", "\uff44emo", "--role", "admin"])
    assert exited.value.code == 2
    assert "--org" in capsys.readouterr().err


# --- point 1: the JWKS on a cold start ------------------------------------------------------


@asynccontextmanager
async def jwks_running(
    api_settings: ApiSettings, idp: IdentityProvider, dev_secret: str, max_wait: float
) -> AsyncIterator[Api]:
    """A production-like API whose keys come from the test identity provider's JWKS and have
    never been loaded (a cold start)."""
    jwt_settings = api_settings.api.jwt.model_copy(
        update={
            "dev_secret": None,
            "jwks_url": idp.jwks_url,
            "issuer": idp.issuer,
            "algorithms": ["RS256", "ES256"],
            "jwks_min_refresh_seconds": 0.0,
            "jwks_timeout_seconds": 20.0,
            "jwks_max_wait_seconds": max_wait,
        }
    )
    group = api_settings.api.model_copy(
        update={"jwt": jwt_settings, "session_secret": SecretStr("s" * 40)}
    )
    try:
        async with running_api(api_settings.model_copy(update={"api": group}), dev_secret) as api:
            yield api
    finally:
        idp.jwks_delay = 0  # release a hanging JWKS request, if any


@pytest.fixture
async def jwks_api(
    api_settings: ApiSettings, idp: IdentityProvider, dev_secret: str
) -> AsyncIterator[Api]:
    """Requests wait up to 20 s for a JWKS fetch (a loaded machine is slow, not wrong)."""
    async with jwks_running(api_settings, idp, dev_secret, max_wait=20.0) as api:
        yield api


@pytest.fixture
async def impatient_jwks_api(
    api_settings: ApiSettings, idp: IdentityProvider, dev_secret: str
) -> AsyncIterator[Api]:
    """Requests wait at most 0.5 s for a JWKS fetch."""
    async with jwks_running(api_settings, idp, dev_secret, max_wait=0.5) as api:
        yield api


def forged(idp: IdentityProvider, **claims: Any) -> str:
    """A token with valid-looking claims and a known key id, but a signature that is not."""
    header, payload, signature = idp.token(**claims).split(".")
    return f"{header}.{payload}.{signature[::-1]}"


async def test_a_cold_start_makes_one_jwks_fetch_for_many_forged_tokens(
    jwks_api: Api, idp: IdentityProvider
) -> None:
    responses = await asyncio.gather(
        *(status_of(jwks_api, forged(idp, sub=f"m{i}")) for i in range(100))
    )
    assert {r.status_code for r in responses} == {401}
    assert idp.jwks_requests == 1


async def test_tokens_failing_key_free_checks_never_fetch_keys(
    jwks_api: Api, idp: IdentityProvider
) -> None:
    bad = [
        idp.token(ttl=-3600),  # expired
        idp.token(issuer="https://evil.example"),
        idp.token(audience="another-api"),
        idp.token(org="ｄｅｍｏ"),  # noqa: RUF001 (full-width on purpose)
        idp.token(exp=10**20),
        idp.token(iat=int(time.time()) + 3600),
        "e30.e30.e30",
        "not-a-token",
    ]
    responses = await asyncio.gather(*(status_of(jwks_api, t) for t in bad * 10))
    assert {r.status_code for r in responses} == {401}
    assert idp.jwks_requests == 0


async def test_a_hanging_jwks_host_gets_one_fetch_and_quick_503s(
    impatient_jwks_api: Api, idp: IdentityProvider
) -> None:
    jwks_api = impatient_jwks_api
    idp.jwks_delay = 60.0
    started = time.monotonic()
    responses = await asyncio.gather(*(status_of(jwks_api, idp.token()) for _ in range(6)))
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [503] * 6
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses)
    # Each waited at most the configured 0.5 s for the one fetch in flight (the old code
    # queued them behind a lock, 5 s of timeout each); 10 s is far from both.
    assert elapsed < 10
    again = await status_of(jwks_api, idp.token())
    assert again.status_code == 503
    assert idp.jwks_requests == 1


async def test_a_failing_jwks_host_is_retried_with_backoff_not_per_request(
    idp: IdentityProvider,
) -> None:
    clock = [1000.0]
    keys = JwksKeys(
        idp.jwks_url,
        cache_seconds=600,
        min_refresh_seconds=0,
        timeout_seconds=5,
        max_wait_seconds=5,
        backoff_max_seconds=8,
        clock=lambda: clock[0],
    )
    idp.jwks_status = 500
    try:
        for _ in range(5):
            with pytest.raises(Unavailable):
                await keys.key_for(idp.rsa.kid, "RS256")
        assert keys.fetches == 1  # the failure is remembered: no fetch per request
        failed_at = clock[0]
        for delay in (1, 2, 4, 8, 8):  # doubling from 1 s, capped at backoff_max_seconds
            clock[0] = failed_at + delay - 0.01
            with pytest.raises(Unavailable):
                await keys.key_for(idp.rsa.kid, "RS256")
            fetches = keys.fetches
            clock[0] = failed_at + delay
            with pytest.raises(Unavailable):
                await keys.key_for(idp.rsa.kid, "RS256")
            assert keys.fetches == fetches + 1
            failed_at = clock[0]
        assert idp.jwks_requests == 6
        idp.jwks_status = 200
        clock[0] += 60
        assert await keys.key_for(idp.rsa.kid, "RS256") is not None
        with pytest.raises(Unauthorized, match="unknown key"):
            await keys.key_for("forged-kid", "RS256")
    finally:
        await keys.aclose()
