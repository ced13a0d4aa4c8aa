"""Alembic environment: runs against the URL given by connector_common.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from connector_common.db.models import Base

# Serialises concurrent `connector migrate` runs (several replicas starting at once).
MIGRATION_LOCK_KEY = 0x636F6E6E6563  # "connec"

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: run migrations through `connector migrate`")
    engine = create_engine(str(url))
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `connector migrate`")
run_migrations_online()
