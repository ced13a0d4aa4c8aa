"""eBay's platform rules: account deletion, the daily call budget, re-consent, usernames.

- ``ebay_accounts``: a tombstone kept after eBay's Marketplace Account Deletion notification
  (``deleted_by_ebay_at``); the eBay user id and site become NULL on a tombstone, which a check
  constraint makes the only way they can be NULL.
- ``ebay_tokens.reconsent_notified_for``: one ``account.reconsent_due`` event per refresh token.
- ``ebay_username_history``: old -> new usernames.
- ``ebay_deletion_notifications``: notifications processed (idempotency; no personal data).
- ``ebay_call_counts``, ``ebay_rate_limits``, ``ebay_budget_deferrals``: the daily call budget.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOMBSTONE_CHECK = (
    "(deleted_by_ebay_at IS NULL AND ebay_user_id IS NOT NULL AND marketplace_id IS NOT NULL"
    " AND site_id IS NOT NULL AND site_code IS NOT NULL)"
    " OR (deleted_by_ebay_at IS NOT NULL AND NOT is_active AND ebay_user_id IS NULL"
    " AND eias_token IS NULL AND username IS NULL AND marketplace_id IS NULL"
    " AND site_id IS NULL AND site_code IS NULL)"
)


def upgrade() -> None:
    op.add_column(
        "ebay_accounts", sa.Column("deleted_by_ebay_at", sa.DateTime(timezone=True), nullable=True)
    )
    for column in ("ebay_user_id", "marketplace_id", "site_code"):
        op.alter_column("ebay_accounts", column, existing_type=sa.String(), nullable=True)
    op.alter_column("ebay_accounts", "site_id", existing_type=sa.Integer(), nullable=True)
    op.create_check_constraint(
        op.f("ck_ebay_accounts_tombstone_has_no_personal_data"), "ebay_accounts", TOMBSTONE_CHECK
    )

    op.add_column(
        "ebay_tokens",
        sa.Column("reconsent_notified_for", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_ebay_tokens_refresh_expires_at_reconsent_pending",
        "ebay_tokens",
        ["refresh_expires_at"],
        unique=False,
        postgresql_where=sa.text(
            "reconnect_required_at IS NULL"
            " AND reconsent_notified_for IS DISTINCT FROM refresh_expires_at"
        ),
    )
    op.create_index(
        "ix_ebay_tokens_refresh_expires_at_usable",
        "ebay_tokens",
        ["refresh_expires_at"],
        unique=False,
        postgresql_where=sa.text("reconnect_required_at IS NULL"),
    )

    op.create_table(
        "ebay_username_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("old_username", sa.String(length=200), nullable=True),
        sa.Column("new_username", sa.String(length=200), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ebay_accounts.id"],
            name=op.f("fk_ebay_username_history_account_id_ebay_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ebay_username_history")),
    )
    op.create_index(
        "ix_ebay_username_history_account_id_changed_at",
        "ebay_username_history",
        ["account_id", "changed_at"],
        unique=False,
    )

    op.create_table(
        "ebay_deletion_notifications",
        sa.Column("notification_id", sa.String(length=200), nullable=False),
        sa.Column("event_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("accounts_purged", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_ebay_deletion_notifications")),
    )

    op.create_table(
        "ebay_call_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket", sa.String(length=40), nullable=False),
        sa.Column("calls", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("day", "bucket", name=op.f("pk_ebay_call_counts")),
    )
    op.create_table(
        "ebay_rate_limits",
        sa.Column("bucket", sa.String(length=40), nullable=False),
        sa.Column("daily_limit", sa.BigInteger(), nullable=False),
        sa.Column("ebay_count", sa.BigInteger(), nullable=True),
        sa.Column("ebay_remaining", sa.BigInteger(), nullable=True),
        sa.Column("ebay_reset", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_ebay_rate_limits")),
    )
    op.create_table(
        "ebay_budget_deferrals",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("work", sa.String(length=40), nullable=False),
        sa.Column("bucket", sa.String(length=40), nullable=False),
        sa.Column("daily_limit", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column(
            "deferred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deferred_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "work", name=op.f("pk_ebay_budget_deferrals")),
    )


def downgrade() -> None:
    op.drop_table("ebay_budget_deferrals")
    op.drop_table("ebay_rate_limits")
    op.drop_table("ebay_call_counts")
    op.drop_table("ebay_deletion_notifications")
    op.drop_index(
        "ix_ebay_username_history_account_id_changed_at", table_name="ebay_username_history"
    )
    op.drop_table("ebay_username_history")
    op.drop_index("ix_ebay_tokens_refresh_expires_at_usable", table_name="ebay_tokens")
    op.drop_index("ix_ebay_tokens_refresh_expires_at_reconsent_pending", table_name="ebay_tokens")
    op.drop_column("ebay_tokens", "reconsent_notified_for")
    op.drop_constraint(
        op.f("ck_ebay_accounts_tombstone_has_no_personal_data"), "ebay_accounts", type_="check"
    )
    # Tombstones cannot exist without the columns that make them tombstones.
    op.execute("DELETE FROM ebay_accounts WHERE deleted_by_ebay_at IS NOT NULL")
    op.alter_column("ebay_accounts", "site_id", existing_type=sa.Integer(), nullable=False)
    for column in ("ebay_user_id", "marketplace_id", "site_code"):
        op.alter_column("ebay_accounts", column, existing_type=sa.String(), nullable=False)
    op.drop_column("ebay_accounts", "deleted_by_ebay_at")
