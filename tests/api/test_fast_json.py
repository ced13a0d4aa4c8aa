"""The read routes answer with plain values encoded by msgspec (connector_api.fastjson), not
through the Pydantic models: these tests hold both to the same bytes, and the column rows the
routes read to the same view as the ORM objects the write routes use."""

from __future__ import annotations

from datetime import timedelta

from connector_api import repository as repo
from connector_api.auth import Principal
from connector_api.fastjson import encode
from connector_api.repository import AccountFilter
from connector_api.schemas import Account, AccountPage, HealthCheckPage, SortKey
from connector_api.services import listing
from connector_api.services.context import RequestContext
from connector_common.db.engine import unit_of_work
from connector_common.db.models import HealthCheck
from connector_common.events import utcnow
from tests.api.conftest import Api, seed_account


async def _seed_variety(api: Api) -> None:
    now = utcnow()
    await seed_account(api, 'Café ☕ "quoted" </script>', purpose="line\nbreak\ttab")
    await seed_account(api, "No token", token=False)
    await seed_account(
        api, "Deactivated", is_active=False, deactivated_at=now, next_health_check_at=None
    )
    await seed_account(
        api,
        "Failing",
        last_health_at=now,
        last_health_outcome="unhealthy",
        last_health_latency_ms=321,
        last_health_error="eBay said no",
        token_last_refresh_error="eBay answered 503",
        token_consecutive_failures=3,
        token_retry_at=now + timedelta(minutes=5),
    )
    await seed_account(
        api,
        "Deleted",
        token=False,
        is_active=False,
        deactivated_at=now,
        deleted_by_ebay_at=now,
        ebay_user_id=None,
        username=None,
        marketplace_id=None,
        site_id=None,
        site_code=None,
    )


async def test_pages_encode_to_the_same_bytes_as_the_models(org_api: Api) -> None:
    await _seed_variety(org_api)
    auth = org_api.auth()
    principal = await org_api.state.orgs.resolve(org_api.default_org)
    answer = await org_api.client.get("/ebay-accounts", params={"limit": 2}, headers=auth)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    # The same page through the model: validated and dumped by Pydantic.
    page = AccountPage.model_validate(answer.json())
    assert page.model_dump_json().encode() == answer.content
    assert answer.json()["next_cursor"]
    rest = await org_api.client.get(
        "/ebay-accounts", params={"cursor": answer.json()["next_cursor"]}, headers=auth
    )
    names = [a["house_name"] for a in answer.json()["items"] + rest.json()["items"]]
    assert len(names) == 5
    assert AccountPage.model_validate(rest.json()).model_dump_json().encode() == rest.content
    caller = Principal(principal, org_api.default_org, subject="t", roles=frozenset({"viewer"}))
    ctx = RequestContext(principal=caller, namespace="t")
    async with org_api.state.sessions() as session:
        direct = await listing.account_page(
            session, ctx, org_api.state.cursors, AccountFilter(), SortKey.HOUSE_NAME, 10, None
        )
        for item in direct["items"]:
            # The bytes of one item equal the model's; the column row's view equals the one
            # built from the ORM objects (what the write routes answer).
            assert encode(item) == Account.model_validate(item).model_dump_json().encode()
            found = await repo.get_account(session, principal, item["id"])
            assert found is not None
            from_orm = listing.to_account(found[0], found[1], ctx.now, ctx.reconsent_window)
            assert from_orm.model_dump() == Account.model_validate(item).model_dump()


async def test_one_account_and_health_checks_encode_as_the_models(org_api: Api) -> None:
    account = await seed_account(org_api, "Checked", last_health_at=utcnow())
    async with unit_of_work(org_api.state.sessions) as session:
        for n in range(3):
            session.add(
                HealthCheck(
                    account_id=account.id,
                    checked_at=utcnow() - timedelta(minutes=n),
                    outcome="healthy" if n else "unhealthy",
                    latency_ms=100 + n,
                    http_status=200,
                    api="trading",
                    detail="ünïcode detail" if n == 1 else None,
                )
            )
    auth = org_api.auth()
    one = await org_api.client.get(f"/ebay-accounts/{account.id}", headers=auth)
    assert one.status_code == 200
    assert Account.model_validate(one.json()).model_dump_json().encode() == one.content
    checks = await org_api.client.get(
        f"/ebay-accounts/{account.id}/health-checks", params={"limit": 2}, headers=auth
    )
    assert checks.status_code == 200
    assert HealthCheckPage.model_validate(checks.json()).model_dump_json().encode() == (
        checks.content
    )
    assert [c["outcome"] for c in checks.json()["items"]] == ["unhealthy", "healthy"]
