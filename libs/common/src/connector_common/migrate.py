"""Apply or revert the database migrations (Alembic), programmatically."""

from __future__ import annotations

from typing import Literal

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


SchemaState = Literal["current", "behind", "ahead"]


def schema_state(url: str) -> tuple[SchemaState, str | None, str | None]:
    """Whether the database suits this code: (state, database revision, this code's head).

    ``current``: at this code's head. ``behind``: migrations of this code are not applied yet
    (or the database was never migrated). ``ahead``: a newer release migrated it (a revision
    this code does not know); migrations keep the previous release working, so that is fine.
    """
    current = current_revision(url)
    head = head_revision()
    if current == head:
        return "current", current, head
    if current is None:
        return "behind", current, head
    script = ScriptDirectory.from_config(alembic_config("postgresql://"))
    try:
        known = script.get_revision(current) is not None
    except Exception:  # alembic raises a resolution error for a revision it does not know
        known = False
    return ("behind" if known else "ahead"), current, head
