"""Session-wide infrastructure: real PostgreSQL and real NATS JetStream.

Isolation: every test that needs a database gets its own database, copied from a migrated
template (fast), or a transaction on a shared database that is rolled back. Every test that
needs NATS gets its own namespace, so its streams and subjects are its alone.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from connector_common.db.engine import create_engine
from connector_common.messaging import Topology, connect, ensure_streams
from connector_common.settings import DatabaseSettings, NatsSettings
from tests.fixtures.infra import (
    PostgresServer,
    migrate_template,
    nats_server,
    postgres_server,
    unique_name,
)
from tests.fixtures.sandbox import (  # noqa: F401 - fixtures
    ebay_client,
    ebay_settings,
    sandbox,
    sandbox_server,
)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def template_db(pg_server: PostgresServer) -> Iterator[str]:
    name = migrate_template(pg_server)
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def database_url(pg_server: PostgresServer, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    name = unique_name("connector_test_")
    url = pg_server.create_database(name, template=template_db)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on this test's own database."""
    eng = create_engine(DatabaseSettings(url=SecretStr(database_url)), application_name="tests")
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def shared_database_url(pg_server: PostgresServer, template_db: str) -> Iterator[str]:
    """A migrated database shared by tests that roll back their transaction."""
    name = unique_name("connector_shared_")
    url = pg_server.create_database(name, template=template_db)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(scope="session")
async def shared_engine(shared_database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(
        DatabaseSettings(url=SecretStr(shared_database_url)), application_name="tests"
    )
    yield eng
    await eng.dispose()


@pytest.fixture
async def session(shared_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that is rolled back after the test (nothing persists)."""
    async with shared_engine.connect() as connection:
        transaction = await connection.begin()
        db = AsyncSession(
            bind=connection,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
        try:
            yield db
        finally:
            await db.close()
            await transaction.rollback()


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with nats_server() as url:
        yield url


@pytest.fixture
def namespace() -> str:
    """A NATS namespace (subject root and stream prefix) for this test alone."""
    return unique_name("t")


@pytest.fixture
def topology(namespace: str) -> Topology:
    return Topology(namespace)


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await connect(NatsSettings(url=nats_url), "tests")
    yield client
    await client.drain()


@pytest.fixture
async def js(nats_client: NatsClient, topology: Topology) -> AsyncIterator[JetStreamContext]:
    """JetStream with this test's streams declared."""
    context = nats_client.jetstream()
    await ensure_streams(context, topology)
    yield context
    for config in topology.stream_configs():
        assert config.name is not None
        with contextlib.suppress(NotFoundError):  # the test may have removed it already
            await context.delete_stream(config.name)


@pytest.fixture
def token_keys() -> str:
    """A key ring for tests (two keys: the second encrypts)."""
    return ",".join(
        f"{kid}:{base64.b64encode(os.urandom(32)).decode()}" for kid in ("test-old", "test-new")
    )
