"""Refresh tokens near their end: one account.reconsent_due per account and refresh token (not
per tick); a refresh token that ended makes the account reconnect_required without eBay."""

from __future__ import annotations

import uuid
from datetime import timedelta

from nats.js import JetStreamContext
from sqlalchemy import select

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import EbayAccount, EbayToken, OutboxMessage
from connector_common.events import AccountReconsentDue, ReconnectRequired, parse_event, utcnow
from connector_common.messaging import Topology
from connector_common.settings import parse_key_ring
from connector_scheduler.reconsent import ReconsentSweep
from connector_scheduler.service import Scheduler
from tests.fixtures.factories import make_account, make_org, make_token
from tests.scheduler.conftest import MakeScheduler, work_messages

WINDOW = timedelta(days=30)


def with_sweep(scheduler: Scheduler, sessions: SessionFactory) -> Scheduler:
    scheduler.sweep = ReconsentSweep(sessions, scheduler.namespace, WINDOW)
    return scheduler


async def seed(sessions: SessionFactory, token_keys: str) -> dict[str, uuid.UUID]:
    cipher = TokenCipher(parse_key_ring(token_keys))
    now = utcnow()
    cases = {
        "in-10-days": {"refresh_expires_in": timedelta(days=10)},
        "in-29-days": {"refresh_expires_in": timedelta(days=29, hours=23)},
        "in-31-days": {"refresh_expires_in": timedelta(days=31)},
        # Its access token is due for a refresh too: it must not be refreshed.
        "ended": {
            "refresh_expires_in": timedelta(seconds=-1),
            "expires_in": timedelta(minutes=2),
        },
        "already-reconnect": {
            "refresh_expires_in": timedelta(days=3),
            "reconnect_required_at": now,
            "refresh_enabled": False,
        },
    }
    ids = {}
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        for name, fields in cases.items():
            account = await make_account(
                session, org, house_name=name, next_health_check_at=now - timedelta(seconds=1)
            )
            await make_token(session, account, cipher, **fields)  # type: ignore[arg-type]
            ids[name] = account.id
        off = await make_account(
            session, org, house_name="off", is_active=False, deactivated_at=now
        )
        await make_token(session, off, cipher, refresh_expires_in=timedelta(days=5))
        ids["off"] = off.id
    return ids


async def events(sessions: SessionFactory, kind: str) -> list[tuple[uuid.UUID, object]]:
    async with unit_of_work(sessions) as session:
        payloads = await session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.subject.endswith(kind))
        )
        parsed = [parse_event(p.encode()) for p in payloads]
    return [(e.account_id, e) for e in parsed]


async def test_reconsent_due_is_announced_once_per_refresh_token(
    make_scheduler: MakeScheduler, sessions: SessionFactory, token_keys: str
) -> None:
    ids = await seed(sessions, token_keys)
    scheduler = with_sweep(make_scheduler(), sessions)
    for _ in range(3):
        await scheduler.tick()
    due = await events(sessions, "account.reconsent_due")
    assert sorted(account for account, _ in due) == sorted([ids["in-10-days"], ids["in-29-days"]])
    by_account = dict(due)
    ten = by_account[ids["in-10-days"]]
    assert isinstance(ten, AccountReconsentDue)
    assert ten.days_left == 9  # 9 days and some hours
    # A new consent gives a new refresh token (a new end): when it nears, one more event.
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, ids["in-10-days"])
        assert token is not None
        token.refresh_expires_at = utcnow() + timedelta(days=20)
    await scheduler.tick()
    await scheduler.tick()
    assert [a for a, _ in await events(sessions, "account.reconsent_due")].count(
        ids["in-10-days"]
    ) == 2


async def test_an_ended_refresh_token_is_reconnect_required_at_once_without_ebay(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    ids = await seed(sessions, token_keys)
    scheduler = with_sweep(make_scheduler(), sessions)
    await scheduler.tick()
    await scheduler.tick()
    # No work for it: neither a refresh (its access token is due) nor a health check.
    refreshed = {m["account_id"] for m in await work_messages(js, topology, "refresh")}
    checked = {m["account_id"] for m in await work_messages(js, topology, "health")}
    assert str(ids["ended"]) not in refreshed | checked
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, ids["ended"])
        account = await session.get(EbayAccount, ids["ended"])
    assert token is not None
    assert account is not None
    assert token.reconnect_required_at is not None
    assert token.refresh_enabled is False
    assert account.next_health_check_at is None
    [(account_id, event)] = await events(sessions, "account.reconnect_required")
    assert account_id == ids["ended"]
    assert isinstance(event, ReconnectRequired)
    assert "refresh token has expired" in event.reason
