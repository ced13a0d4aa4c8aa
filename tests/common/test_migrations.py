"""Migrations: upgrade from empty, downgrade to empty, and the models match the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from connector_common import migrate
from connector_common.db.models import Base
from tests.fixtures.infra import PostgresServer, unique_name


@pytest.fixture
def empty_database(pg_server: PostgresServer) -> Iterator[str]:
    name = unique_name("connector_mig_")
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_every_table(empty_database: str) -> None:
    assert migrate.current_revision(empty_database) is None
    migrate.upgrade(empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision()
    assert set(Base.metadata.tables) <= table_names(empty_database)


def test_downgrade_to_base_leaves_nothing(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    migrate.downgrade(empty_database, "base")
    assert table_names(empty_database) <= {"alembic_version"}
    assert migrate.current_revision(empty_database) is None
    migrate.upgrade(empty_database)  # and up again from the downgraded state
    assert migrate.current_revision(empty_database) == migrate.head_revision()


def test_upgrade_twice_is_a_no_op(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    migrate.upgrade(empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision()


def test_models_and_migrations_agree(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    engine = create_engine(empty_database)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
