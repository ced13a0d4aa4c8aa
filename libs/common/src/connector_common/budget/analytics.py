"""Reading eBay's real daily limits from Developer Analytics ``getRateLimits``.

eBay may grant an application a higher tier than its documented defaults; ``getRateLimits``
(application token, scope ``api_scope``) says what this app actually has. When the app token
cannot be had or the call is refused, the configured limits stay in force and the reading is
tried again later: one log line per failure streak, not one per attempt.

The health checkers read it (:meth:`LimitsReader.run`); one replica of all wins each reading.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from connector_common.budget import repository
from connector_common.budget.buckets import bucket_for_analytics
from connector_common.budget.repository import Reported
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.ebay.client import EbayClient
from connector_common.ebay.errors import EbayError
from connector_common.ebay.models import RateLimitApi
from connector_common.events import utcnow
from connector_common.logs import Throttle, get_logger
from connector_common.redaction import redact_text

log = get_logger(__name__)

DAILY_WINDOW = 86_400
# A failed reading (eBay or the app token) is tried again this soon, not a whole interval later.
RETRY_AFTER_FAILURE = timedelta(minutes=5)


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


def quota_rows(apis: Iterable[RateLimitApi]) -> list[dict[str, Any]]:
    """Every quota eBay reported, per API resource, as stored for the rate-limit gauges."""
    return [
        {
            "api_context": api.api_context,
            "api_name": api.api_name,
            "resource": resource.name,
            "limit": rate.limit,
            "remaining": rate.remaining,
            "window_s": rate.time_window_seconds,
        }
        for api in apis
        for resource in api.resources
        for rate in resource.rates
    ]


class LimitsReader:
    """Reads ``getRateLimits`` once per ``interval`` across every replica and stores what eBay
    said: the daily limits the scheduler's budget prefers, and the per-resource quotas its
    gauges report. Run by the health checkers (they hold the eBay client secret an application
    token needs; the scheduler holds none)."""

    def __init__(self, client: EbayClient, sessions: SessionFactory, interval: float) -> None:
        self._client = client
        self._sessions = sessions
        self._interval = timedelta(seconds=interval)
        self._retry = min(self._interval, RETRY_AFTER_FAILURE)
        self._failing = False

    async def maybe_read(self) -> list[Reported] | None:
        """Read when this replica wins the reading that is due; returns what was stored, or
        None (not due, another replica has it, or eBay refused)."""
        async with unit_of_work(self._sessions) as session:
            if not await repository.claim_limits_reading(session, self._interval):
                return None
        now = utcnow()
        try:
            # Not recorded as this process's gauges: the leading scheduler reports the stored
            # quotas, so no replica serves a reading that has gone stale.
            limits = await self._client.app_rate_limits(record=False)
        except EbayError as exc:
            if not self._failing:
                log.warning(
                    "eBay's rate limits cannot be read; the configured limits apply",
                    error_kind=exc.kind,
                    error_code=exc.error_code,
                    http_status=exc.http_status,
                    retry_in_s=self._retry.total_seconds(),
                )
            self._failing = True
            async with unit_of_work(self._sessions) as session:
                await repository.retry_limits_reading(session, self._retry)
            return None
        reported = daily_limits(limits.apis, now)
        async with unit_of_work(self._sessions) as session:
            await repository.store_reported(session, reported)
            await repository.store_quotas(session, quota_rows(limits.apis), now)
        if self._failing or not reported:
            log.info(
                "eBay's rate limits read",
                buckets={r.bucket: r.daily_limit for r in reported} or None,
            )
        self._failing = False
        return reported

    async def run(self, stop: asyncio.Event, check_every: float = 30.0) -> None:
        """Try :meth:`maybe_read` every ``check_every`` seconds until ``stop``."""
        failures = Throttle(300.0)
        while not stop.is_set():
            try:
                await self.maybe_read()
            except Exception as exc:  # eBay errors are handled inside: this is the database
                if (held := failures.ready(type(exc).__name__)) is not None:
                    log.warning(
                        "reading eBay's rate limits failed",
                        error=redact_text(f"{type(exc).__name__}: {exc}")[:200],
                        more_since_last_line=held,
                    )
            with contextlib.suppress(TimeoutError):
                pause = min(check_every, self._interval.total_seconds())
                await asyncio.wait_for(stop.wait(), pause)
