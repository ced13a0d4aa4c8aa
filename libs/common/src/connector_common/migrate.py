"""Apply or revert the database migrations (Alembic), programmatically."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine


def _sync_url(url: str) -> str:
    return url  # psycopg 3 serves both sync and async engines with the same URL


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", "connector_common:migrations")
    config.attributes["url"] = _sync_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (``base`` = empty)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine = create_engine(_sync_url(url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
