"""The whole system as real processes: API, scheduler, token refresher, health checker, over
real NATS JetStream and PostgreSQL, against the sandbox."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import pytest
from nats.js import JetStreamContext
from sqlalchemy import select

from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import Organisation
from connector_common.events import parse_event
from connector_common.messaging import Topology
from tests.fixtures.pipeline import eventually, token_row
from tests.fixtures.sandbox import SandboxHandle
from tests.pipeline.conftest import Fleet, api_client

pytestmark = pytest.mark.slow

# 16-minute tokens refreshed when 955 s are left: a refresh every ~5 s, and between refreshes
# more than the 15 minutes that make a status "expiring_soon".
SHORT_LIFETIME = 960
LEAD = "955"
SELLERS = {
    "demo_us_seller": ("Chicago", "EBAY_US"),
    "demo_uk_seller": ("Warehouse-A", "EBAY_GB"),
    "demo_de_seller": ("Berlin", "EBAY_DE"),
}


async def org_uuid(sessions: SessionFactory, external_id: str) -> uuid.UUID:
    async with unit_of_work(sessions) as session:
        org_id = await session.scalar(
            select(Organisation.id).where(Organisation.external_id == external_id)
        )
        assert org_id is not None
        return org_id


async def event_types(
    js: JetStreamContext, topology: Topology, org_id: uuid.UUID
) -> list[dict[str, str]]:
    """Every event of the org on the EVENTS stream: type and account id, in order."""
    info = await js.stream_info(topology.events_stream)
    found = []
    for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
        msg = await js.get_msg(topology.events_stream, seq)
        if msg.subject and msg.subject.startswith(f"{topology.namespace}.events.{org_id}."):
            event = parse_event(msg.data or b"")
            found.append({"type": event.type, "account_id": str(event.account_id)})
    return found


async def test_connected_sellers_are_refreshed_before_expiry_and_read_healthy(
    fleet: Fleet,
    sandbox: SandboxHandle,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
) -> None:
    sandbox.settings(access_token_lifetime=SHORT_LIFETIME)
    workers = [
        fleet.start("scheduler", CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS=LEAD),
        fleet.start("token-refresher", CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS=LEAD),
        fleet.start("health-checker"),
    ]
    async with api_client(fleet, sandbox, "org-e2e") as api:
        await fleet.ready(*workers)
        connected = {
            seller: await api.connect(sandbox, seller, house)
            for seller, (house, _m) in SELLERS.items()
        }
        assert {a["marketplace_id"] for a in connected.values()} == {
            m for _h, m in SELLERS.values()
        }
        first_expiry: dict[str, datetime] = {}
        for seller, account in connected.items():
            token = await token_row(sessions, uuid.UUID(account["id"]))
            assert token.access_expires_at is not None
            first_expiry[seller] = token.access_expires_at
        since = time.time()

        async def all_refreshed_twice() -> bool:
            versions = [
                (await token_row(sessions, uuid.UUID(a["id"]))).version for a in connected.values()
            ]
            return min(versions) >= 3  # connect wrote 1; two refreshes nobody asked for

        await eventually(all_refreshed_twice, timeout=45, what="two refreshes per account")

        async def all_healthy() -> bool:
            return {a["status"] for a in await api.accounts()} == {"healthy"}

        await eventually(all_healthy, timeout=20, what="every status healthy in the API")
        for seller, account in connected.items():
            refreshes = sandbox.calls(seller=seller, route="token", since=since)
            assert refreshes, seller
            assert all(c["status"] == 200 for c in refreshes)
            # The first refresh came while the token from the connect flow was still valid.
            assert refreshes[0]["at"] < first_expiry[seller].timestamp()
            listed = await api.account_by_house(account["house_name"])
            assert listed["last_health"]["outcome"] == "healthy"
    org_id = await org_uuid(sessions, "org-e2e")

    async def events_arrived() -> bool:
        seen = await event_types(js, topology, org_id)
        return all(
            {"account.connected", "token.refreshed", "health.checked", "health.changed"}
            <= {e["type"] for e in seen if e["account_id"] == a["id"]}
            for a in connected.values()
        )

    await eventually(events_arrived, timeout=15, what="the events on NATS")


async def test_a_revoked_seller_needs_reconnecting_once_and_reconnecting_restores_it(
    fleet: Fleet,
    sandbox: SandboxHandle,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
) -> None:
    sandbox.settings(access_token_lifetime=SHORT_LIFETIME)
    workers = [
        fleet.start("scheduler", CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS=LEAD),
        fleet.start("token-refresher", CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS=LEAD),
        fleet.start("health-checker"),
    ]
    async with api_client(fleet, sandbox, "org-revoke") as api:
        await fleet.ready(*workers)
        revoked = await api.connect(sandbox, "demo_uk_seller", "Warehouse-A")
        other = await api.connect(sandbox, "demo_au_seller", "Sydney")
        revoked_id, other_id = uuid.UUID(revoked["id"]), uuid.UUID(other["id"])
        sandbox.revoke("demo_uk_seller")

        async def needs_reconnecting() -> bool:
            account = await api.account_by_house("Warehouse-A")
            return bool(account["status"] == "reconnect_required")

        await eventually(needs_reconnecting, timeout=20, what="reconnect_required in the API")
        calls = sandbox.calls(seller="demo_uk_seller")
        last_call = calls[-1]
        assert (last_call["route"], last_call["outcome"]) == ("token", "invalid_grant")
        # Meanwhile the other seller goes on: two more refreshes, and not one call for the
        # revoked seller after its invalid_grant.
        version = (await token_row(sessions, other_id)).version

        async def other_refreshed() -> bool:
            return (await token_row(sessions, other_id)).version >= version + 2

        await eventually(other_refreshed, timeout=30, what="the other seller refreshed")
        assert sandbox.calls(seller="demo_uk_seller", since=last_call["at"] + 0.001) == []
        assert (await api.account_by_house("Sydney"))["status"] == "healthy"

        await api.reconnect(sandbox, "demo_uk_seller", revoked["id"])
        since = time.time()

        async def restored() -> bool:
            account = await api.account_by_house("Warehouse-A")
            token = await token_row(sessions, revoked_id)
            return (
                account["status"] == "healthy"
                and token.last_refreshed_at is not None
                and (token.last_refreshed_at.timestamp() > since)
            )

        await eventually(restored, timeout=30, what="reconnected, refreshed and healthy")
        assert [
            c["status"] for c in sandbox.calls(seller="demo_uk_seller", route="token", since=since)
        ]
    org_id = await org_uuid(sessions, "org-revoke")
    events = [
        e["type"]
        for e in await event_types(js, topology, org_id)
        if e["account_id"] == revoked["id"]
    ]
    assert events.count("account.reconnect_required") == 1
    assert "account.reconnected" in events
