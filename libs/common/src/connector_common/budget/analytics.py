"""Reading eBay's real daily limits from Developer Analytics ``getRateLimits``.

eBay may grant an application a higher tier than its documented defaults; ``getRateLimits``
(application token, scope ``api_scope``) says what this app actually has. When the app token
cannot be had or the call is refused, the configured limits stay in force and the reading is
tried again later: one log line per failure streak, not one per attempt.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from connector_common.budget import repository
from connector_common.budget.buckets import bucket_for_analytics
from connector_common.budget.repository import Reported
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.ebay.client import EbayClient
from connector_common.ebay.errors import EbayError
from connector_common.ebay.models import RateLimitApi
from connector_common.events import utcnow
from connector_common.logs import get_logger

log = get_logger(__name__)

DAILY_WINDOW = 86_400


def daily_limits(apis: Iterable[RateLimitApi], fetched_at: datetime) -> list[Reported]:
    """The daily limit per bucket (the smallest daily rate of the API's resources)."""
    found: dict[str, Reported] = {}
    for api in apis:
        bucket = bucket_for_analytics(api.api_context, api.api_name)
        if bucket is None:
            continue
        for resource in api.resources:
            for rate in resource.rates:
                if rate.limit is None or rate.time_window_seconds != DAILY_WINDOW:
                    continue
                known = found.get(bucket)
                if known is None or rate.limit < known.daily_limit:
                    found[bucket] = Reported(
                        bucket, rate.limit, rate.count, rate.remaining, rate.reset, fetched_at
                    )
    return [found[bucket] for bucket in sorted(found)]


class LimitsReader:
    """Reads ``getRateLimits`` at most every ``interval`` and stores what eBay said."""

    def __init__(self, client: EbayClient, sessions: SessionFactory, interval: float) -> None:
        self._client = client
        self._sessions = sessions
        self._interval = timedelta(seconds=interval)
        self._next_at: datetime | None = None
        self._failing = False

    async def maybe_read(self, now: datetime | None = None) -> list[Reported] | None:
        """Read when due; returns what was stored, or None (not due, or it failed)."""
        now = now or utcnow()
        if self._next_at is not None and now < self._next_at:
            return None
        self._next_at = now + self._interval
        try:
            limits = await self._client.app_rate_limits()
        except EbayError as exc:
            if not self._failing:
                log.warning(
                    "eBay's rate limits cannot be read; the configured limits apply",
                    error_kind=exc.kind,
                    error_code=exc.error_code,
                    http_status=exc.http_status,
                    retry_in_s=self._interval.total_seconds(),
                )
            self._failing = True
            return None
        reported = daily_limits(limits.apis, now)
        async with unit_of_work(self._sessions) as session:
            await repository.store_reported(session, reported)
        if self._failing or not reported:
            log.info(
                "eBay's rate limits read",
                buckets={r.bucket: r.daily_limit for r in reported} or None,
            )
        self._failing = False
        return reported
