"""Rate limits (issue 13, point 6): per address and per organisation, 429 with Retry-After,
tighter on logging in, starting a consent and eBay's callback, and those shared by every
replica through PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from connector_api.ratelimit import LocalLimiter
from connector_api.settings import ApiSettings
from connector_common.db.engine import unit_of_work
from connector_common.db.models import RateLimitCounter
from tests.api.conftest import API_URL, Api, running_api
from tests.api.test_admin import csrf_of


def limited(api_settings: ApiSettings, **limits: int) -> ApiSettings:
    """The test settings with some limits lowered (the others stay out of reach)."""
    rate_limits = api_settings.api.rate_limits.model_copy(update=limits)
    group = api_settings.api.model_copy(update={"rate_limits": rate_limits})
    return api_settings.model_copy(update={"api": group})


@pytest.fixture
async def two_replicas(
    api_settings: ApiSettings, dev_secret: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Api, Api]]:
    """Two API replicas on one database, with the limits the test's marker gives."""
    settings = limited(api_settings, **request.param)
    async with (
        running_api(settings, dev_secret) as first,
        running_api(settings, dev_secret) as second,
    ):
        yield first, second


def assert_429(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1


async def test_a_client_address_over_its_limit_gets_429_with_retry_after(
    api_settings: ApiSettings, dev_secret: str
) -> None:
    async with running_api(limited(api_settings, per_address_per_minute=5), dev_secret) as api:
        answers = [await api.client.get("/ebay-accounts", headers=api.auth()) for _ in range(6)]
        assert [a.status_code for a in answers[:5]] == [200] * 5
        assert_429(answers[5])
        assert answers[5].json()["error"] == "rate_limited"
        assert answers[5].json()["request_id"] == answers[5].headers["x-request-id"]
        # Another address is not affected; probes never are.
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api.app, client=("10.0.0.2", 1)), base_url=API_URL
        )
        async with other:
            assert (await other.get("/ebay-accounts", headers=api.auth())).status_code == 200
        for _ in range(10):
            assert (await api.client.get("/healthz")).status_code == 200


async def test_an_organisation_over_its_limit_gets_429_others_do_not(
    api_settings: ApiSettings, dev_secret: str
) -> None:
    async with running_api(limited(api_settings, per_org_per_minute=3), dev_secret) as api:
        busy = [await api.client.get("/ebay-accounts", headers=api.auth("busy")) for _ in range(4)]
        assert [r.status_code for r in busy] == [200, 200, 200, 429]
        assert_429(busy[3])
        calm = await api.client.get("/ebay-accounts", headers=api.auth("calm"))
        assert calm.status_code == 200


async def login_attempt(api: Api) -> httpx.Response:
    async with httpx.AsyncClient(transport=api.client._transport, base_url=API_URL) as browser:
        page = await browser.get("/admin")
        return await browser.post(
            "/admin/login", data={"csrf": csrf_of(page.text), "token": "not.a.token"}
        )


@pytest.mark.parametrize("two_replicas", [{"login_per_address_per_minute": 3}], indirect=True)
async def test_login_attempts_are_limited_across_replicas(two_replicas: tuple[Api, Api]) -> None:
    first, second = two_replicas
    answers = [
        await login_attempt(first),
        await login_attempt(second),
        await login_attempt(first),
        await login_attempt(second),  # the 4th attempt from this address, whichever replica
    ]
    assert [a.status_code for a in answers] == [303, 303, 303, 429]
    assert_429(answers[3])
    assert "too many login attempts" in answers[3].text  # a page for the person
    assert answers[3].headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("two_replicas", [{"connect_per_org_per_minute": 2}], indirect=True)
async def test_consents_started_are_limited_per_org_across_replicas(
    two_replicas: tuple[Api, Api],
) -> None:
    first, second = two_replicas

    async def start(api: Api, org: str) -> httpx.Response:
        return await api.client.post(
            "/ebay-accounts/connect", json={"house_name": "H"}, headers=api.auth(org)
        )

    answers = [
        await start(first, "org-a"),
        await start(second, "org-a"),
        await start(first, "org-a"),
    ]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert_429(answers[2])
    assert answers[2].json()["error"] == "rate_limited"
    assert (await start(second, "org-b")).status_code == 201


@pytest.mark.parametrize("two_replicas", [{"callback_per_address_per_minute": 2}], indirect=True)
async def test_ebay_callbacks_are_limited_per_address(two_replicas: tuple[Api, Api]) -> None:
    first, second = two_replicas
    params: dict[str, Any] = {"state": "s" * 43, "code": "c"}
    answers = [
        await first.client.get("/ebay/oauth/callback", params=params),
        await second.client.get("/ebay/oauth/callback", params=params),
        await first.client.get("/ebay/oauth/callback", params=params),
    ]
    assert [a.status_code for a in answers] == [400, 400, 429]
    assert_429(answers[2])


@pytest.mark.parametrize("two_replicas", [{"login_per_address_per_minute": 1}], indirect=True)
async def test_a_shared_window_ends(two_replicas: tuple[Api, Api]) -> None:
    first, _ = two_replicas
    assert (await login_attempt(first)).status_code == 303
    assert (await login_attempt(first)).status_code == 429
    async with unit_of_work(first.state.sessions) as db:
        await db.execute(
            update(RateLimitCounter).values(
                window_end=RateLimitCounter.window_end - timedelta(minutes=2)
            )
        )
    assert (await login_attempt(first)).status_code == 303


def test_the_per_replica_limit_allows_a_burst_then_a_steady_rate() -> None:
    clock = [0.0]
    limiter = LocalLimiter(clock=lambda: clock[0])
    assert [limiter.hit("k", 60) for _ in range(60)] == [0.0] * 60  # a burst of a minute's worth
    wait = limiter.hit("k", 60)
    assert wait == pytest.approx(1.0)  # then one per second
    clock[0] += wait
    assert limiter.hit("k", 60) == 0.0
    assert limiter.hit("k", 60) == pytest.approx(1.0)
    assert limiter.hit("other", 60) == 0.0


async def test_429_is_in_the_openapi_document(org_api: Api) -> None:
    api = org_api
    document = (await api.client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "429" in operation["responses"], f"{method} {path}"
