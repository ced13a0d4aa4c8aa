"""An account's status in SQL: :func:`connector_common.status.account_status`, for filtering
(the API's list) and counting (the metrics collector) in the database.

Must give the same answer as the Python function for every row (tested through the API's
status filter and the collector's counts).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, literal, or_

from connector_common.db.models import EbayAccount, EbayToken
from connector_common.status import EXPIRING_SOON, RECONSENT_DUE, AccountStatus


def status_sql(now: datetime, reconsent_window: timedelta = RECONSENT_DUE) -> ColumnElement[str]:
    """The status of an ``ebay_accounts`` row outer-joined with its ``ebay_tokens`` row."""
    expires = EbayToken.access_expires_at
    refresh_ends = EbayToken.refresh_expires_at
    return case(
        (
            EbayAccount.deleted_by_ebay_at.is_not(None),
            literal(AccountStatus.DELETED_BY_EBAY.value),
        ),
        (EbayAccount.is_active.is_(False), literal(AccountStatus.DEACTIVATED.value)),
        (EbayToken.account_id.is_(None), literal(AccountStatus.NOT_CONNECTED.value)),
        (
            or_(
                EbayToken.reconnect_required_at.is_not(None),
                and_(refresh_ends.is_not(None), refresh_ends <= now),
            ),
            literal(AccountStatus.RECONNECT_REQUIRED.value),
        ),
        (
            and_(EbayToken.last_refresh_error.is_not(None), EbayToken.last_refresh_error != ""),
            literal(AccountStatus.ERROR.value),
        ),
        (and_(expires.is_not(None), expires <= now), literal(AccountStatus.EXPIRED.value)),
        (EbayAccount.last_health_outcome == "unhealthy", literal(AccountStatus.UNHEALTHY.value)),
        (
            and_(refresh_ends.is_not(None), refresh_ends < now + reconsent_window),
            literal(AccountStatus.RECONSENT_DUE.value),
        ),
        (expires.is_(None), literal(AccountStatus.UNKNOWN.value)),
        (expires < now + EXPIRING_SOON, literal(AccountStatus.EXPIRING_SOON.value)),
        else_=literal(AccountStatus.HEALTHY.value),
    )
