"""Indexes for keyset pages of an org's accounts (sorted by house name or creation time).

Measured with bench/bench_api.py on an org of 100,000 accounts: a first page sorted by name
went from a sort of every org row to an index walk (see docs/benchmarks.md, "API").

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 02:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_ebay_accounts_org_id_lower_house_name_id",
        "ebay_accounts",
        ["org_id", sa.literal_column("lower(house_name)"), "id"],
        unique=False,
    )
    op.create_index(
        "ix_ebay_accounts_org_id_created_at_id",
        "ebay_accounts",
        ["org_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_ebay_accounts_org_id_created_at_id", table_name="ebay_accounts")
    op.drop_index("ix_ebay_accounts_org_id_lower_house_name_id", table_name="ebay_accounts")
