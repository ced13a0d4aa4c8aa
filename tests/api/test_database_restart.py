"""After PostgreSQL restarts, every connection in the API's pool is dead. The pool checks a
connection before handing it out only when it may be dead (idle for a while, or closed by the
server: issue 11 dropped the round trip per checkout), so these tests make sure that a restart
still costs no client an error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector_common import migrate
from connector_devstack.embedded import EmbeddedPostgres
from tests.api.conftest import Api, make_settings, running_api


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test alone (it is restarted)."""
    postgres = EmbeddedPostgres(tmp_path / "pg")
    postgres.start()
    try:
        migrate.upgrade(postgres.url, "head")
        yield postgres
    finally:
        postgres.stop()


async def _statuses(api: Api, paths: list[str]) -> list[int]:
    headers = api.auth(role="viewer")
    responses = await asyncio.gather(*(api.client.get(path, headers=headers) for path in paths))
    return [response.status_code for response in responses]


async def test_requests_after_a_postgresql_restart_get_no_error(
    own_postgres: EmbeddedPostgres,
    nats_url: str,
    namespace: str,
    token_keys: str,
    dev_secret: str,
) -> None:
    settings = make_settings(own_postgres.url, nats_url, namespace, token_keys, dev_secret)
    async with running_api(settings, dev_secret) as api:
        # Several requests at once: several connections in the pool, all used just now.
        paths = ["/ebay-accounts", "/ebay-accounts?limit=5", "/readyz"] * 3
        assert await _statuses(api, paths) == [200] * len(paths)
        checked_in = api.state.engine.pool.checkedin()  # type: ignore[attr-defined]
        assert checked_in >= 2

        await asyncio.to_thread(own_postgres.stop)
        await asyncio.to_thread(own_postgres.start)  # same port, same data

        # Every pooled connection is dead; none may reach a client as an error.
        assert await _statuses(api, paths) == [200] * len(paths)
        assert await _statuses(api, ["/ebay-accounts"] * 3) == [200] * 3
