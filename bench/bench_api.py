"""How fast the API answers for an organisation with many accounts.

Embedded PostgreSQL (real, fsync on), migrated, seeded with one organisation of N accounts
(default 100,000: the largest installations we target) plus 20 other organisations of 1,000
accounts each, with a realistic mix of statuses (tokens expiring soon, expired, failing,
reconnect required, deactivated, unhealthy) and marketplaces. The API is the real app (lifespan,
middleware, JWT verification, org resolution, SQL, serialisation) called in-process through
httpx's ASGI transport, one request at a time, so each number is the latency of one request
(NATS is not started: the API serves without it, as it does during an outage).

    .venv/bin/python -m bench.bench_api [--accounts 100000] [--requests 200] [--revision REV]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from pydantic import SecretStr
from sqlalchemy import text

from connector_api.app import create_app
from connector_api.devtokens import mint_dev_token
from connector_api.settings import ApiSettings
from connector_common import migrate
from connector_common.db.engine import create_engine
from connector_common.logs import configure_logging
from connector_common.settings import DatabaseSettings, EbaySettings
from connector_common.telemetry import setup_telemetry
from connector_devstack.embedded import EmbeddedPostgres, free_port

SEED_SQL = """
INSERT INTO organisations (id, external_id, name) VALUES (:org, :name, :name);
INSERT INTO ebay_accounts (id, org_id, house_name, purpose, ebay_user_id, username,
    marketplace_id, site_id, site_code, is_active, connected_at, deactivated_at,
    last_health_at, last_health_outcome, last_health_latency_ms)
SELECT md5(:name || ':' || i)::uuid, :org, 'house-' || lpad(i::text, 7, '0'),
    (ARRAY['orders', 'returns', 'stock'])[1 + i % 3], 'u' || md5(:name || ':' || i), 'seller_' || i,
    (ARRAY['EBAY_US', 'EBAY_GB', 'EBAY_DE', 'EBAY_CA', 'EBAY_AU'])[1 + i % 5],
    (ARRAY[0, 3, 77, 2, 15])[1 + i % 5],
    (ARRAY['US', 'UK', 'Germany', 'Canada', 'Australia'])[1 + i % 5],
    i % 50 <> 0, now() - interval '30 days', CASE WHEN i % 50 = 0 THEN now() END,
    now() - (i % 900) * interval '1 second',
    CASE WHEN i % 40 = 0 THEN 'unhealthy' ELSE 'healthy' END,
    100 + i % 200
FROM generate_series(1, :count) AS i;
INSERT INTO ebay_tokens (account_id, access_token_ct, refresh_token_ct, key_id, access_expires_at,
    refresh_expires_at, scopes, last_refreshed_at, last_refresh_error, reconnect_required_at,
    refresh_enabled, version)
SELECT md5(:name || ':' || i)::uuid, decode(repeat(md5(i::text), 6), 'hex'),
    decode(repeat(md5(i::text || 'r'), 6), 'hex'), 'k1',
    now() + CASE WHEN i % 20 = 0 THEN interval '5 minutes'
                 WHEN i % 33 = 0 THEN interval '-5 minutes'
                 ELSE (i % 7200) * interval '1 second' + interval '15 minutes' END,
    now() + interval '500 days', ARRAY['https://api.ebay.com/oauth/api_scope'],
    now() - interval '1 hour', CASE WHEN i % 97 = 0 THEN 'eBay answered 503' END,
    CASE WHEN i % 100 = 7 THEN now() END, i % 50 <> 0 AND i % 100 <> 7, 1 + i % 5
FROM generate_series(1, :count) AS i;
"""


# Candidate indexes for the listing's keyset pagination (not in the schema yet: measured here).
async def seed(url: str, accounts: int) -> str:
    engine = create_engine(DatabaseSettings(url=SecretStr(url)), "bench")
    big = str(uuid.uuid4())
    async with engine.begin() as conn:
        orgs = [(big, "bench-big", accounts)] + [
            (str(uuid.uuid4()), f"bench-{n}", 1000) for n in range(20)
        ]
        for org, name, count in orgs:
            for statement in SEED_SQL.strip().split(";\n"):
                await conn.execute(text(statement), {"org": org, "name": name, "count": count})
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    await engine.dispose()
    return big


async def timed(call: Callable[[], Awaitable[httpx.Response]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = await call()
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code < 300, response.text
    return samples


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"p50 {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms"


async def run(url: str, args: argparse.Namespace) -> None:
    secret = "bench-" + "s" * 40
    settings = ApiSettings(
        env="development",
        database={"url": SecretStr(url), "pool_size": 5},
        nats={"url": f"nats://127.0.0.1:{free_port()}"},
        token_keys=SecretStr(f"k1:{base64.b64encode(os.urandom(32)).decode()}"),
        ebay=EbaySettings(local_base_url="http://127.0.0.1:9"),
        api={"jwt": {"dev_secret": SecretStr(secret)}},
        log_level="WARNING",
    )
    app = create_app(settings, telemetry=setup_telemetry(settings.otel, "bench", set_global=False))
    auth = {
        "Authorization": "Bearer "
        + mint_dev_token(secret, org="bench-big", role="admin", subject="bench")
    }
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")
        first = (await client.get("/ebay-accounts", params={"limit": 50}, headers=auth)).json()
        some_id = first["items"][0]["id"]
        state = app.state.connector
        query = "||||house_name"
        middle = state.cursors.encode(query, ["house-0050000", str(uuid.uuid4())])

        def get(path: str, **params: str | int) -> Callable[[], Awaitable[httpx.Response]]:
            return lambda: client.get(path, params=params, headers=auth)

        counter = iter(range(10**9))

        def rename() -> Awaitable[httpx.Response]:
            return client.patch(
                f"/ebay-accounts/{some_id}",
                json={"house_name": f"renamed-{next(counter)}"},
                headers=auth,
            )

        scenarios: list[tuple[str, Callable[[], Awaitable[httpx.Response]]]] = [
            ("list, first page (50, by house name)", get("/ebay-accounts", limit=50)),
            ("list, page in the middle (cursor)", get("/ebay-accounts", limit=50, cursor=middle)),
            ("list, 200 per page", get("/ebay-accounts", limit=200)),
            (
                "list, sort by token expiry",
                get("/ebay-accounts", limit=50, sort="token_expires_at"),
            ),
            (
                "list, status=reconnect_required (1 %)",
                get("/ebay-accounts", status="reconnect_required"),
            ),
            ("list, status=expiring_soon (5 %)", get("/ebay-accounts", status="expiring_soon")),
            ("list, marketplace=EBAY_GB (20 %)", get("/ebay-accounts", marketplace="EBAY_GB")),
            ("get one account", get(f"/ebay-accounts/{some_id}")),
            ("rename (write, audit, outbox)", rename),
        ]
        others = "20,000 in 20 other orgs"
        print(f"\n{args.accounts:,} accounts in the org, {others}; {args.requests} requests each")
        for name, call in scenarios:
            await timed(call, 5)  # warm-up
            print(f"  {name:<42} {summary(await timed(call, args.requests))}")
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--revision",
        default="head",
        help="migrate only this far (e.g. 0001, before the keyset indexes) to compare schemas",
    )
    args = parser.parse_args()
    configure_logging("CRITICAL", "console")  # the numbers only (NATS is down on purpose)
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pg")
        postgres.start()
        try:
            migrate.upgrade(postgres.url, args.revision)
            started = time.perf_counter()
            asyncio.run(seed(postgres.url, args.accounts))
            print(f"seeded in {time.perf_counter() - started:.1f} s")
            asyncio.run(run(postgres.url, args))
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
