"""An account's history (token refreshes and failures, lifecycle, health changes) for the
admin page's account view; events only travel through NATS otherwise.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("failure", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ebay_accounts.id"],
            name=op.f("fk_account_history_account_id_ebay_accounts"),
            ondelete="CASCADE",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_account_history_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_history")),
    )
    op.create_index(
        "ix_account_history_account_id_occurred_at",
        "account_history",
        ["account_id", "occurred_at"],
    )
    op.create_index(
        "ix_account_history_org_id_occurred_at_failure",
        "account_history",
        ["org_id", "occurred_at"],
        postgresql_where=sa.text("failure"),
    )
    op.create_index(
        "ix_account_history_occurred_at",
        "account_history",
        ["occurred_at"],
        postgresql_using="brin",
    )


def downgrade() -> None:
    op.drop_table("account_history")
