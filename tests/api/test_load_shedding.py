"""Under overload a replica sheds requests (503 + Retry-After at once) instead of queueing
them; the probes keep answering. Overload is made real: a row lock held by the test keeps an
admitted request waiting inside the database, so the replica's slots stay taken for as long as
the test wants (no sleeps, no timing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from connector_api.shedding import LoadShedder
from connector_common.db.engine import unit_of_work
from tests.api.conftest import Api, make_settings, running_api, seed_account, wait_for


@asynccontextmanager
async def shedding_api(
    database_url: str,
    nats_url: str,
    namespace: str,
    token_keys: str,
    dev_secret: str,
    **shedding: object,
) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url, nats_url, namespace, token_keys, dev_secret, shedding=shedding
    )
    async with running_api(settings, dev_secret) as api:
        yield api


@asynccontextmanager
async def row_locked(api: Api, account_id: object) -> AsyncIterator[None]:
    """Hold the account row's lock (as a concurrent writer would) until the block ends."""
    async with unit_of_work(api.state.sessions) as session:
        await session.execute(
            text("SELECT id FROM ebay_accounts WHERE id = :id FOR UPDATE"), {"id": account_id}
        )
        yield


def shedder_of(api: Api) -> LoadShedder:
    shedder: LoadShedder = api.app.state.shedder
    return shedder


async def test_overload_is_shed_with_503_and_retry_after_not_queued(
    database_url: str, nats_url: str, namespace: str, token_keys: str, dev_secret: str
) -> None:
    async with shedding_api(
        database_url, nats_url, namespace, token_keys, dev_secret, max_concurrent=1, max_queued=0
    ) as api:
        account = await seed_account(api, "Warehouse-A")
        shedder = shedder_of(api)
        async with row_locked(api, account.id):
            # Admitted, then waiting for the row lock: the replica's only slot is taken.
            rename = asyncio.create_task(
                api.client.patch(
                    f"/ebay-accounts/{account.id}", json={"purpose": "x"}, headers=api.auth()
                )
            )

            async def slot_taken() -> bool:
                return shedder.running == 1

            await wait_for(slot_taken)
            shed = await api.client.get("/ebay-accounts", headers=api.auth())
            assert shed.status_code == 503
            assert shed.headers["Retry-After"] == "1"
            assert shed.json()["error"] == "unavailable"
            assert shed.json()["request_id"] == shed.headers["X-Request-Id"]
            assert not rename.done()  # answered while the admitted request still runs
            # The probes are never shed: the replica stays alive and ready.
            assert (await api.client.get("/healthz")).status_code == 200
            assert (await api.client.get("/readyz")).status_code == 200
        assert (await rename).status_code == 200
        assert shedder.shed == 1
        assert shedder.running == 0
        after = await api.client.get("/ebay-accounts", headers=api.auth())
        assert after.status_code == 200
        assert [a["purpose"] for a in after.json()["items"]] == ["x"]


async def test_the_queue_is_bounded_and_served_in_order_once_a_slot_frees(
    database_url: str, nats_url: str, namespace: str, token_keys: str, dev_secret: str
) -> None:
    async with shedding_api(
        database_url,
        nats_url,
        namespace,
        token_keys,
        dev_secret,
        max_concurrent=1,
        max_queued=1,
        max_wait_seconds=60,
        retry_after_seconds=7,
    ) as api:
        account = await seed_account(api, "Warehouse-A")
        shedder = shedder_of(api)
        async with row_locked(api, account.id):
            rename = asyncio.create_task(
                api.client.patch(
                    f"/ebay-accounts/{account.id}", json={"purpose": "y"}, headers=api.auth()
                )
            )

            async def running() -> bool:
                return shedder.running == 1

            await wait_for(running)
            queued = asyncio.create_task(api.client.get("/ebay-accounts", headers=api.auth()))

            async def waiting() -> bool:
                return shedder.queued == 1

            await wait_for(waiting)
            shed = await api.client.get(f"/ebay-accounts/{account.id}", headers=api.auth())
            assert shed.status_code == 503
            assert shed.headers["Retry-After"] == "7"
            assert not queued.done()
            assert not rename.done()
        # The lock is gone: the admitted request ends, and the queued one runs after it.
        assert (await rename).status_code == 200
        listed = await queued
        assert listed.status_code == 200
        assert [a["purpose"] for a in listed.json()["items"]] == ["y"]
        assert shedder.running == 0
        assert shedder.queued == 0
        assert shedder.shed == 1
