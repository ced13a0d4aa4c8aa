"""The due queries walk their partial indexes: their cost follows the due rows, not the table."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from connector_scheduler.repository import due_health_query, due_refresh_query

ACCOUNTS = 5000
DUE = 10


@pytest.fixture
async def crowded(engine: AsyncEngine) -> AsyncEngine:
    """5,000 accounts, of which 10 are due for a refresh and 10 for a check; statistics fresh."""
    async with engine.begin() as conn:
        org = (
            await conn.execute(
                text(
                    "INSERT INTO organisations (id, external_id, name) "
                    "VALUES (gen_random_uuid(), 'bulk', 'bulk') RETURNING id"
                )
            )
        ).scalar_one()
        await conn.execute(
            text(
                """
                INSERT INTO ebay_accounts (id, org_id, house_name, ebay_user_id, marketplace_id,
                                           site_id, site_code, connected_at, next_health_check_at)
                SELECT gen_random_uuid(), :org, 'house-' || g, 'user-' || g, 'EBAY_US', 0, 'US',
                       now(),
                       CASE WHEN g <= :due THEN now() - interval '1 minute'
                            ELSE now() + g * interval '1 second' END
                  FROM generate_series(1, :n) AS g
                """
            ),
            {"org": org, "due": DUE, "n": ACCOUNTS},
        )
        await conn.execute(
            text(
                """
                INSERT INTO ebay_tokens (account_id, key_id, access_expires_at, refresh_enabled)
                SELECT id,
                       'k',
                       CASE WHEN substring(house_name from 7)::int <= :due
                            THEN now() + interval '1 minute'
                            ELSE now() + interval '2 hours' + random() * interval '1 hour' END,
                       substring(house_name from 7)::int % 50 <> 0
                  FROM ebay_accounts
                """
            ),
            {"due": DUE},
        )
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("ANALYZE ebay_accounts"))
        await autocommit.execute(text("ANALYZE ebay_tokens"))
    return engine


async def explain(conn: AsyncConnection, query: Select[*tuple[Any, ...]]) -> dict[str, Any]:
    compiled = query.compile(dialect=conn.dialect)
    result = await conn.exec_driver_sql(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), compiled.params
    )
    plan = result.scalar_one()
    return dict((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(nodes(child))
    return found


def index_scan(plan: dict[str, Any], index: str) -> dict[str, Any]:
    for node in nodes(plan):
        if node.get("Index Name") == index:
            return node
    raise AssertionError(f"the plan does not use {index}: {json.dumps(plan)[:2000]}")


async def test_due_refresh_query_walks_the_partial_index_and_reads_only_due_rows(
    crowded: AsyncEngine,
) -> None:
    async with crowded.begin() as conn:
        plan = await explain(
            conn, due_refresh_query(timedelta(minutes=10), timedelta(minutes=5), 500)
        )
        await conn.rollback()
    scan = index_scan(plan, "ix_ebay_tokens_access_expires_at_refresh_enabled")
    assert not any(
        n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "ebay_tokens"
        for n in nodes(plan)
    )
    assert scan["Actual Rows"] == DUE
    assert plan["Actual Rows"] == DUE


async def test_due_health_query_walks_the_partial_index_and_reads_only_due_rows(
    crowded: AsyncEngine,
) -> None:
    async with crowded.begin() as conn:
        plan = await explain(conn, due_health_query(timedelta(minutes=5), 500))
        await conn.rollback()
    scan = index_scan(plan, "ix_ebay_accounts_next_health_check_at")
    assert scan["Actual Rows"] == DUE
    assert plan["Actual Rows"] == DUE
