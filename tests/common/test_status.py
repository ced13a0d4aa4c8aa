"""The account status function: every branch and every boundary, with a fixed clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from connector_common.status import EXPIRING_SOON, AccountStatus, account_status

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class Account:
    is_active: bool = True


@dataclass
class Token:
    access_expires_at: datetime | None = NOW + timedelta(hours=2)
    last_refresh_error: str | None = None
    reconnect_required_at: datetime | None = None


@dataclass
class Health:
    outcome: str


def status(
    account: Account | None = None,
    token: Token | None = None,
    health: Health | None = None,
    *,
    no_token: bool = False,
) -> AccountStatus:
    return account_status(
        account or Account(), None if no_token else (token or Token()), health, NOW
    )


def test_deactivated_account_is_deactivated_whatever_its_token_says() -> None:
    expired = Token(access_expires_at=NOW - timedelta(hours=1), last_refresh_error="boom")
    assert status(Account(is_active=False), expired) is AccountStatus.DEACTIVATED


def test_account_without_token_is_not_connected() -> None:
    assert status(no_token=True) is AccountStatus.NOT_CONNECTED


def test_reconnect_required_wins_over_refresh_error() -> None:
    token = Token(reconnect_required_at=NOW - timedelta(minutes=1), last_refresh_error="x")
    assert status(token=token) is AccountStatus.RECONNECT_REQUIRED


def test_refresh_error_is_error() -> None:
    assert status(token=Token(last_refresh_error="503 from eBay")) is AccountStatus.ERROR


def test_empty_refresh_error_is_not_an_error() -> None:
    assert status(token=Token(last_refresh_error="")) is AccountStatus.HEALTHY


def test_token_expiring_exactly_now_is_expired() -> None:
    assert status(token=Token(access_expires_at=NOW)) is AccountStatus.EXPIRED


def test_token_expired_in_the_past_is_expired() -> None:
    token = Token(access_expires_at=NOW - timedelta(seconds=1))
    assert status(token=token) is AccountStatus.EXPIRED


def test_expired_wins_over_unhealthy_check() -> None:
    token = Token(access_expires_at=NOW - timedelta(minutes=5))
    assert status(token=token, health=Health("unhealthy")) is AccountStatus.EXPIRED


def test_unhealthy_last_check_is_unhealthy() -> None:
    assert status(health=Health("unhealthy")) is AccountStatus.UNHEALTHY


def test_no_expiry_is_unknown() -> None:
    assert status(token=Token(access_expires_at=None)) is AccountStatus.UNKNOWN


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (timedelta(seconds=1), AccountStatus.EXPIRING_SOON),
        (EXPIRING_SOON - timedelta(microseconds=1), AccountStatus.EXPIRING_SOON),
        (EXPIRING_SOON, AccountStatus.HEALTHY),
        (EXPIRING_SOON + timedelta(seconds=1), AccountStatus.HEALTHY),
    ],
)
def test_fifteen_minute_boundary(remaining: timedelta, expected: AccountStatus) -> None:
    assert status(token=Token(access_expires_at=NOW + remaining)) is expected


def test_healthy_check_and_fresh_token_is_healthy() -> None:
    assert status(health=Health("healthy")) is AccountStatus.HEALTHY


def test_expiring_soon_threshold_is_fifteen_minutes() -> None:
    assert timedelta(minutes=15) == EXPIRING_SOON
