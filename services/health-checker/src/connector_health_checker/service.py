"""Check one account against eBay (Trading ``GetUser``) and record the verdict.

An expired or refused access token is not a verdict: it is refreshed once through the token
store (the same lease the refresher uses, so the two never race) and the call retried once.
A suspended seller, a second refusal, a permanent error, or eBay unreachable on the last allowed
attempt is ``unhealthy`` with the reason; a transient failure before that is retried later.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from opentelemetry import metrics

from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.ebay import (
    AccessTokenRejected,
    CircuitOpen,
    EbayClient,
    EbayError,
    RateLimited,
    SellerSuspended,
    TradingUser,
    TransientError,
    call_with_token_refresh,
)
from connector_common.events import (
    AccountUsernameChanged,
    CheckHealth,
    HealthChanged,
    HealthChecked,
    utcnow,
)
from connector_common.logs import get_logger
from connector_common.outbox import enqueue_event
from connector_common.redaction import redact_text
from connector_common.tokens.access import TokenUnavailable, current_token, token_after_rejection
from connector_common.tokens.store import RefreshOutcome, TokenStore
from connector_common.worker.backoff import retry_delay
from connector_health_checker import repository
from connector_health_checker.repository import Outcome, Verdict

log = get_logger(__name__)


class CheckOutcome(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    RETRY = "retry"  # eBay could not be asked this time; the message comes back later
    SKIPPED = "skipped"  # deactivated or reconnect required: nothing to check
    UNKNOWN_ACCOUNT = "unknown_account"


@dataclass(frozen=True)
class CheckResult:
    outcome: CheckOutcome
    account_id: uuid.UUID
    retry_in: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class HealthTiming:
    interval_seconds: float
    jitter_seconds: float
    attempts: int  # deliveries before an unreachable eBay counts as unhealthy
    retry_base_seconds: float
    retry_max_seconds: float
    token_wait_seconds: float  # how long to wait for another replica's refresh


@dataclass
class HealthChecker:
    """Everything a check needs; one per process."""

    sessions: SessionFactory
    client: EbayClient
    store: TokenStore
    namespace: str
    timing: HealthTiming
    meter: metrics.Meter
    on_commit: Callable[[], None]

    def __post_init__(self) -> None:
        self._checks = self.meter.create_counter(
            "connector.health.checks", unit="{check}", description="health checks by outcome"
        )

    async def check(self, command: CheckHealth, attempt: int) -> CheckResult:
        """Check the account once; ``attempt`` is the message's delivery count (1 = first)."""
        result = await self._check(command, attempt)
        self._checks.add(1, {"outcome": result.outcome.value})
        return result

    async def _check(self, command: CheckHealth, attempt: int) -> CheckResult:
        account_id = command.account_id
        async with unit_of_work(self.sessions) as session:
            target = await repository.load_target(session, account_id)
        if target is None or target.org_id != command.org_id or not target.has_token:
            return CheckResult(CheckOutcome.UNKNOWN_ACCOUNT, account_id)
        if not target.is_active or target.reconnect_required:
            return CheckResult(CheckOutcome.SKIPPED, account_id)
        try:
            user = await self._get_user(target)
        except TokenUnavailable as exc:
            if exc.outcome in (RefreshOutcome.BUSY, RefreshOutcome.FAILED) and exc.retry_in:
                return await self._unreachable(target, attempt, exc.reason, exc.retry_in, None)
            label = (
                "the seller must reconnect"
                if exc.outcome is RefreshOutcome.RECONNECT_REQUIRED
                else "no usable access token"
            )
            return await self._record(target, _failed_verdict(label, exc.reason, None))
        except (TransientError, RateLimited, CircuitOpen) as exc:
            wait = exc.retry_after if isinstance(exc, RateLimited) else None
            if isinstance(exc, CircuitOpen):
                wait = max(0.0, (exc.open_until - utcnow()).total_seconds())
            return await self._unreachable(target, attempt, exc.message, wait, exc)
        except SellerSuspended as exc:
            return await self._record(target, _failed_verdict("seller suspended", exc.message, exc))
        except AccessTokenRejected as exc:
            reason = "eBay refused a freshly refreshed access token"
            return await self._record(target, _failed_verdict(reason, exc.message, exc))
        except EbayError as exc:
            return await self._record(target, _failed_verdict(exc.kind, exc.message, exc))
        return await self._record(target, _user_verdict(user))

    async def _get_user(self, target: repository.Target) -> TradingUser:
        token = await current_token(self.store, target.account_id)
        if token is None:
            raise TokenUnavailable(RefreshOutcome.UNKNOWN_ACCOUNT, "no token is stored")
        if token.expired:  # no point asking eBay with it: refresh first
            token = await token_after_rejection(
                self.store,
                target.account_id,
                token.version,
                wait_seconds=self.timing.token_wait_seconds,
            )
        version = token.version

        async def refresh() -> str:
            fresh = await token_after_rejection(
                self.store, target.account_id, version, wait_seconds=self.timing.token_wait_seconds
            )
            return fresh.access_token.get_secret_value()

        return await call_with_token_refresh(
            lambda access: self.client.get_user(
                access, site_id=target.site_id, account_key=str(target.account_id)
            ),
            token.access_token.get_secret_value(),
            refresh,
        )

    async def _unreachable(
        self,
        target: repository.Target,
        attempt: int,
        message: str,
        at_least: float | None,
        error: EbayError | None,
    ) -> CheckResult:
        timing = self.timing
        if attempt < timing.attempts:
            wait = retry_delay(
                attempt, timing.retry_base_seconds, timing.retry_max_seconds, at_least=at_least
            )
            return CheckResult(
                CheckOutcome.RETRY, target.account_id, wait, redact_text(message)[:300]
            )
        reason = f"eBay unreachable after {attempt} attempts"
        return await self._record(target, _failed_verdict(reason, message, error))

    def next_check_at(self, checked_at: datetime) -> datetime:
        """The next check: one interval later, moved by up to ± jitter to spread the load."""
        jitter = random.uniform(-self.timing.jitter_seconds, self.timing.jitter_seconds)  # noqa: S311
        return checked_at + timedelta(seconds=self.timing.interval_seconds + jitter)

    async def _record(self, target: repository.Target, verdict: Verdict) -> CheckResult:
        async with unit_of_work(self.sessions) as session:
            recorded = await repository.record_verdict(
                session, target.account_id, verdict, self.next_check_at(verdict.checked_at)
            )
            if recorded is None:
                return CheckResult(CheckOutcome.UNKNOWN_ACCOUNT, target.account_id)
            enqueue_event(
                session,
                HealthChecked(
                    org_id=recorded.org_id,
                    account_id=target.account_id,
                    house_name=recorded.house_name,
                    outcome=verdict.outcome,
                    checked_at=verdict.checked_at,
                    latency_ms=verdict.latency_ms,
                    http_status=verdict.http_status,
                    ebay_error_code=verdict.ebay_error_code,
                    ebay_request_id=verdict.ebay_request_id,
                    api=verdict.api,
                    reason=verdict.reason,
                ),
                self.namespace,
            )
            if recorded.previous_outcome != verdict.outcome:
                enqueue_event(
                    session,
                    HealthChanged(
                        org_id=recorded.org_id,
                        account_id=target.account_id,
                        house_name=recorded.house_name,
                        previous_outcome=recorded.previous_outcome,
                        outcome=verdict.outcome,
                        reason=verdict.reason,
                    ),
                    self.namespace,
                )
            renamed = recorded.identity_changes.get("username")
            if renamed is not None and renamed[0] is not None:
                # Usernames change on eBay, user ids do not: once per change (the row is
                # locked, so two checks cannot both see the old name).
                enqueue_event(
                    session,
                    AccountUsernameChanged(
                        org_id=recorded.org_id,
                        account_id=target.account_id,
                        house_name=recorded.house_name,
                        old_username=str(renamed[0]),
                        new_username=str(renamed[1]),
                        source="health_check",
                    ),
                    self.namespace,
                )
        self.on_commit()
        log.info(
            "health checked",
            account_id=str(target.account_id),
            house_name=recorded.house_name,
            outcome=verdict.outcome,
            reason=verdict.reason,
            latency_ms=verdict.latency_ms,
            changed=recorded.previous_outcome != verdict.outcome,
            identity_changes=sorted(recorded.identity_changes) or None,
        )
        return CheckResult(CheckOutcome(verdict.outcome), target.account_id, reason=verdict.reason)


def _user_verdict(user: TradingUser) -> Verdict:
    meta = user.meta
    reason = None
    outcome: Outcome = "healthy"
    if user.seller_good_standing is False:
        outcome, reason = "unhealthy", "seller is not in good standing"
    return Verdict(
        checked_at=utcnow(),
        outcome=outcome,
        reason=reason,
        latency_ms=round(meta.latency_ms),
        http_status=meta.http_status,
        ebay_error_code=None,
        ebay_request_id=meta.request_id,
        api=meta.api,
        username=user.user_id or None,
        eias_token=user.eias_token,
        site_id=user.site.site_id if user.site else None,
        site_code=user.site.code if user.site else None,
        marketplace_id=user.site.marketplace_id if user.site else None,
    )


def _failed_verdict(reason: str, message: str, error: EbayError | None) -> Verdict:
    meta = error.meta if error is not None else None
    detail = redact_text(f"{reason}: {message}" if message and message != reason else reason)
    return Verdict(
        checked_at=utcnow(),
        outcome="unhealthy",
        reason=detail[:500],
        latency_ms=round(meta.latency_ms) if meta else None,
        http_status=meta.http_status if meta else None,
        ebay_error_code=error.error_code if error is not None else None,
        ebay_request_id=meta.request_id if meta else None,
        api=meta.api if meta else "trading",
    )
