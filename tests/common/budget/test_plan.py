"""The budget's arithmetic: limits (eBay's or configured), reserves, pacing over the UTC day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connector_common.budget.buckets import (
    APP_GRANT,
    CODE_GRANT,
    IDENTITY,
    NOTIFICATION,
    REFRESH_GRANT,
    TRADING,
    bucket_for,
    bucket_for_analytics,
)
from connector_common.budget.plan import (
    Figures,
    elapsed_share,
    figures,
    next_day_start,
    paced_target,
    plan_health,
    plan_refresh,
    refresh_reserve,
)
from connector_common.budget.repository import Reported
from connector_common.platform_settings import BudgetSettings

MIDNIGHT = datetime(2026, 12, 1, tzinfo=UTC)
NOON = MIDNIGHT + timedelta(hours=12)


def settings(**values: object) -> BudgetSettings:
    return BudgetSettings(**{"user_reserve_percent": 0, "pace_burst_percent": 0, **values})


def test_calls_map_to_ebays_budgets() -> None:
    assert bucket_for("trading", "GetUser") == TRADING
    assert bucket_for("oauth", "refresh_token") == REFRESH_GRANT
    assert bucket_for("oauth", "client_credentials") == APP_GRANT
    assert bucket_for("oauth", "exchange_code") == CODE_GRANT
    assert bucket_for("notification", "getPublicKey") == NOTIFICATION
    assert bucket_for_analytics("tradingapi", "TradingAPI") == TRADING
    assert bucket_for_analytics("commerce", "Identity") == IDENTITY
    assert bucket_for_analytics("buy", "Browse") is None


def test_defaults_are_ebays_documented_limits() -> None:
    found = figures(BudgetSettings(), {}, {}, NOON)
    limits = {name: f.limit for name, f in found.items()}
    assert limits[TRADING] == 5_000
    assert limits[REFRESH_GRANT] == 50_000
    assert limits[APP_GRANT] == 1_000
    assert limits[CODE_GRANT] == 10_000
    assert limits[NOTIFICATION] == 10_000
    assert {f.source for f in found.values()} == {"settings"}
    assert found[TRADING].user_reserve == 250  # 5 % kept for people


def test_a_fresh_ebay_reading_wins_and_a_stale_one_does_not() -> None:
    fresh = Reported(TRADING, 15_000, 10, 14_990, None, NOON - timedelta(hours=1))
    stale = Reported(TRADING, 15_000, 10, 14_990, None, NOON - timedelta(hours=30))
    assert figures(settings(), {TRADING: fresh}, {}, NOON)[TRADING].limit == 15_000
    assert figures(settings(), {TRADING: fresh}, {}, NOON)[TRADING].source == "ebay"
    assert figures(settings(), {TRADING: stale}, {}, NOON)[TRADING].limit == 5_000
    off = settings(use_ebay_limits=False)
    assert figures(off, {TRADING: fresh}, {}, NOON)[TRADING].source == "settings"


@pytest.mark.parametrize(
    ("moment", "share"),
    [
        (MIDNIGHT, 0.0),
        (MIDNIGHT + timedelta(hours=6), 0.25),
        (NOON, 0.5),
        (MIDNIGHT + timedelta(hours=24) - timedelta(microseconds=1), 1.0),
    ],
)
def test_elapsed_share_of_the_utc_day(moment: datetime, share: float) -> None:
    assert elapsed_share(moment) == pytest.approx(share, abs=1e-6)


def test_the_day_is_utc_whatever_the_timezone_of_now() -> None:
    pacific = datetime(2026, 12, 1, 20, 0, tzinfo=UTC).astimezone(ZoneInfo("America/Los_Angeles"))
    assert next_day_start(pacific) == datetime(2026, 12, 2, tzinfo=UTC)


def test_pace_allows_the_share_of_the_day_plus_a_small_burst() -> None:
    assert paced_target(100, MIDNIGHT, 0) == 0
    assert paced_target(100, NOON, 0) == 50
    assert paced_target(100, NOON, 0, burst_percent=2) == 52
    assert paced_target(100, MIDNIGHT + timedelta(hours=23, minutes=59), 120) == 100
    assert paced_target(100, NOON, 0, burst_percent=90) == 100  # never above the total


def health(
    s: BudgetSettings, used: int, now: datetime, *, in_flight: int = 0, refresh_used: int = 0
) -> tuple[int | None, str]:
    found = figures(s, {}, {TRADING: used, REFRESH_GRANT: refresh_used}, now)
    plan = plan_health(
        s,
        found,
        now=now,
        in_flight_health=in_flight,
        in_flight_refresh=0,
        refresh_used_yesterday=0,
        lookahead_seconds=0,
    )
    return plan.cap, plan.state


def test_health_checks_are_paced_over_the_day() -> None:
    s = settings(trading=100)
    assert health(s, 0, MIDNIGHT + timedelta(hours=6)) == (25, "open")
    assert health(s, 25, MIDNIGHT + timedelta(hours=6)) == (0, "paced")
    assert health(s, 20, MIDNIGHT + timedelta(hours=6), in_flight=5) == (0, "paced")
    assert health(s, 25, NOON) == (25, "open")


def test_health_checks_stop_for_the_day_when_tradings_budget_is_used() -> None:
    s = settings(trading=100)
    assert health(s, 100, NOON) == (0, "deferred")
    assert health(s, 99, NOON, in_flight=1) == (0, "deferred")


def test_the_user_reserve_is_never_scheduled() -> None:
    s = settings(trading=100, user_reserve_percent=10)
    late = MIDNIGHT + timedelta(hours=23, minutes=59, seconds=59)
    assert health(s, 0, late)[0] == 89  # 90 schedulable, paced to 99.99 % of the day
    assert health(s, 90, late) == (0, "deferred")


def test_refreshes_keep_their_reserve_from_health_checks() -> None:
    s = settings(refresh_token=1000, refresh_reserve_percent=20)
    late = MIDNIGHT + timedelta(hours=23)  # the projection for the last hour is below 200
    # 790 refreshes used: 210 left, above the 200 reserved: checks go on.
    assert health(s, 0, late, refresh_used=790)[1] == "open"
    # 800 used: down to the reserve: health checks wait, refreshes do not.
    assert health(s, 0, late, refresh_used=800) == (0, "deferred")
    found = figures(s, {}, {REFRESH_GRANT: 800}, late)
    assert plan_refresh(s, found, in_flight=0).cap == 200
    # At noon, 790 refreshes by then project 790 more: health checks already wait.
    assert health(s, 0, NOON, refresh_used=790) == (0, "deferred")


def test_the_refresh_reserve_covers_the_projected_refreshes_of_the_rest_of_the_day() -> None:
    s = settings(refresh_token=100_000, refresh_reserve_percent=0)
    refresh = Figures(REFRESH_GRANT, 100_000, "settings", 30_000, 0)
    # 30,000 by noon: 30,000 more expected by midnight.
    assert refresh_reserve(s, refresh, 0, NOON) == 30_000
    # Yesterday's 80,000 a day is the higher rate: 40,000 for the second half.
    assert refresh_reserve(s, refresh, 80_000, NOON) == 40_000


def test_scheduled_refreshes_stop_at_the_user_reserve() -> None:
    s = settings(refresh_token=1000, user_reserve_percent=5)
    found = figures(s, {}, {REFRESH_GRANT: 900}, NOON)
    plan = plan_refresh(s, found, in_flight=40)
    assert (plan.cap, plan.exhausted) == (10, False)
    plan = plan_refresh(s, figures(s, {}, {REFRESH_GRANT: 950}, NOON), in_flight=0)
    assert (plan.cap, plan.exhausted) == (0, True)


def test_a_disabled_budget_caps_nothing() -> None:
    s = settings(enabled=False, trading=1)
    found = figures(s, {}, {TRADING: 50}, NOON)
    assert plan_refresh(s, found, 0).cap is None
    assert health(s, 50, NOON) == (None, "open")
