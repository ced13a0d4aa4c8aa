"""The scheduler within eBay's daily budget: health checks paced over the UTC day, never past
the budget, refreshes unaffected, one deferral event per day; eBay's own limits preferred."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

from nats.js import JetStreamContext
from sqlalchemy import func, insert, select

from connector_common.budget import repository as budget_repo
from connector_common.budget.analytics import LimitsReader
from connector_common.budget.buckets import REFRESH_GRANT, TRADING
from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import (
    BudgetDeferral,
    CallCount,
    EbayAccount,
    EbayToken,
    Organisation,
    OutboxMessage,
)
from connector_common.ebay import EbayClient
from connector_common.events import BudgetExhausted, parse_app_event, utcnow
from connector_common.messaging import Topology
from connector_common.platform_settings import BudgetSettings
from connector_common.settings import parse_key_ring
from connector_scheduler.budget import BudgetPacer
from connector_scheduler.service import Scheduler
from tests.scheduler.conftest import MakeScheduler, work_messages

TICK = 5.0
ACCOUNTS = 1000
REFRESHING = 20


class Clock:
    """Times of today's UTC date, set by the test."""

    def __init__(self) -> None:
        self.day = utcnow().date()
        self.now = datetime.combine(self.day, time.min, UTC)

    def at(self, hours: float) -> Clock:
        self.now = datetime.combine(self.day, time.min, UTC) + timedelta(hours=hours)
        return self

    def __call__(self) -> datetime:
        return self.now


def budget(**values: object) -> BudgetSettings:
    return BudgetSettings(
        **{
            "trading": 100,
            "user_reserve_percent": 0,
            "pace_burst_percent": 0,
            "use_ebay_limits": False,
            **values,
        }
    )


def with_pacer(
    scheduler: Scheduler,
    sessions: SessionFactory,
    settings: BudgetSettings,
    clock: Callable[[], datetime] | None,
) -> Scheduler:
    scheduler.pacer = BudgetPacer(
        sessions=sessions,
        settings=settings,
        namespace=scheduler.namespace,
        tick_seconds=TICK,
        requeue_seconds=scheduler.settings.requeue_seconds,
        refresh_lead_seconds=scheduler.settings.refresh_lead_seconds,
        clock=clock,
    )
    return scheduler


async def seed(sessions: SessionFactory, token_keys: str) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """1,000 accounts due for a health check, and 20 more whose tokens are due for a refresh."""
    cipher = TokenCipher(parse_key_ring(token_keys))
    now = utcnow()
    checking: set[uuid.UUID] = set()
    refreshing: set[uuid.UUID] = set()
    async with unit_of_work(sessions) as session:
        org = Organisation(external_id=f"org-{uuid.uuid4().hex[:8]}", name="budget")
        session.add(org)
        await session.flush()
        accounts, tokens = [], []
        for n in range(ACCOUNTS + REFRESHING):
            account_id = uuid.uuid4()
            due_check = n < ACCOUNTS
            (checking if due_check else refreshing).add(account_id)
            accounts.append(
                {
                    "id": account_id,
                    "org_id": org.id,
                    "house_name": f"house-{n:05d}",
                    "ebay_user_id": f"user-{n}",
                    "marketplace_id": "EBAY_US",
                    "site_id": 0,
                    "site_code": "US",
                    "connected_at": now,
                    "next_health_check_at": now - timedelta(seconds=ACCOUNTS - n)
                    if due_check
                    else None,
                }
            )
            tokens.append(
                {
                    "account_id": account_id,
                    "access_token_ct": cipher.encrypt("v^1.1#a", account_id, "access_token"),
                    "refresh_token_ct": cipher.encrypt("v^1.1#r", account_id, "refresh_token"),
                    "key_id": cipher.primary_key_id,
                    "access_expires_at": now
                    + (timedelta(hours=2) if due_check else timedelta(minutes=5)),
                    "refresh_expires_at": now + timedelta(days=500),
                }
            )
        await session.execute(insert(EbayAccount), accounts)
        await session.execute(insert(EbayToken), tokens)
    return checking, refreshing


async def published(js: JetStreamContext, topology: Topology, kind: str) -> set[uuid.UUID]:
    return {uuid.UUID(str(m["account_id"])) for m in await work_messages(js, topology, kind)}


async def deferral_events(sessions: SessionFactory) -> list[BudgetExhausted]:
    async with unit_of_work(sessions) as session:
        rows = await session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.subject.endswith("budget.exhausted"))
        )
        found = []
        for payload in rows:
            event = parse_app_event(payload.encode())
            assert isinstance(event, BudgetExhausted)
            found.append(event)
        return found


async def test_a_day_of_100_checks_for_1000_accounts_is_spread_over_the_day(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    checking, refreshing = await seed(sessions, token_keys)
    clock = Clock()
    scheduler = with_pacer(make_scheduler(), sessions, budget(), clock)
    issued_by_hour = {}
    for hours in (0.0, 3.0, 6.0, 12.0, 18.0, 23.99):
        clock.at(hours)
        await scheduler.tick()
        issued_by_hour[hours] = len(await published(js, topology, "health"))
        # Refreshes are not held back by the health checks' budget.
        assert await published(js, topology, "refresh") == refreshing
    # At most the share of the day's budget that has passed (plus one tick ahead), and all of
    # it by the end of the day: spread over the day, not spent by noon.
    assert issued_by_hour == {0.0: 0, 3.0: 12, 6.0: 25, 12.0: 50, 18.0: 75, 23.99: 99}
    clock.at(23.9999)
    await scheduler.tick()
    checked = await published(js, topology, "health")
    assert len(checked) == 100
    assert checked <= checking  # the longest-waiting accounts first


async def test_a_used_up_budget_defers_checks_to_the_next_day_with_one_event(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    await seed(sessions, token_keys)
    clock = Clock().at(15)
    async with unit_of_work(sessions) as session:
        session.add(CallCount(day=clock.day, bucket=TRADING, calls=100))
    scheduler = with_pacer(make_scheduler(), sessions, budget(), clock)
    for _ in range(3):
        report = await scheduler.tick()
        assert report.by_kind.get("health", 0) == 0
    [event] = await deferral_events(sessions)
    assert (event.work, event.bucket, event.daily_limit, event.used) == (
        "health",
        TRADING,
        100,
        100,
    )
    assert event.deferred_until == datetime.combine(clock.day + timedelta(days=1), time.min, UTC)
    async with unit_of_work(sessions) as session:
        rows = await session.scalar(select(func.count()).select_from(BudgetDeferral))
    assert rows == 1
    # A second scheduler (another replica, later leader) does not announce it again.
    other = with_pacer(make_scheduler("scheduler-b"), sessions, budget(), clock)
    await scheduler.resign()
    await other.tick()
    assert len(await deferral_events(sessions)) == 1
    assert len(await published(js, topology, "refresh")) == REFRESHING


async def test_refreshes_stop_at_their_user_reserve_and_say_so_once(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    await seed(sessions, token_keys)
    clock = Clock().at(10)
    settings = budget(refresh_token=1000, user_reserve_percent=1)  # 990 schedulable
    async with unit_of_work(sessions) as session:
        session.add(CallCount(day=clock.day, bucket=REFRESH_GRANT, calls=985))
    scheduler = with_pacer(make_scheduler(), sessions, settings, clock)
    await scheduler.tick()
    await scheduler.tick()
    assert len(await published(js, topology, "refresh")) == 5
    works = sorted(e.work for e in await deferral_events(sessions))
    # Refreshes ran out, and health checks wait too: the refresh grant is at its reserve.
    assert works == ["health", "refresh"]


async def test_ebays_own_limit_is_preferred_to_the_setting(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
    ebay_client: EbayClient,
) -> None:
    await seed(sessions, token_keys)
    clock = Clock().at(12)
    settings = budget(use_ebay_limits=True)  # 100 configured; the sandbox's app has 5,000
    scheduler = with_pacer(make_scheduler(), sessions, settings, clock)
    await scheduler.tick()
    # Until eBay's limit is known, the setting holds: 50 by noon.
    assert len(await published(js, topology, "health")) == 50

    # A health checker reads eBay's limits (the scheduler holds no client secret to do it).
    reader = LimitsReader(ebay_client, sessions, interval=3600)
    assert await reader.maybe_read() is not None
    async with unit_of_work(sessions) as session:
        assert (await budget_repo.reported_limits(session))[TRADING].daily_limit == 5000
    await scheduler.tick()
    # Half of eBay's 5,000 by noon: more than the 1,000 due accounts.
    assert len(await published(js, topology, "health")) == ACCOUNTS
