"""The daily call budget as numbers: limits, use, reserves, and how much work may start now.

Pure functions of what the counters, eBay and the settings say, so the scheduler (which plans
with them) and the API (which shows them) cannot disagree, and every boundary is testable
without a clock.

- **Limits**: eBay's (Developer Analytics ``getRateLimits``) when fresh and allowed, else the
  settings (eBay's documented defaults).
- **User reserve**: a share of every budget the scheduler never spends, for what people ask
  for (connect, reconnect, "Refresh now", "Check now").
- **Refreshes** are never paced: they keep tokens alive. They may spend the refresh grant's
  budget up to its user reserve.
- **Health checks** are paced over the UTC day: by a time ``t``, at most the share ``t/24h`` of
  what Trading's budget allows (minus the user reserve) has been spent, so checks continue all
  day instead of stopping at noon. Work in flight counts as spent. Health checks also stop
  while the refresh grant's budget is down to the refresh reserve (a check may refresh a
  rejected token): refreshes always keep their share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from connector_common.budget.buckets import BUCKETS, REFRESH_GRANT, TRADING
from connector_common.budget.repository import Reported
from connector_common.platform_settings import BudgetSettings

DAY = timedelta(days=1)
DAY_SECONDS = DAY.total_seconds()
# A limit eBay reported is trusted this long; then the settings apply until the next reading.
REPORTED_FRESH = timedelta(hours=26)

State = Literal["open", "paced", "deferred"]


def day_of(now: datetime) -> date:
    """The UTC day ``now`` belongs to (the budget's day)."""
    return now.astimezone(UTC).date()


def day_start(day: date) -> datetime:
    """00:00 UTC of ``day``."""
    return datetime.combine(day, time.min, UTC)


def next_day_start(now: datetime) -> datetime:
    """When the next UTC day (and budget) begins."""
    return day_start(day_of(now)) + DAY


@dataclass(frozen=True)
class Figures:
    """One bucket today."""

    bucket: str
    limit: int
    source: Literal["ebay", "settings"]
    used: int
    user_reserve: int

    @property
    def remaining(self) -> int:
        """Calls left today (people may use the reserve)."""
        return max(0, self.limit - self.used)

    @property
    def scheduled_limit(self) -> int:
        """What the scheduler's work may spend today: the limit minus the user reserve."""
        return max(0, self.limit - self.user_reserve)


def figures(
    settings: BudgetSettings,
    reported: Mapping[str, Reported],
    usage: Mapping[str, int],
    now: datetime,
) -> dict[str, Figures]:
    """Every bucket's limit (eBay's when fresh, else configured), use and user reserve."""
    result: dict[str, Figures] = {}
    for bucket in sorted(set(BUCKETS) | set(usage)):
        configured = settings.configured_limit(bucket)
        found = reported.get(bucket)
        source: Literal["ebay", "settings"] = "settings"
        if (
            settings.use_ebay_limits
            and found is not None
            and now - found.fetched_at <= REPORTED_FRESH
        ):
            limit, source = found.daily_limit, "ebay"
        elif configured is not None:
            limit = configured
        else:
            continue  # a bucket we count but have no limit for (shown by the API as used)
        reserve = math.ceil(limit * settings.user_reserve_percent / 100)
        result[bucket] = Figures(bucket, limit, source, int(usage.get(bucket, 0)), reserve)
    return result


def elapsed_share(now: datetime, lookahead_seconds: float = 0.0) -> float:
    """How much of the UTC day has passed (0..1), looking ``lookahead_seconds`` ahead."""
    elapsed = (now - day_start(day_of(now))).total_seconds() + lookahead_seconds
    return min(1.0, max(0.0, elapsed / DAY_SECONDS))


def paced_target(
    total: int, now: datetime, lookahead_seconds: float, burst_percent: float = 0.0
) -> int:
    """How much of ``total`` may be spent by ``now`` (plus one tick ahead), plus a small burst
    so the first minutes of a day are not starved."""
    burst = math.ceil(total * burst_percent / 100)
    return min(total, math.floor(total * elapsed_share(now, lookahead_seconds)) + burst)


def refresh_reserve(
    settings: BudgetSettings, refresh: Figures, used_yesterday: int, now: datetime
) -> int:
    """What health checks must leave to refreshes: a share of the grant's budget, and at least
    what scheduled refreshes are projected to need for the rest of the day (from today's and
    yesterday's refresh rates, whichever is higher)."""
    floor_share = math.ceil(refresh.scheduled_limit * settings.refresh_reserve_percent / 100)
    elapsed = elapsed_share(now) * DAY_SECONDS
    rate_today = refresh.used / elapsed if elapsed >= 60 else 0.0
    rate = max(rate_today, used_yesterday / DAY_SECONDS)
    projected = math.ceil(rate * (DAY_SECONDS - elapsed))
    return max(floor_share, projected)


@dataclass(frozen=True)
class RefreshPlan:
    """How many refreshes may start now."""

    cap: int | None  # None: no limit
    exhausted: bool  # the refresh grant's budget for scheduled work is gone today
    figures: Figures | None


@dataclass(frozen=True)
class HealthPlan:
    """How many health checks may start now, and why not more."""

    cap: int | None  # None: no limit
    state: State  # deferred: gone for today; paced: more later today; open: not binding
    reason: str | None
    bucket: str | None  # the budget that holds checks back
    target: int | None  # spent + in flight allowed by now (paced)
    figures: Figures | None


def plan_refresh(
    settings: BudgetSettings, found: Mapping[str, Figures], in_flight: int
) -> RefreshPlan:
    """Refreshes: everything up to the user reserve of the refresh grant."""
    refresh = found.get(REFRESH_GRANT)
    if not settings.enabled or refresh is None:
        return RefreshPlan(None, False, refresh)
    left = refresh.scheduled_limit - refresh.used - in_flight
    return RefreshPlan(max(0, left), left <= 0, refresh)


def plan_health(
    settings: BudgetSettings,
    found: Mapping[str, Figures],
    *,
    now: datetime,
    in_flight_health: int,
    in_flight_refresh: int,
    refresh_used_yesterday: int,
    lookahead_seconds: float,
) -> HealthPlan:
    """Health checks: paced over the day within Trading's budget, refreshes' share kept."""
    trading = found.get(TRADING)
    if not settings.enabled or trading is None:
        return HealthPlan(None, "open", None, None, None, trading)
    refresh = found.get(REFRESH_GRANT)
    if refresh is not None:
        reserve = refresh_reserve(settings, refresh, refresh_used_yesterday, now)
        if refresh.scheduled_limit - refresh.used - in_flight_refresh <= reserve:
            reason = "the refresh grant's budget is down to what refreshes need"
            return HealthPlan(0, "deferred", reason, REFRESH_GRANT, None, trading)
    spent = trading.used + in_flight_health
    if trading.scheduled_limit - spent <= 0:
        reason = "Trading's daily budget is used up"
        return HealthPlan(0, "deferred", reason, TRADING, None, trading)
    target = paced_target(
        trading.scheduled_limit, now, lookahead_seconds, settings.pace_burst_percent
    )
    cap = max(0, target - spent)
    return HealthPlan(cap, "open" if cap > 0 else "paced", None, TRADING, target, trading)
