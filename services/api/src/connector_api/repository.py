"""SQL of the API. Every function touching accounts takes the caller's ``org_id``: org scoping
lives here and in :mod:`connector_api.deps`, never in a route."""

from __future__ import annotations

import uuid
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.types import NullType

from connector_api.schemas import SortKey
from connector_common.db.models import (
    AuditEntry,
    EbayAccount,
    EbayToken,
    HealthCheck,
    OAuthState,
    Organisation,
)
from connector_common.db.status import status_sql
from connector_common.status import RECONSENT_DUE, AccountStatus

# Stand-ins for NULL in keyset pagination (a row comparison with NULL is never true).
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)


async def ensure_org(session: AsyncSession, external_id: str) -> uuid.UUID:
    """The internal id of an org, created on first use; safe when two requests race."""
    inserted = await session.scalar(
        pg_insert(Organisation)
        .values(id=uuid.uuid4(), external_id=external_id, name=external_id)
        .on_conflict_do_nothing(index_elements=[Organisation.external_id])
        .returning(Organisation.id)
    )
    if inserted is not None:
        return uuid.UUID(str(inserted))
    existing = await session.scalar(
        select(Organisation.id).where(Organisation.external_id == external_id)
    )
    assert existing is not None  # the conflicting row is committed, or we would have waited
    return uuid.UUID(str(existing))


# Sorting by status: the rules' precedence (AccountStatus order, the most urgent first), with
# the accounts that are switched off or were never connected at the end.
_LAST = (AccountStatus.NOT_CONNECTED, AccountStatus.DEACTIVATED, AccountStatus.DELETED_BY_EBAY)
STATUS_RANK: dict[str, int] = {
    status.value: rank
    for rank, status in enumerate([s for s in AccountStatus if s not in _LAST] + list(_LAST))
}


def status_rank_sql(
    now: datetime, reconsent_window: timedelta = RECONSENT_DUE
) -> ColumnElement[int]:
    """The status's rank, as SQL (for sorting)."""
    return case(STATUS_RANK, value=status_sql(now, reconsent_window), else_=len(STATUS_RANK))


@dataclass(frozen=True)
class AccountFilter:
    statuses: Sequence[AccountStatus] = ()
    purpose: str | None = None
    marketplaces: Sequence[str] = ()
    active: bool | None = None
    search: str | None = None  # part of the house name or the eBay username


def _sort_column(sort: SortKey, now: datetime, reconsent_window: timedelta) -> Any:
    name = sort.value.lstrip("-")
    if name == "house_name":
        return func.lower(EbayAccount.house_name)
    if name == "created_at":
        return EbayAccount.created_at
    if name == "token_expires_at":
        return func.coalesce(EbayToken.access_expires_at, FAR_FUTURE)
    if name == "status":
        return status_rank_sql(now, reconsent_window)
    return func.coalesce(EbayAccount.last_health_at, FAR_PAST)


def sort_value(sort: SortKey, account: Any, token: Any | None, status: AccountStatus) -> Any:
    """The sort key of a row, as the cursor stores it (JSON-friendly): ``account`` and ``token``
    are the ORM objects or a row of :data:`ACCOUNT_COLUMNS` (both have these attributes)."""
    name = sort.value.lstrip("-")
    if name == "house_name":
        return account.house_name.lower()
    if name == "created_at":
        return account.created_at.isoformat()
    if name == "token_expires_at":
        expires = token.access_expires_at if token else None
        return (expires or FAR_FUTURE).isoformat()
    if name == "status":
        return STATUS_RANK.get(status.value, len(STATUS_RANK))
    return (account.last_health_at or FAR_PAST).isoformat()


def _cursor_value(sort: SortKey, raw: Any) -> Any:
    name = sort.value.lstrip("-")
    if name == "status":
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ValueError("cursor value")
        return raw
    if not isinstance(raw, str):
        raise ValueError("cursor value")
    return raw if name == "house_name" else datetime.fromisoformat(raw)


# What the API shows of an account and its token, as plain columns: the read routes build their
# answers from rows of these (no ORM objects), and token material is never even selected.
ACCOUNT_COLUMNS = (
    EbayAccount.id,
    EbayAccount.house_name,
    EbayAccount.purpose,
    EbayAccount.ebay_user_id,
    EbayAccount.username,
    EbayAccount.marketplace_id,
    EbayAccount.site_id,
    EbayAccount.site_code,
    EbayAccount.is_active,
    EbayAccount.connected_at,
    EbayAccount.created_at,
    EbayAccount.updated_at,
    EbayAccount.deactivated_at,
    EbayAccount.deleted_by_ebay_at,
    EbayAccount.next_health_check_at,
    EbayAccount.last_health_at,
    EbayAccount.last_health_outcome,
    EbayAccount.last_health_latency_ms,
    EbayAccount.last_health_error,
    EbayToken.account_id.label("token_account_id"),  # NULL: no token row
    EbayToken.access_expires_at,
    EbayToken.refresh_expires_at,
    EbayToken.last_refreshed_at,
    EbayToken.last_refresh_error,
    EbayToken.consecutive_failures,
    EbayToken.reconnect_required_at,
    EbayToken.retry_at,
    EbayToken.refresh_enabled,
    # Handed on as psycopg reads it (a list of str): no per-item result processing.
    type_coerce(EbayToken.scopes, NullType()).label("scopes"),
)
# What the read routes query through: a Core connection (their dependency hands one out, no ORM
# session around it: issue 11), or a session (the console's pages, the services).
Reader = AsyncSession | AsyncConnection


async def _connection(db: Reader) -> AsyncConnection:
    return db if isinstance(db, AsyncConnection) else await db.connection()


# Rows are read into named tuples: a SQLAlchemy Row's attribute access costs ~0.5-1 us (a
# Python-level lookup), a named tuple's ~30 ns, and a page reads ~35 attributes of 50 rows.
AccountRow = namedtuple("AccountRow", [c.key for c in ACCOUNT_COLUMNS])  # type: ignore[misc]


async def list_accounts(
    session: Reader,
    org_id: uuid.UUID,
    filters: AccountFilter,
    sort: SortKey,
    after: tuple[Any, uuid.UUID] | None,
    limit: int,
    now: datetime,
    reconsent_window: timedelta = RECONSENT_DUE,
) -> Sequence[Any]:
    """One page of the org's accounts (``limit`` rows; ask for one more to see if more exist),
    as rows of :data:`ACCOUNT_COLUMNS`."""
    connection = await _connection(session)
    name = sort.value.lstrip("-")
    if not filters.statuses and not filters.search and name != "status":
        # The common pages: a statement built once per shape, values as bind parameters.
        stmt = _page_statement(
            sort, filters.purpose is not None, bool(filters.marketplaces), filters.active, after
        )
        params: dict[str, Any] = {"org_id": org_id, "limit": limit}
        if filters.purpose is not None:
            params["purpose"] = filters.purpose.lower()
        if filters.marketplaces:
            params["marketplaces"] = list(filters.marketplaces)
        if after is not None:
            params["after_value"] = _cursor_value(sort, after[0])
            params["after_id"] = after[1]
        result = await connection.execute(stmt, params)
    else:
        stmt = _filtered_page(org_id, filters, sort, after, now, reconsent_window)
        result = await connection.execute(stmt.limit(limit))
    # Core execution on the request's connection (same transaction): rows, not ORM objects.
    return [AccountRow._make(row) for row in result]


def _account_select() -> Any:
    stmt = (
        select(*ACCOUNT_COLUMNS)
        .select_from(EbayAccount)
        .outerjoin(EbayToken, EbayToken.account_id == EbayAccount.id)
    )
    return stmt


# Statements of the common pages (no status filter or sort, no search) by shape: building a
# statement costs ~0.25 ms of CPU, more than PostgreSQL spends on the page (issue 11). At most
# 8 sorts x 2 x 2 x 3 x 2 shapes.
_PAGE_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _page_statement(
    sort: SortKey,
    purpose: bool,
    marketplaces: bool,
    active: bool | None,
    after: tuple[Any, uuid.UUID] | None,
) -> Any:
    key = (sort, purpose, marketplaces, active, after is not None)
    stmt = _PAGE_STATEMENTS.get(key)
    if stmt is not None:
        return stmt
    stmt = _account_select().where(EbayAccount.org_id == bindparam("org_id"))
    if purpose:
        stmt = stmt.where(func.lower(EbayAccount.purpose) == bindparam("purpose"))
    if marketplaces:
        stmt = stmt.where(EbayAccount.marketplace_id.in_(bindparam("marketplaces", expanding=True)))
    if active is not None:
        stmt = stmt.where(EbayAccount.is_active if active else ~EbayAccount.is_active)
    # Not the status sort: the column does not depend on the time.
    column = _sort_column(sort, FAR_PAST, RECONSENT_DUE)
    descending = sort.value.startswith("-")
    if after is not None:
        position = tuple_(column, EbayAccount.id)
        value = tuple_(
            bindparam("after_value", type_=column.type),
            bindparam("after_id", type_=EbayAccount.id.type),
        )
        stmt = stmt.where(position < value if descending else position > value)
    if descending:
        stmt = stmt.order_by(column.desc(), EbayAccount.id.desc())
    else:
        stmt = stmt.order_by(column.asc(), EbayAccount.id.asc())
    stmt = stmt.limit(bindparam("limit", type_=Integer()))
    _PAGE_STATEMENTS[key] = stmt
    return stmt


def _filtered_page(
    org_id: uuid.UUID,
    filters: AccountFilter,
    sort: SortKey,
    after: tuple[Any, uuid.UUID] | None,
    now: datetime,
    reconsent_window: timedelta,
) -> Any:
    """A page statement built for this request (status filters and sorts depend on the time)."""
    stmt = _account_select().where(EbayAccount.org_id == org_id)
    if filters.statuses:
        statuses = [s.value for s in filters.statuses]
        stmt = stmt.where(status_sql(now, reconsent_window).in_(statuses))
    if filters.purpose is not None:
        stmt = stmt.where(func.lower(EbayAccount.purpose) == filters.purpose.lower())
    if filters.marketplaces:
        stmt = stmt.where(EbayAccount.marketplace_id.in_(list(filters.marketplaces)))
    if filters.active is not None:
        stmt = stmt.where(EbayAccount.is_active if filters.active else ~EbayAccount.is_active)
    if filters.search:
        needle = filters.search.lower()
        stmt = stmt.where(
            or_(
                func.lower(EbayAccount.house_name).contains(needle, autoescape=True),
                func.lower(EbayAccount.username).contains(needle, autoescape=True),
            )
        )
    column = _sort_column(sort, now, reconsent_window)
    descending = sort.value.startswith("-")
    if after is not None:
        position = tuple_(column, EbayAccount.id)
        value = tuple_(literal(_cursor_value(sort, after[0])), literal(after[1]))
        stmt = stmt.where(position < value if descending else position > value)
    if descending:
        return stmt.order_by(column.desc(), EbayAccount.id.desc())
    return stmt.order_by(column.asc(), EbayAccount.id.asc())


_ACCOUNT_BY_ID = _account_select().where(
    EbayAccount.id == bindparam("account_id"), EbayAccount.org_id == bindparam("org_id")
)
_ACCOUNT_EXISTS = select(EbayAccount.id).where(
    EbayAccount.id == bindparam("account_id"), EbayAccount.org_id == bindparam("org_id")
)


async def account_row(session: Reader, org_id: uuid.UUID, account_id: uuid.UUID) -> Any | None:
    """The org's account with its token's metadata, as a row of :data:`ACCOUNT_COLUMNS`."""
    connection = await _connection(session)
    params = {"account_id": account_id, "org_id": org_id}
    row = (await connection.execute(_ACCOUNT_BY_ID, params)).first()
    return None if row is None else AccountRow._make(row)


async def account_exists(session: Reader, org_id: uuid.UUID, account_id: uuid.UUID) -> bool:
    """True when the account exists and is the org's."""
    connection = await _connection(session)
    params = {"account_id": account_id, "org_id": org_id}
    return (await connection.execute(_ACCOUNT_EXISTS, params)).first() is not None


async def org_name(session: AsyncSession, org_id: uuid.UUID) -> str | None:
    """An organisation's display name."""
    return await session.scalar(select(Organisation.name).where(Organisation.id == org_id))


async def status_counts(
    session: AsyncSession,
    org_id: uuid.UUID,
    now: datetime,
    reconsent_window: timedelta = RECONSENT_DUE,
) -> dict[str, int]:
    """How many of the org's accounts are in each status (statuses with none are absent)."""
    status = status_sql(now, reconsent_window)
    rows = await session.execute(
        select(status, func.count())
        .select_from(EbayAccount)
        .outerjoin(EbayToken, EbayToken.account_id == EbayAccount.id)
        .where(EbayAccount.org_id == org_id)
        .group_by(status)
    )
    return {str(name): int(count) for name, count in rows.all()}


async def distinct_values(
    session: AsyncSession, org_id: uuid.UUID, column: Any, limit: int
) -> list[str]:
    """Distinct non-empty values of an account column in the org, sorted."""
    rows = await session.scalars(
        select(column)
        .where(EbayAccount.org_id == org_id, column != "")
        .group_by(column)
        .order_by(column)
        .limit(limit)
    )
    return [str(value) for value in rows.all()]


async def get_account(
    session: AsyncSession, org_id: uuid.UUID, account_id: uuid.UUID, *, lock: bool = False
) -> tuple[EbayAccount, EbayToken | None] | None:
    """The org's account and its token row; ``lock`` takes row locks on both."""
    stmt = select(EbayAccount).where(EbayAccount.id == account_id, EbayAccount.org_id == org_id)
    if lock:
        stmt = stmt.with_for_update()
    account = await session.scalar(stmt)
    if account is None:
        return None
    token_stmt = select(EbayToken).where(EbayToken.account_id == account.id)
    if lock:
        token_stmt = token_stmt.with_for_update()
    token = await session.scalar(token_stmt)
    return account, token


async def find_by_ebay_user(
    session: AsyncSession, org_id: uuid.UUID, ebay_user_id: str
) -> EbayAccount | None:
    """The org's account for an eBay user, locked for update."""
    return await session.scalar(
        select(EbayAccount)
        .where(EbayAccount.org_id == org_id, EbayAccount.ebay_user_id == ebay_user_id)
        .with_for_update()
    )


async def token_of(session: AsyncSession, account_id: uuid.UUID) -> EbayToken | None:
    """An account's token row, locked for update."""
    return await session.scalar(
        select(EbayToken).where(EbayToken.account_id == account_id).with_for_update()
    )


async def active_house_name_owner(
    session: AsyncSession,
    org_id: uuid.UUID,
    house_name: str,
    exclude: uuid.UUID | None = None,
) -> EbayAccount | None:
    """The active account of the org using ``house_name`` (case-insensitively), if any."""
    stmt = select(EbayAccount).where(
        EbayAccount.org_id == org_id,
        EbayAccount.is_active,  # exactly the partial unique index's predicate, so it is used
        func.lower(EbayAccount.house_name) == house_name.lower(),
    )
    if exclude is not None:
        stmt = stmt.where(EbayAccount.id != exclude)
    return await session.scalar(stmt.limit(1))


HEALTH_CHECK_COLUMNS = (
    HealthCheck.id,
    HealthCheck.checked_at,
    HealthCheck.outcome,
    HealthCheck.latency_ms,
    HealthCheck.http_status,
    HealthCheck.ebay_error_code,
    HealthCheck.ebay_request_id,
    HealthCheck.api,
    HealthCheck.detail,
)
HealthCheckRow = namedtuple("HealthCheckRow", [c.key for c in HEALTH_CHECK_COLUMNS])  # type: ignore[misc]


async def health_checks(
    session: Reader,
    org_id: uuid.UUID,
    account_id: uuid.UUID,
    after: tuple[datetime, int] | None,
    limit: int,
) -> Sequence[Any]:
    """The org's account's checks, newest first (none when the account is another org's), as
    rows of :data:`HEALTH_CHECK_COLUMNS`."""
    params: dict[str, Any] = {"account_id": account_id, "org_id": org_id, "limit": limit}
    if after is not None:
        params["after_at"], params["after_id"] = after
    stmt = _HEALTH_PAGE[after is not None]
    connection = await _connection(session)
    return [HealthCheckRow._make(row) for row in await connection.execute(stmt, params)]


def _health_page(after: bool) -> Any:
    stmt = (
        select(*HEALTH_CHECK_COLUMNS)
        .select_from(HealthCheck)
        .join(EbayAccount, EbayAccount.id == HealthCheck.account_id)
        .where(
            HealthCheck.account_id == bindparam("account_id"),
            EbayAccount.org_id == bindparam("org_id"),
        )
    )
    if after:
        at = bindparam("after_at", type_=HealthCheck.checked_at.type)
        stmt = stmt.where(
            or_(
                HealthCheck.checked_at < at,
                and_(HealthCheck.checked_at == at, HealthCheck.id < bindparam("after_id")),
            )
        )
    return stmt.order_by(HealthCheck.checked_at.desc(), HealthCheck.id.desc()).limit(
        bindparam("limit", type_=Integer())
    )


# Built once (see _PAGE_STATEMENTS): the first page, and the pages after a cursor.
_HEALTH_PAGE = {False: _health_page(False), True: _health_page(True)}


async def delete_account(session: AsyncSession, org_id: uuid.UUID, account_id: uuid.UUID) -> int:
    """Delete an account; its tokens and health history go with it (ON DELETE CASCADE)."""
    result = await session.execute(
        delete(EbayAccount).where(EbayAccount.id == account_id, EbayAccount.org_id == org_id)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def add_audit(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    actor: str,
    action: str,
    account_id: uuid.UUID | None,
    house_name: str | None,
    request_id: str | None,
    details: dict[str, Any] | None = None,
    changes: dict[str, tuple[Any, Any]] | None = None,
) -> None:
    """Record who did what, and each changed field as before/after (never personal data of
    the seller, never a secret)."""
    session.add(
        AuditEntry(
            org_id=org_id,
            actor=actor,
            action=action,
            account_id=account_id,
            house_name=house_name,
            request_id=request_id,
            details=details or {},
            changes={
                field: {"before": before, "after": after}
                for field, (before, after) in (changes or {}).items()
            },
        )
    )


def add_state(
    session: AsyncSession,
    *,
    state_hash: bytes,
    org_id: uuid.UUID,
    actor: str,
    house_name: str,
    purpose: str,
    expires_at: datetime,
    account_id: uuid.UUID | None = None,
    browser_hash: bytes | None = None,
) -> None:
    """Remember a pending consent (only the hash of its state); a reconnect names its account,
    a consent started on the admin page the hash of its browser's nonce."""
    session.add(
        OAuthState(
            state_hash=state_hash,
            org_id=org_id,
            actor=actor,
            house_name=house_name,
            purpose=purpose,
            expires_at=expires_at,
            account_id=account_id,
            browser_hash=browser_hash,
        )
    )


async def consume_state(
    session: AsyncSession, state_hash: bytes, now: datetime, browser_hash: bytes | None
) -> OAuthState | None:
    """Mark a pending consent used, atomically; None when unknown, expired, already used, or
    bound to another browser than the one presenting ``browser_hash``."""
    bound_here: ColumnElement[bool] = OAuthState.browser_hash.is_(None)
    if browser_hash is not None:
        bound_here = or_(bound_here, OAuthState.browser_hash == browser_hash)
    return await session.scalar(
        update(OAuthState)
        .where(
            OAuthState.state_hash == state_hash,
            OAuthState.used_at.is_(None),
            OAuthState.expires_at > now,
            bound_here,
        )
        .values(used_at=now)
        .returning(OAuthState)
        .execution_options(synchronize_session=False)
    )


async def find_state(session: AsyncSession, state_hash: bytes) -> OAuthState | None:
    """A consent by its hash, to say why it cannot be used."""
    return await session.scalar(select(OAuthState).where(OAuthState.state_hash == state_hash))


async def purge_old_states(session: AsyncSession, now: datetime) -> None:
    """Forget consents that ended more than a day ago."""
    await session.execute(delete(OAuthState).where(OAuthState.expires_at < now - timedelta(days=1)))


async def ping(session: AsyncSession) -> None:
    """A round trip to the database."""
    await session.execute(select(1))


async def count_with_status(
    session: AsyncSession,
    org_id: uuid.UUID,
    status: AccountStatus,
    now: datetime,
    reconsent_window: timedelta = RECONSENT_DUE,
) -> int:
    """How many of the org's accounts have ``status`` now."""
    stmt = (
        select(func.count())
        .select_from(EbayAccount)
        .outerjoin(EbayToken, EbayToken.account_id == EbayAccount.id)
        .where(
            EbayAccount.org_id == org_id,
            status_sql(now, reconsent_window) == status.value,
        )
    )
    return int(await session.scalar(stmt) or 0)
