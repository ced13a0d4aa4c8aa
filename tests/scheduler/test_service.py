"""Scheduler ticks against real PostgreSQL and real JetStream."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from nats.js import JetStreamContext
from sqlalchemy import select, update

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import EbayAccount, EbayToken, Lease
from connector_common.events import utcnow
from connector_common.messaging import Topology
from connector_common.settings import parse_key_ring
from connector_scheduler.service import TickReport
from tests.fixtures.factories import make_account, make_org, make_token
from tests.scheduler.conftest import MakeScheduler, work_messages


def cipher(token_keys: str) -> TokenCipher:
    return TokenCipher(parse_key_ring(token_keys))


async def seed_refresh_states(sessions: SessionFactory, token_keys: str) -> dict[str, uuid.UUID]:
    """One account per state the due-refresh query must tell apart."""
    c = cipher(token_keys)
    now = utcnow()
    ids: dict[str, uuid.UUID] = {}
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        states = {
            "due": {"expires_in": timedelta(minutes=5)},
            "expired": {"expires_in": timedelta(minutes=-5)},
            "fresh": {"expires_in": timedelta(hours=2)},
            "backing_off": {
                "expires_in": timedelta(minutes=5),
                "retry_at": now + timedelta(minutes=1),
            },
            "requested": {
                "expires_in": timedelta(minutes=5),
                "refresh_requested_at": now - timedelta(seconds=30),
            },
            "requested_long_ago": {
                "expires_in": timedelta(minutes=5),
                "refresh_requested_at": now - timedelta(minutes=30),
            },
            "reconnect_required": {
                "expires_in": timedelta(minutes=5),
                "refresh_enabled": False,
                "reconnect_required_at": now,
            },
        }
        for name, fields in states.items():
            account = await make_account(session, org, house_name=name, next_health_check_at=None)
            await make_token(session, account, c, **fields)  # type: ignore[arg-type]
            ids[name] = account.id
        inactive = await make_account(
            session, org, house_name="inactive", is_active=False, deactivated_at=now
        )
        await make_token(
            session, inactive, c, expires_in=timedelta(minutes=5), refresh_enabled=False
        )
        ids["deactivated"] = inactive.id
    return ids


async def test_tick_publishes_one_refresh_per_due_account_and_skips_the_rest(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    ids = await seed_refresh_states(sessions, token_keys)
    report = await make_scheduler().tick()

    published = {
        uuid.UUID(str(m["account_id"])) for m in await work_messages(js, topology, "refresh")
    }
    assert published == {ids["due"], ids["expired"], ids["requested_long_ago"]}
    assert report.leader
    assert report.by_kind["refresh"] == 3
    # Due: the three published plus "backing_off" and "requested", which are skipped.
    assert report.due_refresh == 5
    assert report.skipped == 2


async def test_refresh_message_carries_token_version_and_dedup_id(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        account = await make_account(session, org, next_health_check_at=None)
        await make_token(
            session, account, cipher(token_keys), expires_in=timedelta(minutes=1), version=7
        )
    await make_scheduler().tick()
    [message] = await work_messages(js, topology, "refresh")
    assert message["token_version"] == 7
    assert message["org_id"] == str(org.id)
    headers = message["_headers"]
    assert isinstance(headers, dict)
    assert headers["Nats-Msg-Id"] == f"refresh:{account.id}:7"
    assert set(message) == {
        "command_id",
        "requested_at",
        "version",
        "account_id",
        "org_id",
        "reason",
        "token_version",
        "_headers",
    }  # ids only, never a token


async def test_repeated_tick_does_not_publish_the_same_work_again(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    await seed_refresh_states(sessions, token_keys)
    scheduler = make_scheduler()
    first = await scheduler.tick()
    second = await scheduler.tick()
    assert first.published == 3
    assert second.published == 0
    assert second.skipped == second.due_refresh
    assert len(await work_messages(js, topology, "refresh")) == 3


async def test_only_the_lease_holder_publishes(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    await seed_refresh_states(sessions, token_keys)
    leader, follower = make_scheduler("a"), make_scheduler("b")
    assert (await leader.tick()).leader
    report = await follower.tick()
    assert not report.leader
    assert report.published == 0
    async with unit_of_work(sessions) as session:
        lease = await session.get(Lease, "scheduler")
        assert lease is not None
        assert lease.holder == "a"


async def test_leadership_passes_on_when_the_leader_resigns_with_a_new_epoch(
    make_scheduler: MakeScheduler,
) -> None:
    leader, follower = make_scheduler("a"), make_scheduler("b")
    first = await leader.tick()
    assert first.leader
    assert (await leader.tick()).epoch == first.epoch  # renewal keeps the epoch
    await leader.resign()
    taken = await follower.tick()
    assert taken.leader
    assert taken.epoch == (first.epoch or 0) + 1


async def test_leadership_passes_on_when_the_lease_expires(
    make_scheduler: MakeScheduler, sessions: SessionFactory
) -> None:
    leader, follower = make_scheduler("a"), make_scheduler("b")
    assert (await leader.tick()).leader
    async with unit_of_work(sessions) as session:
        await session.execute(update(Lease).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert (await follower.tick()).leader
    assert not (await leader.tick()).leader


async def test_two_leaders_at_once_never_publish_duplicate_work(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    c = cipher(token_keys)
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        for n in range(60):
            account = await make_account(
                session, org, house_name=f"h{n}", next_health_check_at=utcnow()
            )
            await make_token(session, account, c, expires_in=timedelta(minutes=1))
    # Both act as leader (as after a lease expired under a paused process): the row locks,
    # the requested guard and the message ids must still keep the work single.
    a = make_scheduler("a", scheduler_batch_size=7)
    b = make_scheduler("b", scheduler_batch_size=7)
    reports = await asyncio.gather(
        *(s._publish_due(r) for s, r in ((a, TickReport()), (b, TickReport())))
    )
    del reports
    refresh = await work_messages(js, topology, "refresh")
    health = await work_messages(js, topology, "health")
    assert len(refresh) == len({m["account_id"] for m in refresh}) == 60
    assert len(health) == len({m["account_id"] for m in health}) == 60


async def test_work_that_jetstream_did_not_confirm_stays_due(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    c = cipher(token_keys)
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        account = await make_account(session, org, next_health_check_at=None)
        await make_token(session, account, c, expires_in=timedelta(minutes=1))
    await js.delete_stream(topology.work_stream)  # publishes now get no acknowledgement
    scheduler = make_scheduler()
    scheduler.publish_timeout = 0.5
    report = await scheduler.tick()
    assert report.failed == 1
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.id)
        assert token is not None
        assert token.refresh_requested_at is None


async def test_a_tick_stops_publishing_when_jetstream_refuses_instead_of_retrying_the_same_rows(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
) -> None:
    c = cipher(token_keys)
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        for name in ("a", "b", "c"):
            account = await make_account(
                session, org, house_name=name, next_health_check_at=utcnow() - timedelta(minutes=1)
            )
            await make_token(session, account, c, expires_in=timedelta(minutes=1))
    await js.delete_stream(topology.work_stream)  # every publish is refused at once
    # Batches of 2 and a budget of 200: the unpublished rows are due again in the next batch.
    scheduler = make_scheduler(scheduler_batch_size=2, scheduler_max_per_tick=200)
    report = await scheduler.tick()
    # One failed batch of each kind, then the tick ends; the rest waits for the next tick.
    assert report.failed == 4
    assert report.published == 0


async def test_health_checks_are_published_for_due_active_accounts_with_the_slot(
    make_scheduler: MakeScheduler,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
) -> None:
    now = utcnow()
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        due = await make_account(session, org, house_name="due", next_health_check_at=now)
        await make_account(
            session, org, house_name="later", next_health_check_at=now + timedelta(minutes=5)
        )
        await make_account(session, org, house_name="unscheduled", next_health_check_at=None)
        await make_account(
            session,
            org,
            house_name="requested",
            next_health_check_at=now,
            health_requested_at=now - timedelta(seconds=10),
        )
    report = await make_scheduler(health_interval_seconds=900).tick()
    [message] = await work_messages(js, topology, "health")
    assert message["account_id"] == str(due.id)
    slot = int(utcnow().timestamp() // 900)
    assert message["slot"] in (slot, slot - 1)
    headers = message["_headers"]
    assert isinstance(headers, dict)
    assert headers["Nats-Msg-Id"] == f"health:{due.id}:{message['slot']}"
    assert report.due_health == 2
    async with unit_of_work(sessions) as session:
        requested = await session.scalar(
            select(EbayAccount.health_requested_at).where(EbayAccount.id == due.id)
        )
        assert requested is not None


async def test_work_lag_is_the_age_of_the_oldest_due_account(
    make_scheduler: MakeScheduler, sessions: SessionFactory, token_keys: str
) -> None:
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        account = await make_account(
            session, org, next_health_check_at=utcnow() - timedelta(seconds=120)
        )
        # Due since 5 minutes: expires in 5 minutes with a 10-minute lead.
        await make_token(session, account, cipher(token_keys), expires_in=timedelta(minutes=5))
    report = await make_scheduler(refresh_lead_seconds=600).tick()
    assert 295 <= report.refresh_lag_seconds <= 320
    assert 115 <= report.health_lag_seconds <= 140
