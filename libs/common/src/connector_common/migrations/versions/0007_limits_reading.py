"""eBay's limits read by a worker, not by the scheduler.

The scheduler holds no eBay client secret (it decrypts nothing and calls eBay for nothing), so
Developer Analytics ``getRateLimits``, which needs an application token, is read by the health
checkers. ``ebay_limits_reading`` is one row: when the next reading is due (claimed with one
conditional upsert, so one replica of all reads per interval) and the per-resource quotas eBay
last reported (no personal data: API and resource names and numbers), which the leading
scheduler turns into the ``ebay.rate_limit.*`` gauges. The daily limits per budget bucket stay in
``ebay_rate_limits``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ebay_limits_reading",
        sa.Column("id", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("next_read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "quotas",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name="ebay_limits_reading_one_row"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("ebay_limits_reading")
