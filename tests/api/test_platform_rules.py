"""What the API shows of eBay's rules: GET /ebay-budget, the budget line and re-consent banner
on the admin page, 429 for a manual action whose eBay budget is used up, the configurable
re-consent window, and a username change found by a reconnect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from connector_api.settings import ApiSettings
from connector_common.budget.buckets import REFRESH_GRANT, TRADING
from connector_common.db.engine import unit_of_work
from connector_common.db.models import CallCount, OutboxMessage, UsernameChange
from connector_common.events import AccountUsernameChanged, parse_event, utcnow
from tests.api.conftest import (
    Api,
    connect_seller,
    running_api,
    seed_account,
    state_of,
    wait_for,
)
from tests.api.test_admin import login
from tests.fixtures.sandbox import SandboxHandle


async def use_up(api: Api, bucket: str, calls: int) -> None:
    async with unit_of_work(api.state.sessions) as session:
        session.add(CallCount(day=utcnow().date(), bucket=bucket, calls=calls))


async def test_the_budget_is_for_admins_and_counts_the_apis_own_calls(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    api = connect_api
    assert (
        await api.client.get("/ebay-budget", headers=api.auth(role="viewer"))
    ).status_code == 403
    await connect_seller(api, sandbox, "demo_uk_seller", "London")

    async def counted() -> bool:
        body = (await api.client.get("/ebay-budget", headers=api.auth())).json()
        used = {b["bucket"]: b["used"] for b in body["buckets"]}
        return used.get("oauth.authorization_code") == 1

    await wait_for(counted)  # the API flushes its counts every second
    body = (await api.client.get("/ebay-budget", headers=api.auth())).json()
    buckets = {b["bucket"]: b for b in body["buckets"]}
    # The connect flow: one code exchange, one GetUser, one Identity getUser.
    assert buckets["trading"]["used"] == 1
    assert buckets["identity"]["used"] == 1
    assert buckets["trading"]["limit"] == 5000
    assert buckets["trading"]["limit_source"] == "settings"
    assert buckets["trading"]["user_reserve"] == 250
    assert buckets["oauth.refresh_token"]["limit"] == 50_000
    assert body["health_checks"]["state"] in ("open", "paced")
    assert body["refreshes"]["state"] == "open"
    assert body["resets_at"].endswith("T00:00:00Z")


async def test_a_used_up_budget_is_shown_and_refuses_manual_work_with_429(api: Api) -> None:
    account = await seed_account(api, "Warehouse-A")
    await use_up(api, TRADING, 5000)
    await use_up(api, REFRESH_GRANT, 50_000)
    body = (await api.client.get("/ebay-budget", headers=api.auth())).json()
    assert body["health_checks"]["state"] == "deferred"
    assert body["health_checks"]["deferred_until"] == body["resets_at"]
    assert body["refreshes"]["state"] == "deferred"
    for action in ("health-check", "refresh"):
        response = await api.client.post(
            f"/ebay-accounts/{account.id}/{action}", headers=api.auth()
        )
        assert response.status_code == 429, action
        assert int(response.headers["retry-after"]) > 0
        assert "daily" in response.json()["message"]


async def test_the_admin_page_shows_the_budget_line_to_admins_only(api: Api) -> None:
    await seed_account(api, "Warehouse-A")
    await use_up(api, TRADING, 1234)
    admin = await login(api)
    page = (await admin.get("/admin")).text
    assert 'data-testid="budget-line"' in page
    assert "trading 1,234 / 5,000" in page
    viewer = await login(api, role="viewer")
    assert 'data-testid="budget-line"' not in (await viewer.get("/admin")).text


async def test_the_admin_page_warns_of_reconsent_with_a_reconnect_call_to_action(
    api: Api,
) -> None:
    soon = await seed_account(api, "Soon", token_refresh_expires_in=timedelta(days=12))
    later = await seed_account(api, "Later", token_refresh_expires_in=timedelta(days=300))
    admin = await login(api)
    page = (await admin.get("/admin")).text
    assert 'data-testid="reconsent-banner"' in page
    assert "1 account must be reconnected soon" in page
    assert 'href="/admin?status=reconsent_due"' in page
    filtered = (await admin.get("/admin", params={"status": "reconsent_due"})).text
    assert 'data-house-name="Soon"' in filtered
    assert 'data-house-name="Later"' not in filtered
    # The account's page makes Reconnect its call to action.
    assert 'data-testid="reconnect-cta"' in (await admin.get(f"/admin/accounts/{soon.id}")).text
    assert (
        'data-testid="reconnect-cta"' not in (await admin.get(f"/admin/accounts/{later.id}")).text
    )


@pytest.fixture
async def week_window_api(api_settings: ApiSettings, dev_secret: str) -> AsyncIterator[Api]:
    ebay = api_settings.ebay.model_copy(update={"reconsent_warning_days": 7})
    async with running_api(api_settings.model_copy(update={"ebay": ebay}), dev_secret) as api:
        yield api


async def test_the_reconsent_window_is_a_setting(week_window_api: Api) -> None:
    api = week_window_api
    await seed_account(api, "in-12-days", token_refresh_expires_in=timedelta(days=12))
    await seed_account(api, "in-5-days", token_refresh_expires_in=timedelta(days=5))
    listed = await api.client.get(
        "/ebay-accounts", params={"status": "reconsent_due"}, headers=api.auth()
    )
    assert [a["house_name"] for a in listed.json()["items"]] == ["in-5-days"]


async def test_a_reconnect_that_finds_a_new_username_keeps_the_old_one(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    api = connect_api
    account = await connect_seller(api, sandbox, "demo_uk_seller", "London")
    sandbox.rename("demo_uk_seller", "london_shop_2027")
    started = await api.client.post(f"/ebay-accounts/{account['id']}/reconnect", headers=api.auth())
    assert started.status_code == 201, started.text
    callback = await api.client.get(
        "/ebay/oauth/callback",
        params={
            "code": sandbox.grant("london_shop_2027"),
            "state": state_of(started.json()["consent_url"]),
        },
    )
    assert callback.status_code == 200, callback.text
    current = (await api.client.get(f"/ebay-accounts/{account['id']}", headers=api.auth())).json()
    assert current["username"] == "london_shop_2027"  # the current one, everywhere
    async with unit_of_work(api.state.sessions) as session:
        [change] = (await session.scalars(select(UsernameChange))).all()
        [payload] = (
            await session.scalars(
                select(OutboxMessage.payload).where(
                    OutboxMessage.subject.endswith("account.username_changed")
                )
            )
        ).all()
    assert (change.old_username, change.new_username, change.source) == (
        "demo_uk_seller",
        "london_shop_2027",
        "reconnect",
    )
    event = parse_event(payload.encode())
    assert isinstance(event, AccountUsernameChanged)
    assert event.new_username == "london_shop_2027"
