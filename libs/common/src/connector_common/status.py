"""An account's status, as one pure function of its account row, token row and last check."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

EXPIRING_SOON = timedelta(minutes=15)


class AccountStatus(StrEnum):
    """What the API, the admin page and the events say about an account."""

    DEACTIVATED = "deactivated"
    NOT_CONNECTED = "not_connected"
    RECONNECT_REQUIRED = "reconnect_required"
    ERROR = "error"
    EXPIRED = "expired"
    UNHEALTHY = "unhealthy"
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


class TokenLike(Protocol):
    @property
    def access_expires_at(self) -> datetime | None: ...
    @property
    def last_refresh_error(self) -> str | None: ...
    @property
    def reconnect_required_at(self) -> datetime | None: ...


class HealthLike(Protocol):
    @property
    def outcome(self) -> str: ...


def account_status(
    account: AccountLike,
    token: TokenLike | None,
    last_health: HealthLike | None,
    now: datetime,
) -> AccountStatus:
    """Derive the status; earlier rules win (a deactivated account is never 'expired')."""
    if not account.is_active:
        return AccountStatus.DEACTIVATED
    if token is None:
        return AccountStatus.NOT_CONNECTED
    if token.reconnect_required_at is not None:
        return AccountStatus.RECONNECT_REQUIRED
    if token.last_refresh_error:
        return AccountStatus.ERROR
    expires = token.access_expires_at
    if expires is not None and expires <= now:
        return AccountStatus.EXPIRED
    if last_health is not None and last_health.outcome == HealthOutcome.UNHEALTHY:
        return AccountStatus.UNHEALTHY
    if expires is None:
        return AccountStatus.UNKNOWN
    if expires - now < EXPIRING_SOON:
        return AccountStatus.EXPIRING_SOON
    return AccountStatus.HEALTHY
