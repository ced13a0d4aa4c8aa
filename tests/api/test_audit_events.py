"""The audit trail you can read (issue 13): ``GET /audit-events`` (admins, org-scoped, cursor
pages, filters), the admin page's Activity view, and the daily purge of what is older than the
retention."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from connector_api.maintenance import DailyPurge
from connector_common.db.engine import unit_of_work
from connector_common.db.models import AdminSessionRecord, AuditEntry, Lease
from connector_common.events import utcnow
from tests.api.conftest import Api, connect_seller, seed_account
from tests.api.test_admin import csrf_of, login
from tests.fixtures.sandbox import SandboxHandle


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


async def events(api: Api, role: str = "admin", **params: Any) -> httpx.Response:
    return await api.client.get("/audit-events", params=params, headers=api.auth(role=role))


async def a_history(api: Api) -> tuple[uuid.UUID, list[str]]:
    """An account renamed, re-purposed, deactivated and reactivated; the request ids."""
    account = await seed_account(api, "Warehouse-A", purpose="UK orders")
    base = f"/ebay-accounts/{account.id}"
    steps = [
        ("PATCH", base, {"house_name": "Montreal"}),
        ("PATCH", base, {"purpose": "returns"}),
        ("POST", f"{base}/deactivate", None),
        ("POST", f"{base}/reactivate", None),
    ]
    request_ids = []
    for method, url, body in steps:
        response = await api.client.request(method, url, json=body, headers=api.auth(sub="bob"))
        assert response.status_code == 200, response.text
        request_ids.append(response.headers["x-request-id"])
    return account.id, request_ids


async def test_an_admin_reads_who_did_what_newest_first(api: Api) -> None:
    account_id, request_ids = await a_history(api)
    response = await events(api)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(e["action"], e["changes"]) for e in items] == [
        ("account.reactivated", {"is_active": {"before": False, "after": True}}),
        ("account.deactivated", {"is_active": {"before": True, "after": False}}),
        ("account.purpose_changed", {"purpose": {"before": "UK orders", "after": "returns"}}),
        ("account.renamed", {"house_name": {"before": "Warehouse-A", "after": "Montreal"}}),
    ]
    assert {e["actor"] for e in items} == {"bob"}
    assert {e["account_id"] for e in items} == {str(account_id)}
    assert [e["request_id"] for e in items] == request_ids[::-1]
    assert items[-1]["house_name"] == "Montreal"  # the name at the time of the entry
    assert items[0]["id"] > items[-1]["id"]


async def test_a_viewer_may_not_read_the_audit_trail(api: Api) -> None:
    response = await events(api, role="viewer")
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_another_org_sees_none_of_it(api: Api) -> None:
    await a_history(api)
    response = await api.client.get(
        "/audit-events", headers=api.auth(org=f"other-{uuid.uuid4().hex[:8]}")
    )
    assert response.status_code == 200
    assert response.json()["items"] == []
    assert "Montreal" not in response.text


async def test_filters_by_account_actor_action_and_time(api: Api) -> None:
    account_id, _ = await a_history(api)
    other = await seed_account(api, "Other")
    await api.client.post(f"/ebay-accounts/{other.id}/deactivate", headers=api.auth(sub="carol"))

    async def actions(**params: Any) -> list[str]:
        response = await events(api, **params)
        assert response.status_code == 200, response.text
        return [e["action"] for e in response.json()["items"]]

    assert len(await actions(account_id=str(account_id))) == 4
    assert await actions(account_id=str(other.id)) == ["account.deactivated"]
    assert await actions(actor="carol") == ["account.deactivated"]
    assert await actions(action=["account.renamed", "account.purpose_changed"]) == [
        "account.purpose_changed",
        "account.renamed",
    ]
    now = utcnow()
    assert len(await actions(since=(now - timedelta(minutes=5)).isoformat())) == 5
    assert await actions(until=(now - timedelta(minutes=5)).isoformat()) == []
    assert await actions(since=(now + timedelta(minutes=5)).isoformat()) == []


@pytest.mark.parametrize(
    "params",
    [
        {"until": "2026-01-01T00:00:00Z", "since": "2026-02-01T00:00:00Z"},
        {"since": "2026-01-01T00:00:00"},  # no offset: which time zone?
        {"until": "9.553280823794998e-153"},  # found by the fuzz run: read as a Unix time
        {"since": "1700000000"},
        {"action": "DROP TABLE"},
        {"actor": ""},
        {"actor": "\x00bob"},  # found by the fuzz run: PostgreSQL refuses a NUL (was a 500)
        {"account": "x"},  # a misspelt filter must not widen the answer
        {"limit": 0},
        {"cursor": "forged"},
    ],
)
async def test_bad_filters_are_422(api: Api, params: dict[str, Any]) -> None:
    response = await events(api, **params)
    assert response.status_code == 422, response.text


async def test_cursor_pages_walk_every_entry_once(api: Api) -> None:
    await a_history(api)
    seen: list[int] = []
    cursor = None
    while True:
        page = (await events(api, limit=3, **({"cursor": cursor} if cursor else {}))).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 4
    assert seen == sorted(seen, reverse=True)
    first = (await events(api, limit=1)).json()["next_cursor"]
    other_query = await events(api, limit=1, cursor=first, actor="bob")
    assert other_query.status_code == 422  # a cursor belongs to its filters


async def test_no_secret_and_no_seller_data_ever_leaves(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    account = await connect_seller(connect_api, sandbox, "demo_uk_seller", "London")
    org_id = await connect_api.org_id("org-a")
    async with unit_of_work(connect_api.state.sessions) as db:
        # A careless future writer: keys that must never be shown.
        db.add(
            AuditEntry(
                org_id=uuid.UUID(org_id),
                actor="tool",
                action="account.renamed",
                account_id=uuid.UUID(account["id"]),
                details={"refresh_token": "v^1.1#leak", "username": account["username"]},
                changes={"ebay_user_id": {"before": None, "after": account["ebay_user_id"]}},
            )
        )
    response = await connect_api.client.get("/audit-events", headers=connect_api.auth("org-a"))
    assert response.status_code == 200
    actions = [e["action"] for e in response.json()["items"]]
    assert "account.connected" in actions
    assert "connect.started" in actions
    for secret in ("v^1.1#leak", account["username"], account["ebay_user_id"], "refresh_token"):
        assert secret not in response.text
    connected = next(e for e in response.json()["items"] if e["action"] == "account.connected")
    assert connected["details"] == {"marketplace_id": "EBAY_GB", "site_id": 3}


async def test_the_audit_route_is_in_the_openapi_document(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    operation = document["paths"]["/audit-events"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"account_id", "actor", "action", "since", "until", "limit", "cursor"}
    assert set(operation["responses"]) >= {"200", "401", "403", "422", "429"}
    assert "AuditEvent" in document["components"]["schemas"]


# --- the Activity view ----------------------------------------------------------------------


async def test_the_activity_view_shows_the_trail_to_admins(api: Api) -> None:
    await a_history(api)
    browser = await login(api)
    main = (await browser.get("/admin")).text
    assert 'href="/admin/activity"' in main
    page = await browser.get("/admin/activity")
    assert page.status_code == 200
    assert "account.renamed" in page.text
    assert "Warehouse-A &rarr; Montreal" in page.text
    assert "UK orders &rarr; returns" in page.text
    filtered = await browser.get("/admin/activity", params={"action": "account.deactivated"})
    assert "<code>account.deactivated</code>" in filtered.text
    assert "<code>account.renamed</code>" not in filtered.text
    assert csrf_of(page.text)  # the header's log-out forms work here too
    await browser.aclose()


async def test_the_activity_view_refuses_control_characters_in_filters(api: Api) -> None:
    browser = await login(api)
    response = await browser.get("/admin/activity", params={"actor": "\x00bob"})
    assert response.status_code == 303
    flash = api.state.admin_sessions.read_flash(response.cookies.get("connector_flash"))
    assert flash is not None
    assert flash.kind == "error"
    await browser.aclose()


async def test_the_activity_view_is_refused_to_viewers(api: Api) -> None:
    browser = await login(api, role="viewer")
    assert 'href="/admin/activity"' not in (await browser.get("/admin")).text
    response = await browser.get("/admin/activity")
    assert response.status_code == 303
    flash = api.state.admin_sessions.read_flash(response.cookies.get("connector_flash"))
    assert flash is not None
    assert "admin role" in flash.message
    await browser.aclose()


# --- retention ------------------------------------------------------------------------------


async def entries_of(api: Api, org_id: uuid.UUID) -> int:
    async with api.state.sessions() as db:
        return int(await db.scalar(select(func.count()).where(AuditEntry.org_id == org_id)) or 0)


async def test_the_daily_purge_deletes_entries_past_the_retention_once_a_day(api: Api) -> None:
    org_id = await api.state.orgs.resolve(api.default_org)
    async with unit_of_work(api.state.sessions) as db:
        for age_days in (400, 366, 364, 1):
            db.add(
                AuditEntry(
                    org_id=org_id,
                    actor="old",
                    action="account.renamed",
                    created_at=utcnow() - timedelta(days=age_days),
                )
            )
        # An admin session that ended two days ago goes too.
        db.add(
            AdminSessionRecord(
                id_hash=uuid.uuid4().bytes,
                org_id=org_id,
                subject="gone",
                expires_at=utcnow() - timedelta(days=2),
            )
        )
    async with unit_of_work(api.state.sessions) as db:  # the lease may be another test's
        await db.execute(lease_due_again())
    report = await DailyPurge(api.state.sessions, retention_days=365, holder="a").run_once()
    assert report is not None
    assert report.audit_entries >= 2
    assert await entries_of(api, org_id) == 2
    async with api.state.sessions() as db:
        assert (
            await db.scalar(select(func.count()).where(AdminSessionRecord.subject == "gone")) == 0
        )
    # Later the same day, on this replica or another: nothing to do.
    assert await DailyPurge(api.state.sessions, retention_days=365, holder="a").run_once() is None
    assert await DailyPurge(api.state.sessions, retention_days=1, holder="b").run_once() is None
    assert await entries_of(api, org_id) == 2


async def test_retention_zero_keeps_the_trail_forever(api: Api) -> None:
    org_id = await api.state.orgs.resolve(api.default_org)
    async with unit_of_work(api.state.sessions) as db:
        db.add(
            AuditEntry(
                org_id=org_id,
                actor="old",
                action="account.renamed",
                created_at=utcnow() - timedelta(days=3650),
            )
        )
        await db.execute(lease_due_again())
    report = await DailyPurge(api.state.sessions, retention_days=0, holder="a").run_once()
    assert report is not None
    assert await entries_of(api, org_id) == 1


def lease_due_again() -> Any:
    """Make today's purge due again (as it is the next day)."""
    return update(Lease).where(Lease.name == "api-daily-purge").values(lease_until=utcnow())
