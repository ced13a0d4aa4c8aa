"""The data model. Alembic migrations in ``connector_common.migrations`` create exactly this."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organisation(Base):
    """A company using the connector; every account belongs to exactly one."""

    __tablename__ = "organisations"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    # The identifier the identity provider puts in the JWT `org_id` claim.
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class EbayAccount(Base):
    """One eBay seller account connected by an organisation (a "house")."""

    __tablename__ = "ebay_accounts"
    __table_args__ = (
        UniqueConstraint("org_id", "ebay_user_id"),
        # House names are unique per org among active accounts only, case-insensitively.
        Index(
            "uq_ebay_accounts_org_id_house_name_active",
            "org_id",
            text("lower(house_name)"),
            unique=True,
            postgresql_where=text("is_active"),
        ),
        Index(
            "ix_ebay_accounts_next_health_check_at",
            "next_health_check_at",
            postgresql_where=text("next_health_check_at IS NOT NULL"),
        ),
        Index("ix_ebay_accounts_org_id_id", "org_id", "id"),
        # Keyset pages of an org's accounts, sorted by name or by creation time.
        Index(
            "ix_ebay_accounts_org_id_lower_house_name_id",
            "org_id",
            text("lower(house_name)"),
            "id",
        ),
        Index("ix_ebay_accounts_org_id_created_at_id", "org_id", "created_at", "id"),
        CheckConstraint("char_length(house_name) BETWEEN 1 AND 100", name="house_name_length"),
        CheckConstraint("char_length(purpose) <= 500", name="purpose_length"),
        CheckConstraint(
            "(is_active AND deactivated_at IS NULL)"
            " OR (NOT is_active AND deactivated_at IS NOT NULL)",
            name="deactivated_at_matches_is_active",
        ),
        # A tombstone (the seller deleted their eBay account) holds no eBay personal data; every
        # other account knows its eBay user and site.
        CheckConstraint(
            "(deleted_by_ebay_at IS NULL AND ebay_user_id IS NOT NULL"
            " AND marketplace_id IS NOT NULL AND site_id IS NOT NULL AND site_code IS NOT NULL)"
            " OR (deleted_by_ebay_at IS NOT NULL AND NOT is_active AND ebay_user_id IS NULL"
            " AND eias_token IS NULL AND username IS NULL AND marketplace_id IS NULL"
            " AND site_id IS NULL AND site_code IS NULL)",
            name="tombstone_has_no_personal_data",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organisations.id", ondelete="CASCADE")
    )
    house_name: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(String(500), server_default="")
    # NULL only on a tombstone (deleted_by_ebay_at set): see the check constraint.
    ebay_user_id: Mapped[str | None] = mapped_column(String(200))  # immutable eBay user id
    eias_token: Mapped[str | None] = mapped_column(String(500))
    username: Mapped[str | None] = mapped_column(String(200))  # can change on eBay
    marketplace_id: Mapped[str | None] = mapped_column(String(40))
    site_id: Mapped[int | None] = mapped_column(Integer)
    site_code: Mapped[str | None] = mapped_column(String(40))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    connected_at: Mapped[datetime] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp, server_default=func.now(), onupdate=func.now()
    )
    deactivated_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Health scheduling: NULL means "not scheduled" (deactivated, or reconnect required).
    next_health_check_at: Mapped[datetime | None] = mapped_column(Timestamp)
    health_requested_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The current health, denormalised from the newest health_checks row for cheap listing.
    last_health_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_health_outcome: Mapped[str | None] = mapped_column(String(20))
    last_health_latency_ms: Mapped[int | None] = mapped_column(Integer)
    last_health_error: Mapped[str | None] = mapped_column(String(500))
    # Set when eBay told us the seller deleted their account: the row is then a tombstone.
    deleted_by_ebay_at: Mapped[datetime | None] = mapped_column(Timestamp)

    token: Mapped[EbayToken | None] = relationship(
        back_populates="account", uselist=False, lazy="raise", passive_deletes=True
    )


class EbayToken(Base):
    """The OAuth tokens of one account, encrypted, plus what the refresher needs."""

    __tablename__ = "ebay_tokens"
    __table_args__ = (
        # The scheduler's "due for refresh" query walks this index: cost grows with due rows.
        Index(
            "ix_ebay_tokens_access_expires_at_refresh_enabled",
            "access_expires_at",
            postgresql_where=text("refresh_enabled"),
        ),
        CheckConstraint("consecutive_failures >= 0", name="failures_non_negative"),
        # The scheduler's re-consent sweep: tokens not yet announced for this refresh token.
        Index(
            "ix_ebay_tokens_refresh_expires_at_reconsent_pending",
            "refresh_expires_at",
            postgresql_where=text(
                "reconnect_required_at IS NULL"
                " AND reconsent_notified_for IS DISTINCT FROM refresh_expires_at"
            ),
        ),
        # The scheduler's sweep of refresh tokens that ran out (reconnect required, no eBay call).
        Index(
            "ix_ebay_tokens_refresh_expires_at_usable",
            "refresh_expires_at",
            postgresql_where=text("reconnect_required_at IS NULL"),
        ),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("ebay_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    access_token_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    refresh_token_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    access_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    last_refreshed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_refresh_error: Mapped[str | None] = mapped_column(String(500))
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Optimistic concurrency: every write of new token material increments it.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    reconnect_required_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # False when the account is deactivated or needs reconnecting: the scheduler skips it.
    refresh_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    retry_at: Mapped[datetime | None] = mapped_column(Timestamp)  # backing off until
    refresh_requested_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Refresh lease with a fencing epoch: one replica refreshes an account at a time.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(Timestamp)
    lease_epoch: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The refresh_expires_at an account.reconsent_due event was published for: one event per
    # refresh token, however many ticks see it inside the warning window.
    reconsent_notified_for: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp, server_default=func.now(), onupdate=func.now()
    )

    account: Mapped[EbayAccount] = relationship(back_populates="token", lazy="raise")


class HealthCheck(Base):
    """One health check of one account against eBay."""

    __tablename__ = "health_checks"
    __table_args__ = (Index("ix_health_checks_account_id_checked_at", "account_id", "checked_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("ebay_accounts.id", ondelete="CASCADE")
    )
    checked_at: Mapped[datetime] = mapped_column(Timestamp)
    outcome: Mapped[str] = mapped_column(String(20))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    ebay_error_code: Mapped[str | None] = mapped_column(String(40))
    ebay_request_id: Mapped[str | None] = mapped_column(String(200))
    api: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(String(500))


class AccountHistory(Base):
    """What happened to an account (token refreshes and failures, lifecycle, health changes),
    for people looking at one account; the events themselves travel through the outbox.

    Written with the event in the same transaction (``outbox.enqueue_event``); kept for a week
    (the relay purges older rows); removed with the account.
    """

    __tablename__ = "account_history"
    __table_args__ = (
        Index("ix_account_history_account_id_occurred_at", "account_id", "occurred_at"),
        # "The last failures" of an org: a small partial index, however many refreshes succeed.
        Index(
            "ix_account_history_org_id_occurred_at_failure",
            "org_id",
            "occurred_at",
            postgresql_where=text("failure"),
        ),
        # Purging by age: rows arrive in time order, so a BRIN index is tiny and cheap to keep.
        Index("ix_account_history_occurred_at", "occurred_at", postgresql_using="brin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organisations.id", ondelete="CASCADE")
    )
    # Checked at commit: a writer adds the entry with the event, maybe before the account row
    # it belongs to is inserted in the same transaction (the ORM does not order them).
    account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("ebay_accounts.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
    )
    occurred_at: Mapped[datetime] = mapped_column(Timestamp)
    type: Mapped[str] = mapped_column(String(60))
    failure: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))


class OutboxMessage(Base):
    """An event written in the same transaction as the change it announces."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_available_at_unpublished",
            "available_at",
            postgresql_where=text("published_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    subject: Mapped[str] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    available_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(Timestamp)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(String(500))


class OAuthState(Base):
    """A pending eBay consent: stored hashed, single use, short-lived."""

    __tablename__ = "oauth_states"
    __table_args__ = (Index("ix_oauth_states_expires_at", "expires_at"),)

    state_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organisations.id", ondelete="CASCADE")
    )
    actor: Mapped[str] = mapped_column(String(200))
    house_name: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(String(500), server_default="")
    # Set for a reconnect: only this account's eBay seller may complete the consent.
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("ebay_accounts.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    used_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # SHA-256 of the nonce cookie of the browser that started the consent on the admin page;
    # NULL for a consent started through the REST API (the caller binds it to its user).
    browser_hash: Mapped[bytes | None] = mapped_column(LargeBinary)


class AuditEntry(Base):
    """Who did what to which account; survives the account's deletion (no foreign key)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_org_id_created_at", "org_id", "created_at"),
        Index("ix_audit_log_account_id", "account_id"),
        # GET /audit-events: newest first by id, whole org or one actor.
        Index("ix_audit_log_org_id_id", "org_id", "id"),
        Index("ix_audit_log_org_id_actor_id", "org_id", "actor", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organisations.id", ondelete="CASCADE")
    )
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    account_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    house_name: Mapped[str | None] = mapped_column(String(100))  # as it was at the time
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    # Changed fields: {"house_name": {"before": "Old", "after": "New"}} (never a secret or
    # seller data).
    changes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    request_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class AdminSessionRecord(Base):
    """A person logged in on the admin page: the cookie holds the id, we keep its hash."""

    __tablename__ = "admin_sessions"
    __table_args__ = (
        Index("ix_admin_sessions_org_id_subject", "org_id", "subject"),
        Index("ix_admin_sessions_expires_at", "expires_at"),
    )

    id_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organisations.id", ondelete="CASCADE")
    )
    subject: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class RateLimitCounter(Base):
    """Requests counted in the current window of one limit and key, shared by every API
    replica. UNLOGGED: no WAL per request; a crash merely forgets the current windows."""

    __tablename__ = "rate_limit_counters"
    __table_args__ = (
        Index("ix_rate_limit_counters_window_end", "window_end"),
        {"prefixes": ["UNLOGGED"]},
    )

    bucket: Mapped[str] = mapped_column(String(300), primary_key=True)
    window_end: Mapped[datetime] = mapped_column(Timestamp)
    hits: Mapped[int] = mapped_column(Integer)


class CircuitBreakerState(Base):
    """Per-account eBay circuit breaker, shared by every replica through the database."""

    __tablename__ = "circuit_breakers"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), server_default="closed")
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    opened_at: Mapped[datetime | None] = mapped_column(Timestamp)
    open_until: Mapped[datetime | None] = mapped_column(Timestamp)
    probe_until: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp, server_default=func.now(), onupdate=func.now()
    )


class Lease(Base):
    """A named, time-limited leadership lease with a fencing epoch (e.g. the scheduler)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    lease_until: Mapped[datetime] = mapped_column(Timestamp)
    epoch: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))


class UsernameChange(Base):
    """A seller's eBay username changed (the user id never does): old -> new, and when."""

    __tablename__ = "ebay_username_history"
    __table_args__ = (
        Index("ix_ebay_username_history_account_id_changed_at", "account_id", "changed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("ebay_accounts.id", ondelete="CASCADE")
    )
    old_username: Mapped[str | None] = mapped_column(String(200))
    new_username: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(Timestamp)
    source: Mapped[str] = mapped_column(String(40))  # "health_check" | "reconnect"


class DeletionNotification(Base):
    """A Marketplace Account Deletion notification we processed (idempotency by its id).

    Holds no personal data: not the user id, not the username; only what it did.
    """

    __tablename__ = "ebay_deletion_notifications"

    notification_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_date: Mapped[datetime | None] = mapped_column(Timestamp)
    received_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    accounts_purged: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class CallCount(Base):
    """eBay calls made per API (or OAuth grant) and UTC day, by every replica together.

    One row per (day, bucket): replicas add their buffered counts with an upsert every second,
    so the cost is one statement per process per second, not a row per call.
    """

    __tablename__ = "ebay_call_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    bucket: Mapped[str] = mapped_column(String(40), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class ReportedRateLimit(Base):
    """A daily limit as eBay's Developer Analytics ``getRateLimits`` reported it."""

    __tablename__ = "ebay_rate_limits"

    bucket: Mapped[str] = mapped_column(String(40), primary_key=True)
    daily_limit: Mapped[int] = mapped_column(BigInteger)
    ebay_count: Mapped[int | None] = mapped_column(BigInteger)
    ebay_remaining: Mapped[int | None] = mapped_column(BigInteger)
    ebay_reset: Mapped[datetime | None] = mapped_column(Timestamp)
    fetched_at: Mapped[datetime] = mapped_column(Timestamp)


class LimitsReading(Base):
    """When eBay's limits are next read (one replica of all claims each reading), and the
    per-resource quotas Developer Analytics last reported. One row."""

    __tablename__ = "ebay_limits_reading"
    __table_args__ = (CheckConstraint("id = 1", name="ebay_limits_reading_one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("1"))
    next_read_at: Mapped[datetime] = mapped_column(Timestamp)
    read_at: Mapped[datetime | None] = mapped_column(Timestamp)
    quotas: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))


class BudgetDeferral(Base):
    """Work deferred to the next UTC day because a daily budget ran out: one row (one event,
    one log line) per day and kind of work, however many replicas and ticks see it."""

    __tablename__ = "ebay_budget_deferrals"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    work: Mapped[str] = mapped_column(String(40), primary_key=True)  # "health" | "refresh"
    bucket: Mapped[str] = mapped_column(String(40))
    daily_limit: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[int] = mapped_column(BigInteger)
    deferred_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    deferred_until: Mapped[datetime] = mapped_column(Timestamp)
