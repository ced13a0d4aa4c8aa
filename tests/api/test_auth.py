"""Bearer tokens (RFC 8725 / RFC 6750): bad tokens get 401 with WWW-Authenticate, viewers get
403 on writes, keys come from a JWKS URL in production and from the dev secret in development."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import jwt
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from connector_api.devtokens import mint_dev_token
from connector_api.errors import Unauthorized
from connector_api.jwks import JwksKeys
from connector_api.settings import ApiSettings
from connector_api.state import OrgDirectory
from connector_common.db.models import Organisation
from connector_common.events import utcnow
from tests.api.conftest import Api, running_api
from tests.fixtures.idp import IdentityProvider


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(claims: dict[str, object]) -> str:
    """An ``alg: none`` token (RFC 8725 says: never accept)."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def assert_unauthorized(response: object, error: str | None = "invalid_token") -> None:
    status = getattr(response, "status_code", None)
    headers = getattr(response, "headers", {})
    assert status == 401, getattr(response, "text", "")
    challenge = headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    if error:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge


async def get_accounts(api: Api, authorization: str | None) -> object:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return await api.client.get("/ebay-accounts", headers=headers)


async def test_missing_token_is_401_without_error_code(api: Api) -> None:
    assert_unauthorized(await get_accounts(api, None), error=None)


async def test_wrong_scheme_is_401_invalid_request(api: Api) -> None:
    response = await get_accounts(api, "Basic dXNlcjpwYXNz")
    assert_unauthorized(response, error="invalid_request")


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "x" * 9000, "....", "e30.e30.e30"])
async def test_malformed_token_is_401(api: Api, garbage: str) -> None:
    assert_unauthorized(await get_accounts(api, f"Bearer {garbage}"))


async def test_expired_token_is_401(api: Api) -> None:
    old = utcnow() - timedelta(hours=2)
    token = mint_dev_token(
        api.dev_secret, org="org-a", role="admin", subject="alice", ttl_seconds=60, now=old
    )
    response = await get_accounts(api, f"Bearer {token}")
    assert_unauthorized(response)
    assert "expired" in response.json()["message"]  # type: ignore[attr-defined]


async def test_wrong_signature_is_401(api: Api) -> None:
    other = mint_dev_token(secrets.token_urlsafe(32), org="org-a", role="admin", subject="alice")
    assert_unauthorized(await get_accounts(api, f"Bearer {other}"))


async def test_alg_none_is_401(api: Api) -> None:
    now = int(utcnow().timestamp())
    claims = {
        "sub": "alice",
        "org_id": "org-a",
        "roles": ["admin"],
        "iss": "connector-dev",
        "aud": "connector-api",
        "exp": now + 300,
    }
    assert_unauthorized(await get_accounts(api, f"Bearer {unsigned(claims)}"))


async def test_wrong_audience_is_401(api: Api) -> None:
    token = mint_dev_token(
        api.dev_secret, org="org-a", role="admin", subject="alice", audience="another-api"
    )
    response = await get_accounts(api, f"Bearer {token}")
    assert_unauthorized(response)
    assert "audience" in response.json()["message"]  # type: ignore[attr-defined]


async def test_wrong_issuer_is_401(api: Api) -> None:
    token = mint_dev_token(
        api.dev_secret, org="org-a", role="admin", subject="alice", issuer="evil"
    )
    assert_unauthorized(await get_accounts(api, f"Bearer {token}"))


@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "sub"])
async def test_token_without_a_required_claim_is_401(api: Api, claim: str) -> None:
    now = int(utcnow().timestamp())
    claims = {
        "sub": "alice",
        "org_id": "org-a",
        "roles": ["admin"],
        "iss": "connector-dev",
        "aud": "connector-api",
        "exp": now + 300,
    }
    del claims[claim]
    token = jwt.encode(claims, api.dev_secret, algorithm="HS256")
    assert_unauthorized(await get_accounts(api, f"Bearer {token}"))


async def test_token_without_org_claim_is_401(api: Api) -> None:
    claims = jwt.decode(api.token(), options={"verify_signature": False})
    del claims["org_id"]
    token = jwt.encode(claims, api.dev_secret, algorithm="HS256")
    assert_unauthorized(await get_accounts(api, f"Bearer {token}"))


async def test_token_without_a_connector_role_is_403(api: Api) -> None:
    token = mint_dev_token(
        api.dev_secret, org="org-a", role="viewer", subject="alice", extra={"roles": ["owner"]}
    )
    response = await get_accounts(api, f"Bearer {token}")
    assert response.status_code == 403  # type: ignore[attr-defined]


async def test_viewer_may_read_but_not_change(api: Api) -> None:
    viewer = api.auth(role="viewer")
    assert (await api.client.get("/ebay-accounts", headers=viewer)).status_code == 200
    response = await api.client.post(
        "/ebay-accounts/connect", json={"house_name": "X"}, headers=viewer
    )
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_unknown_org_is_created_once_on_first_use(api: Api) -> None:
    first = await api.client.get("/ebay-accounts", headers=api.auth())
    second = await api.client.get("/ebay-accounts", headers=api.auth())
    assert first.status_code == second.status_code == 200
    async with api.state.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(Organisation.external_id == api.default_org)
        )
    assert count == 1


# --- production: keys from the identity provider's JWKS ------------------------------------


@pytest.fixture
async def jwks_api(
    api_settings: ApiSettings, idp: IdentityProvider, dev_secret: str
) -> AsyncIterator[Api]:
    api_group = api_settings.api.model_copy(
        update={
            "jwt": api_settings.api.jwt.model_copy(
                update={
                    "dev_secret": None,
                    "jwks_url": idp.jwks_url,
                    "issuer": idp.issuer,
                    "algorithms": ["RS256", "ES256"],
                    "jwks_min_refresh_seconds": 0.0,
                }
            ),
            "session_secret": SecretStr(secrets.token_urlsafe(32)),
            "public_url": "https://api.test",
        }
    )
    settings = ApiSettings.model_validate(
        {**api_settings.model_dump(), "env": "production", "api": api_group.model_dump()}
    )
    async with running_api(settings, dev_secret) as running:
        yield running


async def test_jwks_signed_rs256_token_is_accepted(jwks_api: Api, idp: IdentityProvider) -> None:
    response = await get_accounts(jwks_api, f"Bearer {idp.token()}")
    assert response.status_code == 200  # type: ignore[attr-defined]


async def test_jwks_signed_es256_token_is_accepted(jwks_api: Api, idp: IdentityProvider) -> None:
    response = await get_accounts(jwks_api, f"Bearer {idp.token(algorithm='ES256')}")
    assert response.status_code == 200  # type: ignore[attr-defined]


async def test_hs256_token_is_401_when_asymmetric_algorithms_are_pinned(
    jwks_api: Api, idp: IdentityProvider
) -> None:
    # The classic confusion attack: HMAC "signed" with the public key the JWKS publishes.
    now = int(utcnow().timestamp())
    public = json.dumps(idp.rsa.jwk()).encode()
    claims = {"sub": "m", "org_id": "org-a", "roles": ["admin"], "iss": idp.issuer}
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": idp.rsa.kid})
    body = _b64({**claims, "aud": "connector-api", "exp": now + 60})
    mac = hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert_unauthorized(await get_accounts(jwks_api, f"Bearer {token}"))
    dev = jwks_api.token()  # the development secret is not accepted in production either
    assert_unauthorized(await get_accounts(jwks_api, f"Bearer {dev}"))


async def test_jwks_token_with_algorithm_not_matching_its_key_is_401(
    jwks_api: Api, idp: IdentityProvider
) -> None:
    # RS256 header naming the EC key's kid: the key's own "alg" must match.
    token = idp.token(algorithm="RS256", key=idp.rsa)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    header["kid"] = idp.ec.kid
    forged = f"{_b64(header)}.{token.split('.', 1)[1]}"
    assert_unauthorized(await get_accounts(jwks_api, f"Bearer {forged}"))


async def test_jwks_rotation_fetches_keys_again_for_an_unknown_kid(
    jwks_api: Api, idp: IdentityProvider
) -> None:
    assert (await get_accounts(jwks_api, f"Bearer {idp.token()}")).status_code == 200  # type: ignore[attr-defined]
    fetched = idp.jwks_requests
    assert (await get_accounts(jwks_api, f"Bearer {idp.token()}")).status_code == 200  # type: ignore[attr-defined]
    assert idp.jwks_requests == fetched  # cached
    idp.rotate()
    assert (await get_accounts(jwks_api, f"Bearer {idp.token()}")).status_code == 200  # type: ignore[attr-defined]
    assert idp.jwks_requests == fetched + 1


async def test_jwks_unknown_kid_refetch_is_rate_limited(idp: IdentityProvider) -> None:
    keys = JwksKeys(idp.jwks_url, cache_seconds=600, min_refresh_seconds=60, timeout_seconds=2)
    try:
        await keys.key_for(idp.rsa.kid, "RS256")
        for _ in range(5):
            with pytest.raises(Unauthorized):
                await keys.key_for("unknown-kid", "RS256")
    finally:
        await keys.aclose()
    assert idp.jwks_requests == 1  # forged kids cannot make us hammer the identity provider


async def test_jwks_wrong_issuer_is_401(jwks_api: Api, idp: IdentityProvider) -> None:
    assert_unauthorized(await get_accounts(jwks_api, f"Bearer {idp.token(issuer='https://evil')}"))


async def test_jwks_wrong_audience_is_401(jwks_api: Api, idp: IdentityProvider) -> None:
    assert_unauthorized(await get_accounts(jwks_api, f"Bearer {idp.token(audience='other')}"))


async def test_jwks_expired_token_is_401(jwks_api: Api, idp: IdentityProvider) -> None:
    assert_unauthorized(await get_accounts(jwks_api, f"Bearer {idp.token(ttl=-3600)}"))


async def test_first_use_of_an_org_by_many_requests_at_once_creates_one_row(api: Api) -> None:
    directories = [OrgDirectory(api.state.sessions) for _ in range(8)]
    ids = await asyncio.gather(*(d.resolve(api.default_org) for d in directories))
    assert len(set(ids)) == 1
    async with api.state.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(Organisation.external_id == api.default_org)
        )
    assert count == 1


async def test_unreachable_identity_provider_is_503_not_401(
    api_settings: ApiSettings, dev_secret: str, idp: IdentityProvider
) -> None:
    jwt_settings = api_settings.api.jwt.model_copy(
        update={"dev_secret": None, "jwks_url": "http://127.0.0.1:9/jwks", "issuer": idp.issuer}
    )
    group = api_settings.api.model_copy(update={"jwt": jwt_settings})
    async with running_api(api_settings.model_copy(update={"api": group}), dev_secret) as api:
        response = await get_accounts(api, f"Bearer {idp.token()}")
    assert response.status_code == 503  # type: ignore[attr-defined]
    assert response.json()["error"] == "unavailable"  # type: ignore[attr-defined]
