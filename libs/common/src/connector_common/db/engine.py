"""Engine and unit-of-work factories. The edge owns the transaction; services only flush."""

from __future__ import annotations

import select
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from connector_common.settings import DatabaseSettings

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(
    settings: DatabaseSettings,
    application_name: str = "connector",
    *,
    ping_idle_seconds: float | None = None,
) -> AsyncEngine:
    """An async engine (psycopg 3) with a bounded pool and a statement timeout, whose pool
    checks a connection before handing it out.

    By default that check is a round trip (``SELECT 1``) per checkout. With
    ``ping_idle_seconds`` it is :func:`ping_when_needed`: a round trip only for a connection idle
    longer than that, or whose socket has something to read (the server closed it); a hot
    connection costs a zero-timeout ``poll``. For a service checking out a connection per
    request (the API), where the round trip was ~a tenth of a short request's CPU (issue 11).
    """
    engine = create_async_engine(
        settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=ping_idle_seconds is None,
        pool_recycle=1800,
        connect_args={
            "application_name": application_name[:63],
            "options": f"-c statement_timeout={settings.statement_timeout_ms}"
            " -c idle_in_transaction_session_timeout=60000",
            "connect_timeout": 10,
        },
    )
    if ping_idle_seconds is not None:
        ping_when_needed(engine, ping_idle_seconds)
    return engine


def ping_when_needed(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a connection at checkout only when it may be dead: idle for more than
    ``idle_seconds``, or readable while no statement is running (a server that restarts, is
    stopped or killed closes its connections: the socket then holds its goodbye or EOF). A
    failed ping makes the pool drop the connection and hand out a fresh one, as
    ``pool_pre_ping`` does, so the first requests after a PostgreSQL restart get no error.
    """
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "connect")
    def _connected(dbapi_connection: Any, record: Any) -> None:
        record.info["connector_used_at"] = time.monotonic()

    @event.listens_for(sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["connector_used_at"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        used_at = record.info.get("connector_used_at", 0.0)
        if time.monotonic() - used_at <= idle_seconds and not _readable(dbapi_connection):
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the connection failed its ping") from exc
        if not alive:
            raise DisconnectionError("the connection failed its ping")


def _readable(dbapi_connection: Any) -> bool:
    """Whether the server sent something unasked (on an idle connection: it closed it)."""
    try:
        fd = dbapi_connection.driver_connection.pgconn.socket
    except Exception:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """One transaction: commits when the block succeeds, rolls back when it raises."""
    async with factory() as session, session.begin():
        yield session
