"""The OpenAPI document and the behaviour agree (issue 13, point 7): length limits, bodies that
are not UTF-8, chunked bodies over the limit, and the ``Allow`` header of a 405."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.conftest import Api, seed_account


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


async def schema_of(api: Api, name: str) -> dict[str, Any]:
    document = (await api.client.get("/openapi.json")).json()
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def max_length(spec: dict[str, Any]) -> int:
    options = spec.get("anyOf", [spec])
    return int(next(o["maxLength"] for o in options if "maxLength" in o))


async def test_openapi_states_the_length_limits_the_api_enforces(api: Api) -> None:
    for name in ("ConnectRequest", "AccountUpdate"):
        properties = (await schema_of(api, name))["properties"]
        assert max_length(properties["house_name"]) == 100, name
        assert max_length(properties["purpose"]) == 500, name
    account = await seed_account(api, "Limits")
    for purpose, status in (("p" * 500, 200), ("p" * 501, 422), ("p" * 2000, 422)):
        response = await api.client.patch(
            f"/ebay-accounts/{account.id}", json={"purpose": purpose}, headers=api.auth()
        )
        assert response.status_code == status, purpose[:5]


async def test_a_body_that_is_not_utf8_is_a_documented_422(api: Api) -> None:
    response = await api.client.post(
        "/ebay-accounts/connect",
        content=b'{"house_name": "Caf\xe9"}',  # Latin-1, not UTF-8
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid"
    assert body["fields"][0]["field"] == "body"
    document = (await api.client.get("/openapi.json")).json()
    assert "422" in document["paths"]["/ebay-accounts/connect"]["post"]["responses"]


async def chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length): ``total`` bytes of a JSON string."""
    yield b'{"house_name": "'
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b"x" * part
    yield b'"}'


async def test_a_chunked_body_over_the_limit_is_413(api: Api) -> None:
    response = await api.client.post(
        "/ebay-accounts/connect",
        content=chunks(70 * 1024),
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "too_large"
    document = (await api.client.get("/openapi.json")).json()
    assert "413" in document["paths"]["/ebay-accounts/connect"]["post"]["responses"]


async def test_a_chunked_body_within_the_limit_is_read_normally(api: Api) -> None:
    response = await api.client.post(
        "/ebay-accounts/connect",
        content=chunks(150),
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 422  # 150 characters: too long a house name, but read
    assert response.json()["fields"][0]["field"] == "house_name"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/ebay-accounts/{id}", "DELETE, GET, PATCH"),
        ("PUT", "/ebay-accounts/{id}", "DELETE, GET, PATCH"),
        ("OPTIONS", "/ebay-accounts", "GET"),
        ("PUT", "/ebay-accounts/connect", "DELETE, GET, PATCH, POST"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_a_405_names_every_method_the_path_takes(
    api: Api, method: str, path: str, allowed: str
) -> None:
    account = await seed_account(api, "Methods")
    response = await api.client.request(
        method, path.replace("{id}", str(account.id)), headers=api.auth()
    )
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"] == "method_not_allowed"
