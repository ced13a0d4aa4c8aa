"""An account's status, as one pure function of its account row, token row and last check."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

EXPIRING_SOON = timedelta(minutes=15)
# eBay refresh tokens live about 18 months; this long before the end the seller must consent
# again (``CONNECTOR_EBAY__RECONSENT_WARNING_DAYS`` changes it where the status is computed).
RECONSENT_DUE = timedelta(days=30)


class AccountStatus(StrEnum):
    """What the API, the admin page and the events say about an account."""

    DELETED_BY_EBAY = "deleted_by_ebay"
    DEACTIVATED = "deactivated"
    NOT_CONNECTED = "not_connected"
    RECONNECT_REQUIRED = "reconnect_required"
    ERROR = "error"
    EXPIRED = "expired"
    UNHEALTHY = "unhealthy"
    RECONSENT_DUE = "reconsent_due"
    UNKNOWN = "unknown"
    EXPIRING_SOON = "expiring_soon"
    HEALTHY = "healthy"


class HealthOutcome(StrEnum):
    """The verdict of one health check."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class AccountLike(Protocol):
    @property
    def is_active(self) -> bool: ...
    @property
    def deleted_by_ebay_at(self) -> datetime | None: ...


class TokenLike(Protocol):
    @property
    def access_expires_at(self) -> datetime | None: ...
    @property
    def last_refresh_error(self) -> str | None: ...
    @property
    def reconnect_required_at(self) -> datetime | None: ...
    @property
    def refresh_expires_at(self) -> datetime | None: ...


class HealthLike(Protocol):
    @property
    def outcome(self) -> str: ...


def account_status(
    account: AccountLike,
    token: TokenLike | None,
    last_health: HealthLike | None,
    now: datetime,
    reconsent_window: timedelta = RECONSENT_DUE,
) -> AccountStatus:
    """Derive the status; earlier rules win (a deactivated account is never 'expired').

    ``reconsent_due`` (the refresh token ends within ``reconsent_window``) wins over
    ``healthy``, ``expiring_soon`` and ``unknown``, and loses to every error. A refresh token
    that has ended is ``reconnect_required`` at once: nothing can renew it but a new consent.
    """
    if account.deleted_by_ebay_at is not None:
        return AccountStatus.DELETED_BY_EBAY
    if not account.is_active:
        return AccountStatus.DEACTIVATED
    if token is None:
        return AccountStatus.NOT_CONNECTED
    refresh_ends = token.refresh_expires_at
    if token.reconnect_required_at is not None or (
        refresh_ends is not None and refresh_ends <= now
    ):
        return AccountStatus.RECONNECT_REQUIRED
    if token.last_refresh_error:
        return AccountStatus.ERROR
    expires = token.access_expires_at
    if expires is not None and expires <= now:
        return AccountStatus.EXPIRED
    if last_health is not None and last_health.outcome == HealthOutcome.UNHEALTHY:
        return AccountStatus.UNHEALTHY
    if refresh_ends is not None and refresh_ends - now < reconsent_window:
        return AccountStatus.RECONSENT_DUE
    if expires is None:
        return AccountStatus.UNKNOWN
    if expires - now < EXPIRING_SOON:
        return AccountStatus.EXPIRING_SOON
    return AccountStatus.HEALTHY
