"""The sandbox's token endpoint speaks eBay's OAuth: grants, answers and error bodies."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import SandboxHandle

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def http(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        yield client


def _basic(client_id: str, secret: str) -> dict[str, str]:
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {**FORM, "Authorization": f"Basic {pair}"}


async def _token(
    http: httpx.AsyncClient, sandbox: SandboxHandle, form: dict[str, str], **auth: str
) -> httpx.Response:
    headers = _basic(
        auth.get("client_id", sandbox.client_id), auth.get("secret", sandbox.client_secret)
    )
    return await http.post("/identity/v1/oauth2/token", data=form, headers=headers)


async def _exchange(http: httpx.AsyncClient, sandbox: SandboxHandle) -> dict[str, Any]:
    code = sandbox.grant("demo_us_seller")
    response = await _token(
        http,
        sandbox,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": sandbox.ru_name},
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_code_exchange_answer_has_ebays_fields(
    http: httpx.AsyncClient, sandbox: SandboxHandle
) -> None:
    body = await _exchange(http, sandbox)
    assert set(body) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "token_type",
    }
    assert body["expires_in"] == 7200
    assert body["refresh_token_expires_in"] == 47_304_000
    assert body["token_type"] == "User Access Token"
    assert body["access_token"].startswith("v^1.1#i^1#p^3#r^0#I^3#f^0#t^")


async def test_refresh_answer_has_no_new_refresh_token(
    http: httpx.AsyncClient, sandbox: SandboxHandle
) -> None:
    tokens = await _exchange(http, sandbox)
    response = await _token(
        http,
        sandbox,
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": " ".join(sandbox.scopes[:2]),  # a subset is allowed
        },
    )
    assert response.status_code == 200
    assert set(response.json()) == {"access_token", "expires_in", "token_type"}


@pytest.mark.parametrize("scope", [None, "", "  "])
async def test_refresh_without_a_scope_is_granted_the_consented_scopes(
    http: httpx.AsyncClient, sandbox: SandboxHandle, scope: str | None
) -> None:
    tokens = await _exchange(http, sandbox)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    if scope is not None:
        form["scope"] = scope
    response = await _token(http, sandbox, form)
    assert response.status_code == 200, response.text
    access = response.json()["access_token"]
    # "As granted": the new token carries every consented scope, so the Identity API works.
    assert sandbox.state.access[access].scopes == frozenset(sandbox.scopes)
    me = await http.get(
        "/commerce/identity/v1/user/", headers={"Authorization": f"Bearer {access}"}
    )
    assert me.status_code == 200


async def test_refresh_with_a_scope_wider_than_granted_gets_invalid_scope(
    http: httpx.AsyncClient, sandbox: SandboxHandle
) -> None:
    tokens = await _exchange(http, sandbox)
    wider = " ".join([*sandbox.scopes, "https://api.ebay.com/oauth/api_scope/sell.inventory"])
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": wider}
    response = await _token(http, sandbox, form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


async def test_token_lifetime_is_configurable(
    http: httpx.AsyncClient, sandbox: SandboxHandle
) -> None:
    sandbox.settings(access_token_lifetime=5)
    assert (await _exchange(http, sandbox))["expires_in"] == 5


async def test_codes_are_single_use_and_bound_to_their_app(
    http: httpx.AsyncClient, sandbox: SandboxHandle
) -> None:
    sandbox.register_app("other-app", "other-secret", "other-runame", "https://o.example/cb")
    code = sandbox.grant("demo_us_seller")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "other-runame"}
    stolen = await _token(http, sandbox, form, client_id="other-app", secret="other-secret")
    assert stolen.status_code == 400
    assert stolen.json() == {
        "error": "invalid_grant",
        "error_description": (
            "the provided authorization grant code is invalid or was issued to another client"
        ),
    }
    form["redirect_uri"] = sandbox.ru_name
    again = await _token(http, sandbox, form)  # used up by the failed attempt above
    assert again.json()["error"] == "invalid_grant"


async def test_revoked_refresh_token_gets_invalid_grant(
    http: httpx.AsyncClient, sandbox: SandboxHandle
) -> None:
    tokens = await _exchange(http, sandbox)
    sandbox.revoke("demo_us_seller")
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "scope": " ".join(sandbox.scopes),
    }
    response = await _token(http, sandbox, form)
    assert response.status_code == 400
    assert response.json()["error_description"] == (
        "the provided authorization refresh token is invalid or was issued to another client"
    )


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "refresh_token", "scope": "x"}, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "x"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "invalid_request"),
        (
            {
                "grant_type": "client_credentials",
                "scope": "https://api.ebay.com/oauth/api_scope/sell.account",
            },
            "invalid_scope",
        ),
    ],
)
async def test_bad_token_requests_get_rfc6749_errors(
    http: httpx.AsyncClient, sandbox: SandboxHandle, form: dict[str, str], error: str
) -> None:
    response = await _token(http, sandbox, form)
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_bad_client_credentials_get_invalid_client(
    http: httpx.AsyncClient, sandbox: SandboxHandle
) -> None:
    form = {"grant_type": "client_credentials", "scope": "https://api.ebay.com/oauth/api_scope"}
    wrong = await _token(http, sandbox, form, secret="nope")
    missing = await http.post("/identity/v1/oauth2/token", data=form, headers=FORM)
    for response in (wrong, missing):
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"


async def test_json_body_is_refused(http: httpx.AsyncClient, sandbox: SandboxHandle) -> None:
    headers = _basic(sandbox.client_id, sandbox.client_secret)
    headers["Content-Type"] = "application/json"
    response = await http.post(
        "/identity/v1/oauth2/token", content=b'{"grant_type":"client_credentials"}', headers=headers
    )
    assert response.json()["error"] == "invalid_request"
