"""Admin login through the company's identity provider (OIDC authorization code + PKCE),
against the test identity provider over real HTTP."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from connector_api.settings import ApiSettings
from tests.api.conftest import API_URL, Api, running_api
from tests.fixtures.idp import IdentityProvider
from tests.fixtures.realm_idp import RealmProvider

CLIENT_ID = "connector-admin"


@pytest.fixture
async def oidc_api(
    api_settings: ApiSettings, dev_secret: str, idp: IdentityProvider
) -> AsyncIterator[Api]:
    secret = secrets.token_urlsafe(24)
    idp.register_client(CLIENT_ID, secret, f"{API_URL}/admin/oidc/callback")
    oidc = api_settings.api.oidc.model_copy(
        update={"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret": SecretStr(secret)}
    )
    group = api_settings.api.model_copy(update={"oidc": oidc})
    async with running_api(api_settings.model_copy(update={"api": group}), dev_secret) as api:
        yield api


async def start_login(api: Api, browser: httpx.AsyncClient) -> str:
    """Our redirect to the identity provider, then its redirect back: the callback URL."""
    started = await browser.get("/admin/oidc/login")
    assert started.status_code == 303
    authorize = started.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["nonce"]
    assert query["state"]
    async with httpx.AsyncClient() as to_idp:
        answer = await to_idp.get(authorize)
    assert answer.status_code == 302
    location: str = answer.headers["location"]
    return location


def browser_for(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=api.client._transport, base_url=API_URL)


async def test_oidc_login_starts_a_session_for_the_idp_person_and_org(
    oidc_api: Api, idp: IdentityProvider
) -> None:
    idp.login_as = {"sub": "carol", "org_id": "org-oidc", "roles": ["viewer"]}
    async with browser_for(oidc_api) as browser:
        login_page = await browser.get("/admin")
        assert 'href="/admin/oidc/login"' in login_page.text
        back = await start_login(oidc_api, browser)
        done = await browser.get(back)
        assert done.status_code == 200
        assert "Logged in as carol." in done.text
        assert '<meta http-equiv="refresh" content="0; url=/admin">' in done.text
        session_cookie = next(
            c for c in done.headers.get_list("set-cookie") if c.startswith("connector_session=")
        )
        assert "HttpOnly" in session_cookie
        assert "SameSite=strict" in session_cookie
        page = await browser.get("/admin")
    assert "carol" in page.text
    assert "org-oidc" in page.text
    assert "viewer" in page.text


async def test_oidc_callback_with_another_state_is_refused(
    oidc_api: Api, idp: IdentityProvider
) -> None:
    async with browser_for(oidc_api) as browser:
        back = await start_login(oidc_api, browser)
        forged = back.replace("state=", "state=x")
        response = await browser.get(forged)
    assert response.status_code == 400
    assert "does not match" in response.text
    assert "connector_session=" not in response.headers.get("set-cookie", "")


async def test_oidc_callback_with_a_non_ascii_state_is_refused(
    oidc_api: Api, idp: IdentityProvider
) -> None:
    async with browser_for(oidc_api) as browser:
        back = await start_login(oidc_api, browser)
        forged = back.replace("state=", "state=%C3%A9")
        response = await browser.get(forged)
    assert response.status_code == 400
    assert "does not match" in response.text


async def test_oidc_callback_without_the_login_cookie_is_refused(
    oidc_api: Api, idp: IdentityProvider
) -> None:
    async with browser_for(oidc_api) as browser:
        back = await start_login(oidc_api, browser)
    async with browser_for(oidc_api) as stranger:  # another browser: no login cookie
        response = await stranger.get(back)
    assert response.status_code == 400
    assert "unknown or expired" in response.text


async def test_oidc_person_without_a_connector_role_gets_no_session(
    oidc_api: Api, idp: IdentityProvider
) -> None:
    idp.login_as = {"sub": "dave", "org_id": "org-a", "roles": ["payroll"]}
    async with browser_for(oidc_api) as browser:
        response = await browser.get(await start_login(oidc_api, browser))
    assert response.status_code == 400
    assert "no connector role" in response.text
    assert "connector_session=" not in response.headers.get("set-cookie", "")


async def test_oidc_code_can_be_used_once(oidc_api: Api, idp: IdentityProvider) -> None:
    async with browser_for(oidc_api) as browser:
        back = await start_login(oidc_api, browser)
        assert (await browser.get(back)).status_code == 200
        again = await browser.get(back)
    assert again.status_code == 400


# --- a second, independently written identity provider (Keycloak-like, ES256) ---------------


@pytest.fixture
async def realm_api(
    api_settings: ApiSettings, dev_secret: str, realm_idp: RealmProvider
) -> AsyncIterator[Api]:
    secret = secrets.token_urlsafe(24)
    realm_idp.register_client(CLIENT_ID, secret, f"{API_URL}/admin/oidc/callback")
    oidc = api_settings.api.oidc.model_copy(
        update={
            "issuer": realm_idp.issuer,
            "client_id": CLIENT_ID,
            "client_secret": SecretStr(secret),
            "algorithms": ["ES256"],
        }
    )
    jwt_settings = api_settings.api.jwt.model_copy(
        update={"org_claim": "tenant", "roles_claim": "groups"}
    )
    group = api_settings.api.model_copy(update={"oidc": oidc, "jwt": jwt_settings})
    async with running_api(api_settings.model_copy(update={"api": group}), dev_secret) as api:
        yield api


async def test_oidc_login_works_with_a_second_provider_set_up_differently(
    realm_api: Api, realm_idp: RealmProvider
) -> None:
    async with browser_for(realm_api) as browser:
        back = await start_login(realm_api, browser)
        assert back.startswith(f"{API_URL}/admin/oidc/callback?")
        done = await browser.get(back)
        assert done.status_code == 200, done.text
        assert "Logged in as f:1234:erin." in done.text
        page = await browser.get("/admin")
    assert "acme-eu" in page.text  # the org id in its canonical (lower-case) form
    assert "admin" in page.text
    (exchange,) = realm_idp.token_requests
    assert exchange["authorization"] == ""  # client_secret_post, as its discovery says
    assert exchange["client_secret"]
    assert exchange["code_verifier"]


async def test_an_id_token_signed_with_an_algorithm_we_do_not_pin_is_refused(
    realm_api: Api, realm_idp: RealmProvider
) -> None:
    realm_api.state.settings.api.oidc.algorithms.clear()
    realm_api.state.settings.api.oidc.algorithms.append("RS256")
    realm_api.state.oidc._app.server_metadata.clear()  # type: ignore[union-attr]
    async with browser_for(realm_api) as browser:
        response = await browser.get(await start_login(realm_api, browser))
    assert response.status_code == 400
    assert "does not verify" in response.text


async def test_an_id_token_with_a_non_canonical_org_is_refused(
    realm_api: Api, realm_idp: RealmProvider
) -> None:
    realm_idp.login_as = {"sub": "eve", "tenant": "acme eu", "groups": ["admin"]}
    async with browser_for(realm_api) as browser:
        response = await browser.get(await start_login(realm_api, browser))
    assert response.status_code == 400
    assert "tenant" in response.text
    assert "connector_session=" not in response.headers.get("set-cookie", "")
