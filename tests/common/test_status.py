"""The account status function: every branch and every boundary, with a fixed clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from connector_common.status import EXPIRING_SOON, RECONSENT_DUE, AccountStatus, account_status

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class Account:
    is_active: bool = True
    deleted_by_ebay_at: datetime | None = None


@dataclass
class Token:
    access_expires_at: datetime | None = NOW + timedelta(hours=2)
    last_refresh_error: str | None = None
    reconnect_required_at: datetime | None = None
    refresh_expires_at: datetime | None = NOW + timedelta(days=500)


@dataclass
class Health:
    outcome: str


def status(
    account: Account | None = None,
    token: Token | None = None,
    health: Health | None = None,
    *,
    no_token: bool = False,
    window: timedelta = RECONSENT_DUE,
) -> AccountStatus:
    return account_status(
        account or Account(), None if no_token else (token or Token()), health, NOW, window
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


# --- deleted by eBay (a tombstone) -----------------------------------------------------------


def test_tombstone_is_deleted_by_ebay_whatever_else_is_true() -> None:
    tombstone = Account(is_active=False, deleted_by_ebay_at=NOW - timedelta(days=1))
    assert status(tombstone, no_token=True) is AccountStatus.DELETED_BY_EBAY
    assert status(tombstone, Token(last_refresh_error="x")) is AccountStatus.DELETED_BY_EBAY


# --- the refresh token's end: re-consent -----------------------------------------------------


def test_reconsent_window_is_thirty_days_by_default() -> None:
    assert timedelta(days=30) == RECONSENT_DUE


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (RECONSENT_DUE + timedelta(seconds=1), AccountStatus.HEALTHY),
        (RECONSENT_DUE, AccountStatus.HEALTHY),
        (RECONSENT_DUE - timedelta(microseconds=1), AccountStatus.RECONSENT_DUE),
        (timedelta(days=1), AccountStatus.RECONSENT_DUE),
        (timedelta(microseconds=1), AccountStatus.RECONSENT_DUE),
        (timedelta(0), AccountStatus.RECONNECT_REQUIRED),
        (-timedelta(microseconds=1), AccountStatus.RECONNECT_REQUIRED),
        (-timedelta(days=3), AccountStatus.RECONNECT_REQUIRED),
    ],
)
def test_refresh_token_end_boundaries(remaining: timedelta, expected: AccountStatus) -> None:
    assert status(token=Token(refresh_expires_at=NOW + remaining)) is expected


@pytest.mark.parametrize(
    ("window", "remaining", "expected"),
    [
        (timedelta(days=7), timedelta(days=10), AccountStatus.HEALTHY),
        (timedelta(days=7), timedelta(days=7), AccountStatus.HEALTHY),
        (timedelta(days=7), timedelta(days=6), AccountStatus.RECONSENT_DUE),
        (timedelta(days=60), timedelta(days=45), AccountStatus.RECONSENT_DUE),
    ],
)
def test_reconsent_window_is_configurable(
    window: timedelta, remaining: timedelta, expected: AccountStatus
) -> None:
    token = Token(refresh_expires_at=NOW + remaining)
    assert status(token=token, window=window) is expected


def test_unknown_refresh_expiry_is_never_reconsent_due() -> None:
    assert status(token=Token(refresh_expires_at=None)) is AccountStatus.HEALTHY


SOON = NOW + timedelta(days=3)


def test_reconsent_due_wins_over_expiring_soon() -> None:
    token = Token(access_expires_at=NOW + timedelta(minutes=5), refresh_expires_at=SOON)
    assert status(token=token) is AccountStatus.RECONSENT_DUE


def test_reconsent_due_wins_over_unknown_access_expiry() -> None:
    token = Token(access_expires_at=None, refresh_expires_at=SOON)
    assert status(token=token) is AccountStatus.RECONSENT_DUE


def test_reconsent_due_wins_over_a_healthy_check() -> None:
    token = Token(refresh_expires_at=SOON)
    assert status(token=token, health=Health("healthy")) is AccountStatus.RECONSENT_DUE


@pytest.mark.parametrize(
    ("token", "health", "expected"),
    [
        (Token(refresh_expires_at=SOON), Health("unhealthy"), AccountStatus.UNHEALTHY),
        (
            Token(refresh_expires_at=SOON, access_expires_at=NOW - timedelta(seconds=1)),
            None,
            AccountStatus.EXPIRED,
        ),
        (Token(refresh_expires_at=SOON, last_refresh_error="503"), None, AccountStatus.ERROR),
        (
            Token(refresh_expires_at=SOON, reconnect_required_at=NOW),
            None,
            AccountStatus.RECONNECT_REQUIRED,
        ),
    ],
)
def test_errors_win_over_reconsent_due(
    token: Token, health: Health | None, expected: AccountStatus
) -> None:
    assert status(token=token, health=health) is expected


def test_ended_refresh_token_is_reconnect_required_even_with_a_fresh_access_token() -> None:
    token = Token(access_expires_at=NOW + timedelta(hours=1), refresh_expires_at=NOW)
    assert status(token=token, health=Health("healthy")) is AccountStatus.RECONNECT_REQUIRED


def test_ended_refresh_token_of_a_deactivated_account_stays_deactivated() -> None:
    token = Token(refresh_expires_at=NOW - timedelta(days=1))
    assert status(Account(is_active=False), token) is AccountStatus.DEACTIVATED
