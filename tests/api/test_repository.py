"""The API's SQL takes the caller's org in every function that reads an account's rows, so a
service that forgot to check the org first still could not read another org's data."""

from __future__ import annotations

import uuid

from connector_api import repository as repo
from connector_common.db.engine import unit_of_work
from connector_common.db.models import HealthCheck
from connector_common.events import utcnow
from tests.api.conftest import Api, seed_account


async def test_health_checks_are_read_only_within_the_callers_org(org_api: Api) -> None:
    account = await seed_account(org_api, "A")
    async with unit_of_work(org_api.state.sessions) as session:
        session.add(HealthCheck(account_id=account.id, checked_at=utcnow(), outcome="healthy"))
    other_org = await org_api.state.orgs.resolve(f"org-{uuid.uuid4().hex[:10]}")
    async with org_api.state.sessions() as session:
        own = await repo.health_checks(session, account.org_id, account.id, None, 10)
        foreign = await repo.health_checks(session, other_org, account.id, None, 10)
    assert [c.outcome for c in own] == ["healthy"]
    assert foreign == []
