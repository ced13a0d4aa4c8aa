"""Reading accounts: the list (fields, status, filters, sorting, signed cursors), one
account, malformed ids, and the health-check history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from connector_common.db.engine import unit_of_work
from connector_common.db.models import EbayToken, HealthCheck
from connector_common.events import utcnow
from connector_common.status import AccountStatus
from tests.api.conftest import Api, seed_account


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


async def list_accounts(api: Api, **params: Any) -> dict[str, Any]:
    response = await api.client.get("/ebay-accounts", params=params, headers=api.auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


STATUSES = [status.value for status in AccountStatus]


def names(page: dict[str, Any]) -> list[str]:
    return [a["house_name"] for a in page["items"]]


async def test_list_shows_account_fields_token_metadata_and_last_health(api: Api) -> None:
    checked = utcnow() - timedelta(minutes=3)
    account = await seed_account(
        api,
        "Warehouse-A",
        marketplace_id="EBAY_GB",
        site_id=3,
        site_code="UK",
        last_health_at=checked,
        last_health_outcome="healthy",
        last_health_latency_ms=181,
    )
    [item] = (await list_accounts(api))["items"]
    assert item["id"] == str(account.id)
    assert (item["marketplace_id"], item["site_id"], item["site_code"]) == ("EBAY_GB", 3, "UK")
    assert item["ebay_user_id"] == account.ebay_user_id
    assert item["username"] == "seller_one"
    assert item["status"] == "healthy"
    assert item["token"]["access_expires_at"] is not None
    assert item["token"]["refresh_enabled"] is True
    assert item["last_health"]["latency_ms"] == 181
    assert set(item["token"]) >= {"last_refreshed_at", "last_refresh_error"}
    assert "access_token" not in str(item)
    assert "v^1.1" not in str(item)


TOMBSTONE: dict[str, Any] = {
    "token": False,
    "is_active": False,
    "deactivated_at": utcnow(),
    "deleted_by_ebay_at": utcnow(),
    "ebay_user_id": None,
    "username": None,
    "marketplace_id": None,
    "site_id": None,
    "site_code": None,
}


async def seed_every_status(api: Api) -> None:
    """One account per status (and a second reconnect_required: a refresh token that ended)."""
    await seed_account(api, "ok")
    await seed_account(api, "soon", token_expires_in=timedelta(minutes=5))
    await seed_account(api, "gone", token_expires_in=timedelta(minutes=-5))
    await seed_account(api, "again", token_reconnect_required_at=utcnow())
    await seed_account(api, "err", token_last_refresh_error="eBay 503")
    await seed_account(api, "sick", last_health_outcome="unhealthy", last_health_at=utcnow())
    await seed_account(api, "off", is_active=False, deactivated_at=utcnow())
    await seed_account(api, "none", token=False)
    await seed_account(api, "due", token_refresh_expires_in=timedelta(days=29))
    await seed_account(api, "tomb", **TOMBSTONE)


async def test_status_comes_from_the_common_status_function(api: Api) -> None:
    await seed_every_status(api)
    await seed_account(api, "ended", token_refresh_expires_in=timedelta(seconds=-1))
    statuses = {a["house_name"]: a["status"] for a in (await list_accounts(api))["items"]}
    assert statuses == {
        "ok": "healthy",
        "soon": "expiring_soon",
        "gone": "expired",
        "again": "reconnect_required",
        "ended": "reconnect_required",
        "err": "error",
        "sick": "unhealthy",
        "off": "deactivated",
        "none": "not_connected",
        "due": "reconsent_due",
        "tomb": "deleted_by_ebay",
    }


async def test_status_filter_in_sql_agrees_with_the_status_function(api: Api) -> None:
    await seed_every_status(api)
    unknown = await seed_account(api, "unk")
    async with unit_of_work(api.state.sessions) as session:
        token = await session.get(EbayToken, unknown.id)
        assert token is not None
        token.access_expires_at = None
    for account in (await list_accounts(api))["items"]:
        filtered = await list_accounts(api, status=account["status"])
        assert names(filtered) == [account["house_name"]], account["status"]


async def test_a_refresh_token_that_ended_is_filtered_as_reconnect_required(api: Api) -> None:
    await seed_account(api, "ended", token_refresh_expires_in=timedelta(seconds=-1))
    await seed_account(api, "fine")
    assert names(await list_accounts(api, status="reconnect_required")) == ["ended"]


async def test_reconsent_due_filter_and_window_boundaries(api: Api) -> None:
    await seed_account(api, "in-29d", token_refresh_expires_in=timedelta(days=29, hours=23))
    await seed_account(api, "in-31d", token_refresh_expires_in=timedelta(days=30, hours=1))
    await seed_account(
        api,
        "in-5d-but-sick",
        token_refresh_expires_in=timedelta(days=5),
        last_health_outcome="unhealthy",
        last_health_at=utcnow(),
    )
    await seed_account(
        api,
        "in-5d-soon",
        token_refresh_expires_in=timedelta(days=5),
        token_expires_in=timedelta(minutes=3),
    )
    assert names(await list_accounts(api, status="reconsent_due")) == ["in-29d", "in-5d-soon"]
    assert names(await list_accounts(api, status="unhealthy")) == ["in-5d-but-sick"]


async def test_list_filters_by_status_purpose_marketplace_and_active(api: Api) -> None:
    await seed_account(api, "a", purpose="Orders", marketplace_id="EBAY_GB")
    await seed_account(api, "b", purpose="returns", marketplace_id="EBAY_DE")
    await seed_account(api, "c", purpose="orders", token_expires_in=timedelta(minutes=-1))
    await seed_account(api, "d", purpose="orders", is_active=False, deactivated_at=utcnow())
    assert names(await list_accounts(api, status="expired")) == ["c"]
    assert names(await list_accounts(api, status=["expired", "deactivated"])) == ["c", "d"]
    assert names(await list_accounts(api, purpose="ORDERS")) == ["a", "c", "d"]
    assert names(await list_accounts(api, marketplace="EBAY_DE")) == ["b"]
    assert names(await list_accounts(api, active="false")) == ["d"]
    assert names(await list_accounts(api, active="true", purpose="orders")) == ["a", "c"]


async def test_list_sorts_by_name_creation_and_token_expiry(api: Api) -> None:
    await seed_account(api, "beta", token_expires_in=timedelta(hours=1))
    await seed_account(api, "Alpha", token_expires_in=timedelta(hours=2))
    await seed_account(api, "gamma", token=False)
    assert names(await list_accounts(api)) == ["Alpha", "beta", "gamma"]
    assert names(await list_accounts(api, sort="-house_name")) == ["gamma", "beta", "Alpha"]
    assert names(await list_accounts(api, sort="created_at")) == ["beta", "Alpha", "gamma"]
    assert names(await list_accounts(api, sort="token_expires_at")) == ["beta", "Alpha", "gamma"]
    assert names(await list_accounts(api, sort="-token_expires_at")) == ["gamma", "Alpha", "beta"]


@pytest.mark.parametrize(
    "sort",
    ["house_name", "-created_at", "token_expires_at", "-last_health_at", "status", "-status"],
)
async def test_cursor_pagination_visits_every_account_once(api: Api, sort: str) -> None:
    for i in range(7):
        await seed_account(
            api,
            f"house-{i}",
            token=i % 3 != 0,
            token_last_refresh_error=("503" if i == 4 else None),
        )
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3, "sort": sort}
        if cursor:
            params["cursor"] = cursor
        page = await list_accounts(api, **params)
        seen += names(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"house-{i}" for i in range(7)]
    assert len(seen) == 7


async def test_list_sorts_by_status_in_the_rules_order(api: Api) -> None:
    await seed_account(api, "ok")
    await seed_account(api, "err", token_last_refresh_error="eBay 503")
    await seed_account(api, "again", token_reconnect_required_at=utcnow())
    await seed_account(api, "soon", token_expires_in=timedelta(minutes=5))
    await seed_account(api, "off", is_active=False, deactivated_at=utcnow())
    # AccountStatus order (reconnect_required, error, ..., expiring_soon, healthy), the accounts
    # switched off last.
    assert names(await list_accounts(api, sort="status")) == ["again", "err", "soon", "ok", "off"]
    assert names(await list_accounts(api, sort="-status")) == ["off", "ok", "soon", "err", "again"]


async def test_search_finds_house_names_and_usernames_case_insensitively(api: Api) -> None:
    await seed_account(api, "Montreal", username="maple_parts")
    await seed_account(api, "Toronto", username="ontario_mtl_shop")
    await seed_account(api, "Berlin", username="spree_50%_off")
    assert names(await list_accounts(api, search="MONT")) == ["Montreal"]
    assert names(await list_accounts(api, search="mtl")) == ["Toronto"]
    assert names(await list_accounts(api, search="o")) == ["Berlin", "Montreal", "Toronto"]
    # LIKE's wildcards are plain characters here.
    assert names(await list_accounts(api, search="50%")) == ["Berlin"]
    assert names(await list_accounts(api, search="_")) == ["Berlin", "Montreal", "Toronto"]
    assert names(await list_accounts(api, search="%")) == ["Berlin"]


async def test_search_is_part_of_the_cursor(api: Api) -> None:
    for i in range(4):
        await seed_account(api, f"shop-{i}")
    cursor = (await list_accounts(api, limit=1, search="shop"))["next_cursor"]
    response = await api.client.get(
        "/ebay-accounts", params={"cursor": cursor, "search": "shop-3"}, headers=api.auth()
    )
    assert response.status_code == 422


async def test_summary_counts_every_status_and_lists_marketplaces_and_purposes(api: Api) -> None:
    await seed_account(api, "a", purpose="orders", marketplace_id="EBAY_GB")
    await seed_account(api, "b", purpose="returns", marketplace_id="EBAY_DE")
    await seed_account(api, "c", purpose="", token_expires_in=timedelta(minutes=5))
    await seed_account(api, "d", purpose="orders", is_active=False, deactivated_at=utcnow())
    response = await api.client.get("/ebay-accounts/summary", headers=api.auth(role="viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 4
    assert body["by_status"]["healthy"] == 2
    assert body["by_status"]["expiring_soon"] == 1
    assert body["by_status"]["deactivated"] == 1
    assert body["by_status"]["reconnect_required"] == 0  # every status, zero included
    assert set(body["by_status"]) == set(STATUSES)
    assert body["marketplaces"] == ["EBAY_DE", "EBAY_GB", "EBAY_US"]
    assert body["purposes"] == ["orders", "returns"]


async def test_tampered_or_foreign_cursor_is_422(api: Api) -> None:
    for i in range(3):
        await seed_account(api, f"h{i}")
    cursor = (await list_accounts(api, limit=1))["next_cursor"]
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    for params in ({"cursor": tampered}, {"cursor": cursor, "sort": "-house_name"}):
        response = await api.client.get("/ebay-accounts", params=params, headers=api.auth())
        assert response.status_code == 422
        assert response.json()["fields"][0]["field"] == "cursor"


async def test_a_cursor_with_non_ascii_characters_is_422(api: Api) -> None:
    response = await api.client.get(
        "/ebay-accounts", params={"cursor": "e30.s\u00e9gn\u00e9"}, headers=api.auth()
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"sort": "password"},
        {"status": "bogus"},
        {"marketplace": "x"},
        {"purpose": "orders\x00"},  # PostgreSQL text cannot hold NUL: a 500 before
        {"search": "shop\x00"},
        {"search": "x" * 101},
    ],
)
async def test_bad_list_parameters_are_422_with_the_field(api: Api, params: dict[str, Any]) -> None:
    response = await api.client.get("/ebay-accounts", params=params, headers=api.auth())
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid"
    assert body["fields"]
    assert next(iter(params)) in body["fields"][0]["field"]


async def test_an_unknown_query_parameter_is_422_not_silently_ignored(api: Api) -> None:
    await seed_account(api, "a", is_active=False, deactivated_at=utcnow())
    await seed_account(api, "b")
    # A typo must not turn "the deactivated ones" into "all of them".
    response = await api.client.get("/ebay-accounts", params={"activ": "false"}, headers=api.auth())
    assert response.status_code == 422
    assert response.json()["fields"] == [{"field": "activ", "message": "unknown query parameter"}]


async def test_get_one_account(api: Api) -> None:
    account = await seed_account(api, "Montreal")
    response = await api.client.get(f"/ebay-accounts/{account.id}", headers=api.auth())
    assert response.status_code == 200
    assert response.json()["house_name"] == "Montreal"


# A fixed unknown id: parameters must be the same in every collection (pytest-xdist workers).
UNKNOWN_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.parametrize("account_id", ["not-a-uuid", UNKNOWN_ID, "1; drop table x"])
async def test_missing_or_malformed_account_id_is_404(api: Api, account_id: str) -> None:
    response = await api.client.get(f"/ebay-accounts/{account_id}", headers=api.auth())
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_health_check_history_is_paginated_newest_first(api: Api) -> None:
    account = await seed_account(api, "checked")
    async with unit_of_work(api.state.sessions) as session:
        for minutes in range(5):
            session.add(
                HealthCheck(
                    account_id=account.id,
                    checked_at=utcnow() - timedelta(minutes=minutes),
                    outcome="healthy" if minutes else "unhealthy",
                    latency_ms=100 + minutes,
                )
            )
    url = f"/ebay-accounts/{account.id}/health-checks"
    first = (await api.client.get(url, params={"limit": 2}, headers=api.auth())).json()
    assert [c["latency_ms"] for c in first["items"]] == [100, 101]
    second = await api.client.get(
        url, params={"limit": 10, "cursor": first["next_cursor"]}, headers=api.auth()
    )
    assert [c["latency_ms"] for c in second.json()["items"]] == [102, 103, 104]
    assert second.json()["next_cursor"] is None
