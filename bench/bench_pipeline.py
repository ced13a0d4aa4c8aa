"""How many token refreshes per second the pipeline sustains with 1,000 due accounts.

Everything is real and runs as its own process, as in production: embedded PostgreSQL and NATS
JetStream, the eBay sandbox (``connector sandbox``), one ``connector scheduler`` and N
``connector token-refresher`` replicas. The benchmark seeds 1,000 sandbox sellers with real
consents and code exchanges, stores their tokens encrypted, makes every access token due, starts
the services and waits until every account has been refreshed.

Measured: the sustained rate between the first and the last refresh written to PostgreSQL
(``last_refreshed_at``, one clock), and the wall time from "services ready" to "all done"
(includes the scheduler's first tick). Each run also checks, from the sandbox's call log, that
exactly one refresh call was made per account.

    .venv/bin/python -m bench.bench_pipeline [--accounts 1000] [--refreshers 1 2 4]
                                             [--concurrency 32] [--no-fsync]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import text

from connector_common import migrate
from connector_common.crypto import TokenCipher
from connector_common.db.engine import create_engine
from connector_common.messaging import Topology, connect
from connector_common.provisioning import provision
from connector_common.settings import DatabaseSettings, NatsSettings, parse_key_ring
from connector_devstack.embedded import EmbeddedNats, EmbeddedPostgres, free_port

CLIENT_ID = "bench-app"
CLIENT_SECRET = "bench-secret-not-for-production"  # a throwaway app in a local sandbox
RU_NAME = "bench-runame"
SCOPES = [
    "https://api.ebay.com/oauth/api_scope",
    "https://api.ebay.com/oauth/api_scope/sell.account",
]
SITES = (0, 3, 77, 2, 15, 100)


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "connector_cli", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def seed_sellers(base: str, count: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``count`` sellers, each consented and exchanged: (seller, token answer)."""
    seeded = []
    with httpx.Client(base_url=base, timeout=10) as http:
        for index in range(count):
            seller = http.post(
                "/_sandbox/sellers",
                json={"username": f"bench_{index:05d}", "site_id": SITES[index % len(SITES)]},
            ).json()
            code = http.post(
                "/_sandbox/consent",
                json={"seller": seller["username"], "client_id": CLIENT_ID, "scopes": SCOPES},
            ).json()["code"]
            answer = http.post(
                "/identity/v1/oauth2/token",
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": RU_NAME},
                auth=(CLIENT_ID, CLIENT_SECRET),
            )
            answer.raise_for_status()
            seeded.append((seller, answer.json()))
    return seeded


async def store_accounts(
    database_url: str, cipher: TokenCipher, seeded: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """The rows the connect flow writes, tokens encrypted."""
    engine = create_engine(DatabaseSettings(url=SecretStr(database_url)), "bench")
    async with engine.begin() as conn:
        org = (
            await conn.execute(
                text(
                    "INSERT INTO organisations (id, external_id, name) "
                    "VALUES (gen_random_uuid(), 'bench', 'bench') RETURNING id"
                )
            )
        ).scalar_one()
        accounts, tokens = [], []
        for seller, answer in seeded:
            account_id = uuid.uuid4()
            accounts.append(
                {
                    "id": account_id,
                    "org": org,
                    "house": seller["username"],
                    "user_id": seller["user_id"],
                    "username": seller["username"],
                    "marketplace": seller["marketplace_id"],
                    "site_id": seller["site_id"],
                    "site_code": seller["site_code"],
                }
            )
            tokens.append(
                {
                    "id": account_id,
                    "access": cipher.encrypt(answer["access_token"], account_id, "access_token"),
                    "refresh": cipher.encrypt(answer["refresh_token"], account_id, "refresh_token"),
                    "key_id": cipher.primary_key_id,
                    "scopes": SCOPES,
                }
            )
        await conn.execute(
            text(
                "INSERT INTO ebay_accounts (id, org_id, house_name, ebay_user_id, username, "
                "marketplace_id, site_id, site_code, connected_at) VALUES (:id, :org, :house, "
                ":user_id, :username, :marketplace, :site_id, :site_code, now())"
            ),
            accounts,
        )
        await conn.execute(
            text(
                "INSERT INTO ebay_tokens (account_id, access_token_ct, refresh_token_ct, key_id, "
                "access_expires_at, scopes) VALUES (:id, :access, :refresh, :key_id, "
                "now() + interval '1 hour', :scopes)"
            ),
            tokens,
        )
    await engine.dispose()


async def make_all_due(database_url: str) -> None:
    """Every token due (expires in one minute, inside the 10-minute lead), nothing requested."""
    engine = create_engine(DatabaseSettings(url=SecretStr(database_url)), "bench")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE ebay_tokens SET access_expires_at = now() + interval '1 minute', "
                "refresh_requested_at = NULL, retry_at = NULL"
            )
        )
    await engine.dispose()


async def progress(database_url: str, since: float) -> tuple[int, float | None, float | None]:
    """How many tokens were refreshed after ``since``, and the first/last refresh times."""
    engine = create_engine(DatabaseSettings(url=SecretStr(database_url)), "bench")
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*), extract(epoch FROM min(last_refreshed_at)), "
                    "extract(epoch FROM max(last_refreshed_at)) FROM ebay_tokens "
                    "WHERE last_refreshed_at > to_timestamp(:since)"
                ),
                {"since": since},
            )
        ).one()
    await engine.dispose()
    return int(row[0]), (float(row[1]) if row[1] else None), (float(row[2]) if row[2] else None)


ROLES = ("token-refresher", "scheduler", "sandbox", "postgres", "nats-server")


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) so far of this benchmark's processes, by role (/proc).

    Only descendants of this process count: other work on the machine is not ours.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, str, float]] = {}  # pid -> (parent, cmdline, cpu seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (
            int(fields[1]),
            cmdline,
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    usage: dict[str, float] = defaultdict(float)
    for pid, (_parent, cmdline, cpu) in stats.items():
        ancestor, ours = pid, False
        while ancestor in stats and ancestor > 1:
            if ancestor == os.getpid():
                ours = True
                break
            ancestor = stats[ancestor][0]
        if not ours:
            continue
        role = next((r for r in ROLES if r in cmdline), None)
        if pid == os.getpid():
            role = "benchmark"
        elif role is None and "postgres" in _ancestry(stats, pid):
            role = "postgres"
        if role is not None:
            usage[role] += cpu
    return usage


def _ancestry(stats: dict[int, tuple[int, str, float]], pid: int) -> str:
    names = []
    while pid in stats and pid > 1:
        names.append(stats[pid][1])
        pid = stats[pid][0]
    return " ".join(names)


def run_once(
    env: dict[str, str],
    logs: Path,
    database_url: str,
    sandbox: str,
    accounts: int,
    refreshers: int,
    concurrency: int,
) -> dict[str, Any]:
    asyncio.run(make_all_due(database_url))
    since = time.time()
    processes: list[subprocess.Popen[bytes]] = []
    probes: list[int] = []
    try:
        for index in range(refreshers):
            port = free_port()
            probes.append(port)
            processes.append(
                start(
                    ["token-refresher"],
                    {
                        **env,
                        "CONNECTOR_PROBE_PORT": str(port),
                        "CONNECTOR_WORKER__CONCURRENCY": str(concurrency),
                    },
                    logs / f"refresher-{refreshers}-{index}.log",
                )
            )
        for port in probes:
            wait_http(f"http://127.0.0.1:{port}/readyz")
        port = free_port()
        processes.append(
            start(["scheduler"], {**env, "CONNECTOR_PROBE_PORT": str(port)}, logs / "sched.log")
        )
        wait_http(f"http://127.0.0.1:{port}/readyz")
        ready = time.time()
        cpu_before = cpu_by_role()
        deadline = time.monotonic() + 600
        while True:
            done, first, last = asyncio.run(progress(database_url, since))
            if done >= accounts:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done}/{accounts} refreshed in 10 minutes")
            time.sleep(0.2)
        finished = time.time()
        cpu_after = cpu_by_role()
    finally:
        stop(processes)
    calls = httpx.get(
        f"{sandbox}/_sandbox/calls", params={"route": "token", "since": str(since)}, timeout=30
    ).json()["calls"]
    per_seller = Counter(
        c["seller"] for c in calls if c["status"] == 200 and c.get("outcome") == "refreshed"
    )
    assert first is not None
    assert last is not None
    span = max(last - first, 1e-3)
    return {
        "refreshers": refreshers,
        "concurrency_per_refresher": concurrency,
        "accounts": accounts,
        "sustained_refreshes_per_second": round((accounts - 1) / span, 1),
        "first_to_last_refresh_seconds": round(span, 2),
        "ready_to_all_done_seconds": round(finished - ready, 2),
        "end_to_end_refreshes_per_second": round(accounts / (finished - ready), 1),
        "refresh_calls": sum(per_seller.values()),
        "accounts_refreshed_more_than_once": sum(1 for n in per_seller.values() if n > 1),
        "cpu_ms_per_refresh": {
            role: round((cpu_after[role] - cpu_before[role]) * 1000 / accounts, 2)
            for role in (*ROLES, "benchmark")
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--refreshers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--no-fsync", dest="fsync", action="store_false", help="PostgreSQL without fsync"
    )
    args = parser.parse_args()
    keys = f"bench:{base64.b64encode(os.urandom(32)).decode()}"
    cipher = TokenCipher(parse_key_ring(keys))
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipeline-")))
        postgres = EmbeddedPostgres(
            data / "pg", log_path=data / "pg.log", fast_unsafe=not args.fsync
        )
        nats = EmbeddedNats(data / "nats", log_path=data / "nats.log")
        postgres.start()
        stack.callback(postgres.stop)
        nats.start()
        stack.callback(nats.stop)
        migrate.upgrade(postgres.url)

        async def declare() -> None:
            client = await connect(NatsSettings(url=nats.url), "bench")
            await provision(client.jetstream(), Topology("ebay"))  # the workers only bind
            await client.drain()

        asyncio.run(declare())
        sandbox_port = free_port()
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        sandbox_process = start(
            [
                "sandbox",
                "--port",
                str(sandbox_port),
                "--client-id",
                CLIENT_ID,
                "--ru-name",
                RU_NAME,
                "--accept-url",
                "http://127.0.0.1:9/callback",
                "--no-demo-sellers",
                "--log-level",
                "warning",
            ],
            {**os.environ, "EBAY_SANDBOX_CLIENT_SECRET": CLIENT_SECRET},
            data / "sandbox.log",
        )
        stack.callback(stop, [sandbox_process])
        wait_http(f"{sandbox}/_sandbox/health")
        seeding = time.monotonic()
        asyncio.run(store_accounts(postgres.url, cipher, seed_sellers(sandbox, args.accounts)))
        print(f"seeded {args.accounts} accounts in {time.monotonic() - seeding:.1f}s", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
        env.update(
            {
                "CONNECTOR_ENV": "test",
                "CONNECTOR_LOG_LEVEL": "WARNING",
                "CONNECTOR_DATABASE__URL": postgres.url,
                "CONNECTOR_NATS__URL": nats.url,
                "CONNECTOR_TOKEN_KEYS": keys,
                "CONNECTOR_EBAY__ENVIRONMENT": "local",
                "CONNECTOR_EBAY__LOCAL_BASE_URL": sandbox,
                "CONNECTOR_EBAY__CLIENT_ID": CLIENT_ID,
                "CONNECTOR_EBAY__CLIENT_SECRET": CLIENT_SECRET,
                "CONNECTOR_EBAY__RU_NAME": RU_NAME,
                "CONNECTOR_EBAY__SCOPES": json.dumps(SCOPES),
                "CONNECTOR_PIPELINE__SCHEDULER_TICK_SECONDS": "1",
                "CONNECTOR_PIPELINE__SCHEDULER_BATCH_SIZE": "500",
            }
        )
        for refreshers in args.refreshers:
            result = run_once(
                env, data, postgres.url, sandbox, args.accounts, refreshers, args.concurrency
            )
            print(json.dumps(result), flush=True)
            results.append(result)
    print(
        json.dumps(
            {
                "results": results,
                "python": platform.python_version(),
                "cpus": os.cpu_count() or 0,
                "machine": platform.machine(),
                "postgres_fsync": args.fsync,
            },
            indent=2,
        )
    )
    clean = all(r["accounts_refreshed_more_than_once"] == 0 for r in results)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
