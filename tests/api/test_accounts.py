"""Changing accounts (rename, purpose, deactivate, reactivate, delete) and asking the workers
(refresh, health check): results, the pipeline contract, events, audit, refusals."""

from __future__ import annotations

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
    assert entry.changes == {"house_name": {"before": "Warehouse-A", "after": "Montreal"}}
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
        ({"house_name": "\u200b"}, "house_name"),  # zero-width space: an invisible name
        ({"house_name": "\ufeff\u0301"}, "house_name"),  # BOM and a lone accent: nothing to see
        ({"house_name": "Ware\u200bhouse"}, "house_name"),  # would pass for "Warehouse"
        ({"house_name": "Shop \u202egnp.exe"}, "house_name"),  # right-to-left override
        ({"house_name": "two\u2028lines"}, "house_name"),  # line separator
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


@pytest.mark.parametrize(
    "name",
    [
        "Zürich",
        "東京 倉庫",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        "Desk \U0001f469\u200d\U0001f4bb",
    ],
)
async def test_names_in_any_script_are_accepted_with_their_joiners(api: Api, name: str) -> None:
    account = await seed_account(api, "A")
    response = await api.client.patch(
        f"/ebay-accounts/{account.id}", json={"house_name": name}, headers=api.auth()
    )
    assert response.status_code == 200, response.text
    assert response.json()["house_name"] == name


async def test_a_body_that_is_not_json_is_422_naming_the_body(api: Api) -> None:
    account = await seed_account(api, "A")
    response = await api.client.patch(
        f"/ebay-accounts/{account.id}",
        content=b'{"house_name": ',
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body"


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
    assert account.ebay_user_id is not None
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
