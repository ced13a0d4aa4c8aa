"""The production shape on one machine: a three-server NATS cluster (TLS, the chart's accounts,
an NKey user per service with only its permissions), R3 streams provisioned by
``connector nats provision``, PostgreSQL with the owner and the rows-only role of
deploy/postgres, and the pipeline running on it as real processes. One NATS server is killed
(SIGKILL) in the middle of a burst of refreshes: every account is still refreshed exactly once,
counted in the eBay sandbox's call log, and no server ever refused a service a permission.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from nats.errors import Error as NatsError
from pydantic import SecretStr
from sqlalchemy import func, select

from connector_common.crypto import TokenCipher
from connector_common.db.engine import create_engine, create_session_factory, unit_of_work
from connector_common.db.models import EbayToken
from connector_common.ebay import EbayClient
from connector_common.messaging import Topology, connect
from connector_common.settings import DatabaseSettings, NatsSettings, parse_key_ring
from tests.fixtures.infra import PostgresServer, database_with_roles, unique_name
from tests.fixtures.nats_cluster import NatsCluster, nats_cluster
from tests.fixtures.pipeline import eventually, make_org_row, seed_many
from tests.fixtures.sandbox import SandboxHandle
from tests.pipeline.conftest import BASE_TIMING, Fleet

pytestmark = pytest.mark.slow

ACCOUNTS = 160
# Slow eBay token calls and few handlers stretch the burst over several seconds, so that the
# server dies in the middle of it (checked below, not assumed).
TOKEN_LATENCY_MS = 200
TIMING = {
    **BASE_TIMING,
    "CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS": "400",
    "CONNECTOR_PIPELINE__SCHEDULER_BATCH_SIZE": "500",
    "CONNECTOR_WORKER__CONCURRENCY": "6",
    # Provisioned (the Job reads the same variables): a lost acknowledgement comes back soon.
    "CONNECTOR_WORKER__ACK_WAIT_SECONDS": "5",
}


def provision(cluster: NatsCluster, namespace: str) -> str:
    """`connector nats provision` as the Job runs it: the admin NKey, TLS, R3."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_NATS__URL": cluster.url,
            "CONNECTOR_NATS__NAMESPACE": namespace,
            "CONNECTOR_NATS__STREAM_REPLICAS": "3",
            "CONNECTOR_NATS__NKEY_SEED_FILE": str(cluster.seeds["provision"]),
            "CONNECTOR_NATS__TLS_CA_FILE": str(cluster.ca_file),
            **{k: v for k, v in TIMING.items() if k.startswith("CONNECTOR_WORKER__")},
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "connector_cli", "nats", "provision", "--wait", "60"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_a_nats_server_killed_mid_burst_loses_no_refresh_and_duplicates_none(
    tmp_path: Path,
    pg_server: PostgresServer,
    sandbox: SandboxHandle,
    token_keys: str,
    ebay_client: EbayClient,
) -> None:
    # The production namespace: the chart's permissions name its subjects and streams.
    namespace = "ebay"
    topology = Topology(namespace)
    database = database_with_roles(pg_server)
    owner = create_engine(DatabaseSettings(url=SecretStr(database.owner_url)), "tests")
    sessions = create_session_factory(owner)
    with nats_cluster(tmp_path / "nats") as cluster:
        provisioned = provision(cluster, namespace)
        for name in (topology.work_stream, topology.events_stream, topology.dlq_stream):
            assert f"stream {name}: created (R3)" in provisioned
        assert f"consumer {topology.refresher_durable}: created" in provisioned
        assert "unchanged" in provision(cluster, namespace)  # idempotent

        sandbox.settings(access_token_lifetime=300)
        org = await make_org_row(sessions, unique_name("org-"))
        cipher = TokenCipher(parse_key_ring(token_keys))
        accounts = await seed_many(sessions, cipher, ebay_client, sandbox, org, ACCOUNTS)
        sandbox.settings(access_token_lifetime=3600)
        sandbox.fault("token", "latency", latency_ms=TOKEN_LATENCY_MS)
        since = time.time()

        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
        env.update(
            {
                "CONNECTOR_ENV": "development",
                "CONNECTOR_LOG_FORMAT": "json",
                "CONNECTOR_DATABASE__URL": database.app_url,  # rows only
                "CONNECTOR_DATABASE__POOL_SIZE": "5",
                "CONNECTOR_NATS__URL": cluster.url,
                "CONNECTOR_NATS__NAMESPACE": namespace,
                "CONNECTOR_NATS__TLS_CA_FILE": str(cluster.ca_file),
                "CONNECTOR_TOKEN_KEYS": token_keys,
                "CONNECTOR_EBAY__ENVIRONMENT": "local",
                "CONNECTOR_EBAY__LOCAL_BASE_URL": sandbox.base_url,
                "CONNECTOR_EBAY__CLIENT_ID": sandbox.client_id,
                "CONNECTOR_EBAY__CLIENT_SECRET": sandbox.client_secret,
                "CONNECTOR_EBAY__RU_NAME": sandbox.ru_name,
                "CONNECTOR_EBAY__SCOPES": json.dumps(list(sandbox.scopes)),
                **TIMING,
            }
        )
        fleet = Fleet(env, tmp_path)
        try:

            def start(service: str, user: str) -> None:
                seed = str(cluster.seeds[user])
                extra = {"CONNECTOR_NATS__NKEY_SEED_FILE": seed}
                if service == "api":
                    extra["CONNECTOR_API__JWT__DEV_SECRET"] = secrets.token_urlsafe(32)
                    extra["CONNECTOR_API__SESSION_SECRET"] = secrets.token_urlsafe(32)
                fleet.start(service, **extra)

            start("token-refresher", "token-refresher")
            start("token-refresher", "token-refresher")
            start("health-checker", "health-checker")
            start("api", "api")
            await fleet.ready(*fleet.services, timeout=60)
            start("scheduler", "scheduler")
            await fleet.ready(*fleet.services, timeout=60)

            async def refreshed() -> int:
                async with unit_of_work(sessions) as session:
                    done = await session.scalar(
                        select(func.count()).select_from(EbayToken).where(EbayToken.version >= 2)
                    )
                return int(done or 0)

            async def some_refreshed() -> bool:
                return await refreshed() >= ACCOUNTS // 5

            await eventually(some_refreshed, timeout=60, what="the burst started")
            admin = NatsSettings(
                url=cluster.url,
                nkey_seed_file=str(cluster.seeds["provision"]),
                tls_ca_file=str(cluster.ca_file),
            )
            client = await connect(admin, "tests")
            try:
                info = await client.jetstream().stream_info(topology.work_stream)
                assert info.cluster is not None
                leader = info.cluster.leader
                assert leader is not None
                cluster.kill(leader)  # the WORK stream's leader, mid-burst
                killed_at = time.monotonic()
                at_kill = await refreshed()
                assert at_kill < ACCOUNTS, "the server died after the burst, not during it"

                async def all_refreshed() -> bool:
                    return await refreshed() == ACCOUNTS

                await eventually(all_refreshed, timeout=120, what="every account refreshed")
                print(
                    f"killed {leader} with {at_kill}/{ACCOUNTS} refreshed; the rest took "
                    f"{time.monotonic() - killed_at:.1f} s"
                )

                async def work_settled() -> bool:
                    try:
                        info = await client.jetstream(timeout=5).stream_info(topology.work_stream)
                    except (TimeoutError, NatsError):  # a new leader may still be settling
                        return False
                    return int(info.state.messages) == 0  # work queue: acked messages leave

                # Redeliveries of acknowledgements lost with the server (ack wait 5 s) have run.
                await eventually(work_settled, timeout=90, what="all work acknowledged")
            finally:
                await client.close()
            async with httpx.AsyncClient(timeout=5) as http:
                api = next(s for s in fleet.services if s.name.startswith("api"))

                async def api_reaches_jetstream() -> bool:
                    # Its readiness asks JetStream with a 2 s timeout: right after the kill,
                    # while the meta leader settles, that may say "unreachable" for a while.
                    return bool((await http.get(f"{api.url}/readyz")).json()["nats"] == "ok")

                # The API's user reaches JetStream through a survivor.
                await eventually(api_reaches_jetstream, timeout=60, what="the API sees JetStream")
        finally:
            fleet.stop_all()
            await owner.dispose()

        calls = sandbox.calls(route="token", since=since)
        # (a health checker's application token, for eBay's limits, is no refresh)
        refreshes = Counter(
            call["seller"]
            for call in calls
            if call["status"] == 200 and call["outcome"] == "refreshed"
        )
        assert set(refreshes) == set(accounts.values())
        assert set(refreshes.values()) == {1}, {s: n for s, n in refreshes.items() if n > 1}
        logs = cluster.logs()
        assert "Permissions Violation" not in logs, [
            line for line in logs.splitlines() if "Permissions Violation" in line
        ][:5]
        for service in fleet.services:
            assert "v^1.1#" not in service.log()
