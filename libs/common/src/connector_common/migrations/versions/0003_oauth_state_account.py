"""A reconnect's OAuth state names the account it reconnects.

Without it, a seller who consented as another eBay user during a reconnect created a new
account (or reconnected a different one) instead of being refused.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 03:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("oauth_states", sa.Column("account_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_oauth_states_account_id_ebay_accounts"),
        "oauth_states",
        "ebay_accounts",
        ["account_id"],
        ["id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_oauth_states_account_id_ebay_accounts"), "oauth_states", type_="foreignkey"
    )
    op.drop_column("oauth_states", "account_id")
