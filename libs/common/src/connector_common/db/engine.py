"""Engine and unit-of-work factories. The edge owns the transaction; services only flush."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from connector_common.settings import DatabaseSettings

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(settings: DatabaseSettings, application_name: str = "connector") -> AsyncEngine:
    """An async engine (psycopg 3) with pre-ping, a bounded pool and a statement timeout."""
    return create_async_engine(
        settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "application_name": application_name[:63],
            "options": f"-c statement_timeout={settings.statement_timeout_ms}"
            " -c idle_in_transaction_session_timeout=60000",
            "connect_timeout": 10,
        },
    )


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """One transaction: commits when the block succeeds, rolls back when it raises."""
    async with factory() as session, session.begin():
        yield session
