"""`/ebay-accounts`: listing (filters, sorting, cursors), one account, its health history,
rename / purpose, deactivate / reactivate, delete, and refresh / health-check requests."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from connector_common.db.engine import unit_of_work
from connector_common.db.models import (
    AuditEntry,
    EbayAccount,
    EbayToken,
    HealthCheck,
    OutboxMessage,
)
from connector_common.events import utcnow
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


def names(page: dict[str, Any]) -> list[str]:
    return [a["house_name"] for a in page["items"]]


async def outbox(api: Api) -> list[OutboxMessage]:
    """This test's org's messages: events name the org in the subject, commands in the body."""
    org_id = str(await api.state.orgs.resolve(api.default_org))
    async with api.state.sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.subject.contains(org_id) | OutboxMessage.payload.contains(org_id))
            .order_by(OutboxMessage.created_at)
        )
        return list(rows.all())


async def audit(api: Api) -> list[AuditEntry]:
    org_id = await api.state.orgs.resolve(api.default_org)
    async with api.state.sessions() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.org_id == org_id).order_by(AuditEntry.id)
        )
        return list(rows.all())


# --- reading -----------------------------------------------------------------------------


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


async def test_status_comes_from_the_common_status_function(api: Api) -> None:
    await seed_account(api, "ok")
    await seed_account(api, "soon", token_expires_in=timedelta(minutes=5))
    await seed_account(api, "gone", token_expires_in=timedelta(minutes=-5))
    await seed_account(api, "again", token_reconnect_required_at=utcnow())
    await seed_account(api, "err", token_last_refresh_error="eBay 503")
    await seed_account(api, "sick", last_health_outcome="unhealthy", last_health_at=utcnow())
    await seed_account(api, "off", is_active=False, deactivated_at=utcnow())
    await seed_account(api, "none", token=False)
    statuses = {a["house_name"]: a["status"] for a in (await list_accounts(api))["items"]}
    assert statuses == {
        "ok": "healthy",
        "soon": "expiring_soon",
        "gone": "expired",
        "again": "reconnect_required",
        "err": "error",
        "sick": "unhealthy",
        "off": "deactivated",
        "none": "not_connected",
    }


async def test_status_filter_in_sql_agrees_with_the_status_function(api: Api) -> None:
    await seed_account(api, "ok")
    await seed_account(api, "soon", token_expires_in=timedelta(minutes=5))
    await seed_account(api, "gone", token_expires_in=timedelta(minutes=-5))
    await seed_account(api, "again", token_reconnect_required_at=utcnow())
    await seed_account(api, "err", token_last_refresh_error="eBay 503")
    await seed_account(api, "sick", last_health_outcome="unhealthy", last_health_at=utcnow())
    await seed_account(api, "off", is_active=False, deactivated_at=utcnow())
    await seed_account(api, "none", token=False)
    unknown = await seed_account(api, "unk")
    async with unit_of_work(api.state.sessions) as session:
        token = await session.get(EbayToken, unknown.id)
        assert token is not None
        token.access_expires_at = None
    for account in (await list_accounts(api))["items"]:
        filtered = await list_accounts(api, status=account["status"])
        assert names(filtered) == [account["house_name"]], account["status"]


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
    "sort", ["house_name", "-created_at", "token_expires_at", "-last_health_at"]
)
async def test_cursor_pagination_visits_every_account_once(api: Api, sort: str) -> None:
    for i in range(7):
        await seed_account(api, f"house-{i}", token=i % 3 != 0)
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


async def test_tampered_or_foreign_cursor_is_422(api: Api) -> None:
    for i in range(3):
        await seed_account(api, f"h{i}")
    cursor = (await list_accounts(api, limit=1))["next_cursor"]
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    for params in ({"cursor": tampered}, {"cursor": cursor, "sort": "-house_name"}):
        response = await api.client.get("/ebay-accounts", params=params, headers=api.auth())
        assert response.status_code == 422
        assert response.json()["fields"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"sort": "password"}, {"status": "bogus"}, {"marketplace": "x"}],
)
async def test_bad_list_parameters_are_422_with_the_field(api: Api, params: dict[str, Any]) -> None:
    response = await api.client.get("/ebay-accounts", params=params, headers=api.auth())
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid"
    assert body["fields"]
    assert next(iter(params)) in body["fields"][0]["field"]


async def test_get_one_account(api: Api) -> None:
    account = await seed_account(api, "Montreal")
    response = await api.client.get(f"/ebay-accounts/{account.id}", headers=api.auth())
    assert response.status_code == 200
    assert response.json()["house_name"] == "Montreal"


@pytest.mark.parametrize("account_id", ["not-a-uuid", str(uuid.uuid4()), "1; drop table x"])
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


# --- changing ----------------------------------------------------------------------------


async def test_rename_changes_the_name_and_records_old_and_new(api: Api) -> None:
    account = await seed_account(api, "Warehouse-A")
    response = await api.client.patch(
        f"/ebay-accounts/{account.id}", json={"house_name": "  Montreal  "}, headers=api.auth()
    )
    assert response.status_code == 200
    assert response.json()["house_name"] == "Montreal"  # trimmed
    [message] = await outbox(api)
    assert message.subject.endswith(f".events.{account.org_id}.account.renamed")
    assert '"old_house_name":"Warehouse-A"' in message.payload
    assert '"new_house_name":"Montreal"' in message.payload
    [entry] = await audit(api)
    assert (entry.action, entry.house_name, entry.actor) == ("account.renamed", "Montreal", "alice")
    assert entry.details == {"old_house_name": "Warehouse-A"}
    assert entry.request_id == response.headers["x-request-id"]


async def test_rename_does_not_rewrite_earlier_history(api: Api) -> None:
    account = await seed_account(api, "Old")
    await api.client.post(f"/ebay-accounts/{account.id}/deactivate", headers=api.auth())
    await api.client.patch(
        f"/ebay-accounts/{account.id}", json={"house_name": "New"}, headers=api.auth()
    )
    assert [(a.action, a.house_name) for a in await audit(api)] == [
        ("account.deactivated", "Old"),
        ("account.renamed", "New"),
    ]
    payloads = [m.payload for m in await outbox(api)]
    assert '"house_name":"Old"' in payloads[0]


async def test_rename_to_a_name_another_active_account_uses_is_409_naming_it(api: Api) -> None:
    await seed_account(api, "Montreal")
    account = await seed_account(api, "Toronto")
    response = await api.client.patch(
        f"/ebay-accounts/{account.id}", json={"house_name": "MONTREAL"}, headers=api.auth()
    )
    assert response.status_code == 409
    assert "MONTREAL" in response.json()["message"]
    assert await outbox(api) == []  # no event for a change that did not happen


async def test_rename_may_reuse_the_name_of_a_deactivated_account(api: Api) -> None:
    await seed_account(api, "Montreal", is_active=False, deactivated_at=utcnow())
    account = await seed_account(api, "Toronto")
    response = await api.client.patch(
        f"/ebay-accounts/{account.id}", json={"house_name": "Montreal"}, headers=api.auth()
    )
    assert response.status_code == 200


async def test_purpose_change_is_its_own_event(api: Api) -> None:
    account = await seed_account(api, "A", purpose="orders")
    response = await api.client.patch(
        f"/ebay-accounts/{account.id}",
        json={"house_name": "B", "purpose": "returns"},
        headers=api.auth(),
    )
    assert response.json()["purpose"] == "returns"
    subjects = [m.subject.rsplit(".", 2)[-2:] for m in await outbox(api)]
    assert subjects == [["account", "renamed"], ["account", "purpose_changed"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"house_name": ""}, "house_name"),
        ({"house_name": "   "}, "house_name"),
        ({"house_name": "x" * 101}, "house_name"),
        ({"house_name": "tab\tname"}, "house_name"),
        ({"purpose": "p" * 501}, "purpose"),
        ({"house_name": "ok", "owner": "mallory"}, "owner"),
        ({"house_name": 5}, "house_name"),
    ],
)
async def test_invalid_update_is_422_with_field_messages(
    api: Api, body: dict[str, Any], field: str
) -> None:
    account = await seed_account(api, "A")
    response = await api.client.patch(f"/ebay-accounts/{account.id}", json=body, headers=api.auth())
    assert response.status_code == 422
    fields = response.json()["fields"]
    assert any(field in f["field"] for f in fields), fields
    assert "mallory" not in response.text  # input is never echoed


async def test_deactivate_follows_the_pipeline_contract(api: Api) -> None:
    account = await seed_account(api, "A", next_health_check_at=utcnow())
    response = await api.client.post(f"/ebay-accounts/{account.id}/deactivate", headers=api.auth())
    assert response.status_code == 200
    assert response.json()["status"] == "deactivated"
    async with api.state.sessions() as session:
        row = await session.get(EbayAccount, account.id)
        token = await session.get(EbayToken, account.id)
    assert row is not None
    assert token is not None
    assert row.is_active is False
    assert row.deactivated_at is not None
    assert row.next_health_check_at is None
    assert token.refresh_enabled is False
    again = await api.client.post(f"/ebay-accounts/{account.id}/deactivate", headers=api.auth())
    assert again.status_code == 200
    assert len(await outbox(api)) == 1  # idempotent: one event


async def test_reactivate_follows_the_pipeline_contract(api: Api) -> None:
    account = await seed_account(api, "A", is_active=False, deactivated_at=utcnow())
    async with unit_of_work(api.state.sessions) as session:
        token = await session.get(EbayToken, account.id)
        assert token is not None
        token.refresh_enabled = False
    response = await api.client.post(f"/ebay-accounts/{account.id}/reactivate", headers=api.auth())
    assert response.status_code == 200
    assert response.json()["is_active"] is True
    async with api.state.sessions() as session:
        row = await session.get(EbayAccount, account.id)
        token = await session.get(EbayToken, account.id)
    assert row is not None
    assert token is not None
    assert row.deactivated_at is None
    assert row.next_health_check_at is not None
    assert token.refresh_enabled is True
    assert (await outbox(api))[0].subject.endswith("account.reactivated")


async def test_reactivate_keeps_refresh_off_while_reconnect_is_required(api: Api) -> None:
    account = await seed_account(
        api, "A", is_active=False, deactivated_at=utcnow(), token_reconnect_required_at=utcnow()
    )
    response = await api.client.post(f"/ebay-accounts/{account.id}/reactivate", headers=api.auth())
    assert response.json()["status"] == "reconnect_required"
    async with api.state.sessions() as session:
        row = await session.get(EbayAccount, account.id)
        token = await session.get(EbayToken, account.id)
    assert row is not None
    assert token is not None
    assert token.refresh_enabled is False
    assert row.next_health_check_at is None


async def test_reactivate_is_409_when_the_name_was_taken_meanwhile(api: Api) -> None:
    old = await seed_account(api, "Montreal", is_active=False, deactivated_at=utcnow())
    await seed_account(api, "montreal")
    response = await api.client.post(f"/ebay-accounts/{old.id}/reactivate", headers=api.auth())
    assert response.status_code == 409
    assert "Montreal" in response.json()["message"]


async def test_delete_removes_account_tokens_and_history_but_keeps_a_clean_audit(
    api: Api,
) -> None:
    account = await seed_account(api, "Gone", username="private_name", eias_token="EIAS==")
    async with unit_of_work(api.state.sessions) as session:
        session.add(HealthCheck(account_id=account.id, checked_at=utcnow(), outcome="healthy"))
    response = await api.client.delete(f"/ebay-accounts/{account.id}", headers=api.auth())
    assert response.status_code == 204
    async with api.state.sessions() as session:
        assert await session.get(EbayAccount, account.id) is None
        assert await session.get(EbayToken, account.id) is None
        history = select(HealthCheck).where(HealthCheck.account_id == account.id)
        assert (await session.scalars(history)).all() == []
    [entry] = await audit(api)
    assert (entry.action, entry.account_id, entry.house_name) == (
        "account.deleted",
        account.id,
        "Gone",
    )
    text = f"{entry.details} {[m.payload for m in await outbox(api)]}"
    for personal in ("private_name", "EIAS==", account.ebay_user_id):
        assert personal not in text
    assert (
        await api.client.delete(f"/ebay-accounts/{account.id}", headers=api.auth())
    ).status_code == 404


# --- asking the workers --------------------------------------------------------------------


async def test_refresh_request_is_202_and_queues_refresh_token_for_the_current_version(
    api: Api,
) -> None:
    account = await seed_account(api, "A", token_version=4)
    response = await api.client.post(f"/ebay-accounts/{account.id}/refresh", headers=api.auth())
    assert response.status_code == 202
    body = response.json()
    assert body["kind"] == "refresh"
    assert body["token_version"] == 4
    assert body["dedup_id"] == f"refresh:{account.id}:4"
    [message] = await outbox(api)
    assert message.subject == f"{api.state.namespace}.work.refresh"
    assert message.headers["Nats-Msg-Id"] == f"refresh:{account.id}:4"
    assert str(message.id) == body["command_id"]
    async with api.state.sessions() as session:
        token = await session.get(EbayToken, account.id)
    assert token is not None
    assert token.refresh_requested_at is not None


async def test_health_check_request_is_202_and_a_double_click_collapses(api: Api) -> None:
    account = await seed_account(api, "A")
    url = f"/ebay-accounts/{account.id}/health-check"
    first = (await api.client.post(url, headers=api.auth())).json()
    second = (await api.client.post(url, headers=api.auth())).json()
    assert first["kind"] == "health"
    assert first["reason"] == "manual"
    assert first["dedup_id"] == f"health:{account.id}:{first['slot']}"
    assert abs(first["slot"] - utcnow().timestamp()) < 60
    if first["slot"] == second["slot"]:
        assert first["dedup_id"] == second["dedup_id"]  # JetStream keeps one of the two
    async with api.state.sessions() as session:
        row = await session.get(EbayAccount, account.id)
    assert row is not None
    assert row.health_requested_at is not None


@pytest.mark.parametrize("action", ["refresh", "health-check"])
@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"is_active": False, "deactivated_at": utcnow()}, "deactivated"),
        ({"token_reconnect_required_at": utcnow()}, "reconnect"),
        ({"token": False}, "no eBay token"),
    ],
)
async def test_work_request_is_409_when_the_account_cannot_be_worked_on(
    api: Api, action: str, fields: dict[str, Any], says: str
) -> None:
    account = await seed_account(api, "A", **fields)
    response = await api.client.post(f"/ebay-accounts/{account.id}/{action}", headers=api.auth())
    assert response.status_code == 409
    assert says in response.json()["message"]
    assert await outbox(api) == []
