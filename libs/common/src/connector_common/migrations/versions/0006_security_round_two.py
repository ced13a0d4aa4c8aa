"""Security, round 2: server-side admin sessions, browser-bound consents, readable audit
trail, shared rate-limit counters, canonical organisation ids.

- ``admin_sessions``: the admin cookie names a row here (by hash), so logout, "log out
  everywhere" and the idle timeout end a session for good.
- ``oauth_states.browser_hash``: a consent started on the admin page is bound to its browser.
- ``audit_log.changes`` (before/after of changed fields) and indexes for ``GET /audit-events``;
  earlier renames get their before/after from ``details.old_house_name``.
- ``rate_limit_counters`` (UNLOGGED): rate-limit windows shared by the API replicas.
- organisation ids are folded to lower case (the canonical form the API now enforces), except
  where that would merge two organisations: those keep their id (and are unreachable by token
  until an operator renames one).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id_hash", sa.LargeBinary(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column(
            "roles", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_admin_sessions_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_admin_sessions")),
    )
    op.create_index(
        "ix_admin_sessions_org_id_subject", "admin_sessions", ["org_id", "subject"], unique=False
    )
    op.create_index("ix_admin_sessions_expires_at", "admin_sessions", ["expires_at"], unique=False)

    op.add_column("oauth_states", sa.Column("browser_hash", sa.LargeBinary(), nullable=True))

    op.add_column(
        "audit_log",
        sa.Column(
            "changes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.execute(
        """
        UPDATE audit_log
           SET changes = jsonb_build_object('house_name', jsonb_build_object(
                   'before', details -> 'old_house_name', 'after', to_jsonb(house_name)))
         WHERE action = 'account.renamed' AND details ? 'old_house_name'
        """
    )
    op.create_index("ix_audit_log_org_id_id", "audit_log", ["org_id", "id"], unique=False)
    op.create_index(
        "ix_audit_log_org_id_actor_id", "audit_log", ["org_id", "actor", "id"], unique=False
    )

    op.create_table(
        "rate_limit_counters",
        sa.Column("bucket", sa.String(length=300), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_rate_limit_counters")),
        prefixes=["UNLOGGED"],
    )
    op.create_index(
        "ix_rate_limit_counters_window_end", "rate_limit_counters", ["window_end"], unique=False
    )

    op.execute(
        """
        UPDATE organisations AS o SET external_id = lower(o.external_id)
         WHERE o.external_id <> lower(o.external_id)
           AND NOT EXISTS (
               SELECT 1 FROM organisations AS other
                WHERE other.id <> o.id AND lower(other.external_id) = lower(o.external_id))
        """
    )


def downgrade() -> None:
    # Folded organisation ids stay folded: the original case is not kept anywhere.
    op.drop_index("ix_rate_limit_counters_window_end", table_name="rate_limit_counters")
    op.drop_table("rate_limit_counters")
    op.drop_index("ix_audit_log_org_id_actor_id", table_name="audit_log")
    op.drop_index("ix_audit_log_org_id_id", table_name="audit_log")
    op.drop_column("audit_log", "changes")
    op.drop_column("oauth_states", "browser_hash")
    op.drop_index("ix_admin_sessions_expires_at", table_name="admin_sessions")
    op.drop_index("ix_admin_sessions_org_id_subject", table_name="admin_sessions")
    op.drop_table("admin_sessions")
