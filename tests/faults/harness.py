"""A refresh burst on the whole system as real processes, and what it left behind.

:func:`burst` starts refreshers and schedulers on a :class:`bench.cluster.Cluster`, makes every
account due at once, lets a scenario do its harm while the burst runs, waits until every
account is refreshed (or a deadline), stops the services, and counts from the sandbox's call
log and from PostgreSQL:

* ``lost``: accounts whose token was not refreshed;
* ``double_writes``: accounts whose token was written more than once, or announced by more than
  one ``token.refreshed`` event;
* ``repeated_calls``: accounts eBay refreshed more than once (a call whose answer died with its
  process is repeated by the replica that takes the work over: counted, not a failure);
* ``wrongly_errored``: accounts left with an error, needing a reconnect or switched off, and
  refresh work dead-lettered, although nothing was wrong with them;
* ``drain_seconds``: from "made due" to the last refresh written.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.cluster import Cluster, Proc
from connector_common.messaging import Topology, connect
from connector_common.settings import NatsSettings

TIMEOUT = 240.0


@dataclass
class Burst:
    """One burst in progress: what a scenario may act on."""

    cluster: Cluster
    refreshers: list[Proc]
    schedulers: list[Proc]
    t0: float  # PostgreSQL's clock when every account was made due
    env: dict[str, str]
    notes: dict[str, Any] = field(default_factory=dict)

    def refreshed(self) -> int:
        """Accounts refreshed since the burst began (-1 while PostgreSQL does not answer)."""
        try:
            rows = query(
                self.cluster,
                "SELECT count(*) FROM ebay_tokens WHERE last_refreshed_at >= to_timestamp(%s)",
                self.t0,
            )
        except psycopg.OperationalError:
            return -1
        return int(rows[0][0])

    def wait_refreshed(self, count: int, timeout: float = 60.0) -> None:
        """Until at least ``count`` accounts are refreshed (then the scenario strikes)."""
        deadline = time.monotonic() + timeout
        while self.refreshed() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} refreshed within {timeout:.0f}s")
            time.sleep(0.02)

    def restart_refresher(self, dead: Proc) -> Proc:
        self.refreshers.remove(dead)
        fresh = self.cluster.start_service("token-refresher", **self.env)
        self.refreshers.append(fresh)
        return fresh


@dataclass
class Outcome:
    scenario: str
    accounts: int
    lost: int
    double_writes: int
    repeated_calls: int
    wrongly_errored: int
    drain_seconds: float
    notes: dict[str, Any]

    def line(self) -> str:
        return json.dumps(
            {
                "scenario": self.scenario,
                "accounts": self.accounts,
                "lost": self.lost,
                "double_writes": self.double_writes,
                "repeated_calls": self.repeated_calls,
                "wrongly_errored": self.wrongly_errored,
                "drain_seconds": self.drain_seconds,
                **self.notes,
            }
        )

    def check(self) -> None:
        assert (self.lost, self.double_writes, self.wrongly_errored) == (0, 0, 0), self.line()


def dsn(cluster: Cluster) -> str:
    return cluster.database_url.replace("postgresql+psycopg://", "postgresql://")


def query(cluster: Cluster, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """One statement on its own short connection (PostgreSQL may be killed between calls)."""
    with psycopg.connect(dsn(cluster), autocommit=True, connect_timeout=3) as db:
        cursor = db.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def burst(
    cluster: Cluster,
    scenario: str,
    *,
    refreshers: int = 2,
    schedulers: int = 1,
    latency_ms: float = 20.0,
    env: dict[str, str] | None = None,
    during: Callable[[Burst], None] | None = None,
    faults: Callable[[Cluster], None] | None = None,
    timeout: float = TIMEOUT,
) -> Outcome:
    """One burst of every account due at once, with ``during`` striking while it runs."""
    env = {"CONNECTOR_PIPELINE__SCHEDULER_TICK_SECONDS": "0.25", **(env or {})}
    cluster.stop_services()
    cluster.clear_faults()
    asyncio.run(_purge_work(cluster))
    if faults is not None:
        faults(cluster)  # first: the sandbox applies the first fault that fires
    if latency_ms:
        cluster.fault("token", "latency", latency_ms=latency_ms)
    procs = [cluster.start_service("token-refresher", **env) for _ in range(refreshers)]
    leaders = [cluster.start_service("scheduler", **env) for _ in range(schedulers)]
    cluster.ready(*procs, *leaders)
    dlq_before = asyncio.run(_dlq_count(cluster))
    with psycopg.connect(dsn(cluster), autocommit=True) as db:
        before: dict[Any, int] = dict(
            db.execute("SELECT account_id, version FROM ebay_tokens").fetchall()
        )
        row = db.execute(
            "UPDATE ebay_tokens SET access_expires_at = now() + interval '1 minute', "
            "refresh_requested_at = NULL, retry_at = NULL RETURNING extract(epoch FROM now())"
        ).fetchone()
        assert row is not None
        t0 = float(row[0])
    run = Burst(cluster, procs, leaders, t0, env)
    if during is not None:
        during(run)
    accounts = len(before)
    deadline = time.monotonic() + timeout
    while run.refreshed() < accounts and time.monotonic() < deadline:
        time.sleep(0.1)
    with psycopg.connect(dsn(cluster), autocommit=True) as db:
        _wait_outbox(db, t0)
        after: dict[Any, int] = dict(
            db.execute("SELECT account_id, version FROM ebay_tokens").fetchall()
        )
        last = db.execute(
            "SELECT extract(epoch FROM max(last_refreshed_at)) FROM ebay_tokens"
        ).fetchone()
        errored = db.execute(
            "SELECT count(*) FROM ebay_tokens WHERE last_refresh_error IS NOT NULL "
            "OR reconnect_required_at IS NOT NULL OR NOT refresh_enabled"
        ).fetchone()
        events = Counter(
            r[0]
            for r in db.execute(
                "SELECT payload::jsonb->>'account_id' FROM outbox "
                "WHERE subject LIKE '%%.token.refreshed' AND created_at >= to_timestamp(%s)",
                (t0,),
            ).fetchall()
        )
    cluster.stop_services()
    calls = cluster.calls("token", since=t0)
    # Refresh grants only (a scheduler also takes an application token for eBay's limits).
    granted = Counter(
        c["seller"] for c in calls if c["status"] == 200 and c.get("outcome") == "refreshed"
    )
    dead_lettered = asyncio.run(_dlq_count(cluster)) - dlq_before
    run.notes.setdefault("refresh_calls", len(calls))
    return Outcome(
        scenario=scenario,
        accounts=accounts,
        lost=sum(1 for a, v in after.items() if v == before[a]),
        double_writes=sum(1 for a, v in after.items() if v > before[a] + 1)
        + sum(1 for n in events.values() if n > 1),
        repeated_calls=sum(n - 1 for n in granted.values() if n > 1),
        wrongly_errored=int(errored[0] if errored else 0) + dead_lettered,
        drain_seconds=round(float(last[0]) - t0, 2) if last and last[0] else float("inf"),
        notes=run.notes,
    )


def _wait_outbox(db: psycopg.Connection[Any], t0: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL "
            "AND created_at >= to_timestamp(%s)",
            (t0,),
        ).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.1)


async def _purge_work(cluster: Cluster) -> None:
    client = await connect(NatsSettings(url=cluster.nats.url), "faults")
    try:
        await client.jetstream().purge_stream(Topology(cluster.namespace).work_stream)
    finally:
        await client.close()


async def _dlq_count(cluster: Cluster) -> int:
    client = await connect(NatsSettings(url=cluster.nats.url), "faults")
    try:
        info = await client.jetstream().stream_info(Topology(cluster.namespace).dlq_stream)
        return int(info.state.messages)
    finally:
        await client.close()


def lease_holders(cluster: Cluster, proc: Proc) -> list[tuple[str, int]]:
    """(account, lease epoch) of the refresh leases ``proc`` holds right now."""
    rows = query(
        cluster,
        "SELECT account_id::text, lease_epoch FROM ebay_tokens WHERE lease_owner LIKE %s "
        "AND lease_until > now()",
        f"%:{proc.process.pid}",
    )
    return [(r[0], int(r[1])) for r in rows]


def taken_over(cluster: Cluster, held: list[tuple[str, int]]) -> int:
    """How many of ``held`` someone else has claimed (or written) since: the epoch moved on."""
    rows = query(
        cluster,
        "SELECT count(*) FROM unnest(%s::uuid[], %s::bigint[]) AS h(account_id, epoch) "
        "JOIN ebay_tokens t USING (account_id) WHERE t.lease_epoch > h.epoch",
        [a for a, _ in held],
        [e for _, e in held],
    )
    return int(rows[0][0])


def log_lines(proc: Proc) -> list[str]:
    return [line for line in proc.log().splitlines() if line.strip()]


def non_json_lines(proc: Proc) -> list[str]:
    bad = []
    for line in log_lines(proc):
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return bad
