"""The whole system as real processes, for benchmarks and the fault suite.

Embedded PostgreSQL and NATS (killable and restartable on the same ports and data), the eBay
sandbox (``connector sandbox``, its own process, so its call log outlives every other process),
sellers seeded with real consents and code exchanges, their accounts and encrypted tokens in
PostgreSQL, and any number of ``connector <service>`` processes with one environment.

CPU is read from ``/proc`` for this process's descendants only, by role, so other work on the
machine is not counted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass
class Proc:
    """One service process."""

    role: str
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_http(
    url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until ``url`` answers 200 (fails early when ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@dataclass
class Cluster:
    """Embedded PostgreSQL + NATS, the sandbox, and service processes, under ``root``."""

    root: Path
    fsync: bool = True
    namespace: str = "ebay"
    keys: str = field(default_factory=lambda: f"bench:{base64.b64encode(os.urandom(32)).decode()}")
    postgres: EmbeddedPostgres = field(init=False)
    nats: EmbeddedNats = field(init=False)
    sandbox: Proc | None = field(default=None, init=False)
    services: list[Proc] = field(default_factory=list, init=False)
    refresh_tokens: list[str] = field(default_factory=list, init=False)  # plain, for baselines

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(
            self.root / "pg", log_path=self.root / "pg.log", fast_unsafe=not self.fsync
        )
        self.nats = EmbeddedNats(self.root / "nats", log_path=self.root / "nats.log")

    # --- infrastructure -----------------------------------------------------------------------

    def start(self) -> None:
        """PostgreSQL (migrated), NATS (streams declared) and the sandbox."""
        self.postgres.start()
        self.nats.start()
        migrate.upgrade(self.postgres.url)
        asyncio.run(self._declare())
        port = free_port()
        self.sandbox = self._spawn(
            "sandbox",
            "sandbox",
            [
                "sandbox",
                "--port",
                str(port),
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
            port,
        )
        wait_http(f"{self.sandbox_url}/_sandbox/health", process=self.sandbox.process)

    async def _declare(self) -> None:
        client = await connect(NatsSettings(url=self.nats.url), "bench")
        # What the provisioning Job does: the services only bind to streams and consumers.
        await provision(client.jetstream(), Topology(self.namespace))
        await client.drain()

    def stop(self) -> None:
        """Every service (SIGTERM, then SIGKILL after 30 s), the sandbox, NATS, PostgreSQL."""
        self.stop_services()
        if self.sandbox is not None:
            _terminate([self.sandbox])
        self.nats.stop()
        self.postgres.stop()

    @property
    def sandbox_url(self) -> str:
        assert self.sandbox is not None
        return self.sandbox.url

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def kill_nats(self) -> None:
        """SIGKILL nats-server (its data stays for the restart)."""
        pid = self.nats.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert self.nats._process is not None
        self.nats._process.wait(10)
        self.nats._process = None

    def restart_nats(self) -> None:
        """nats-server again, on the same ports and data folder."""
        self.nats.start()

    def kill_postgres(self) -> None:
        """SIGKILL the postmaster (its backends notice and exit; no checkpoint)."""
        pid = self.postgres.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert self.postgres._process is not None
        self.postgres._process.wait(10)
        self.postgres._process = None

    def restart_postgres(self) -> None:
        """PostgreSQL again (crash recovery), on the same port and data folder."""
        deadline = time.monotonic() + 30
        while True:  # orphaned backends hold the port and shared memory for a moment
            try:
                self.postgres.start()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # --- sellers and accounts -----------------------------------------------------------------

    def seed(self, count: int, prefix: str = "bench") -> dict[uuid.UUID, str]:
        """``count`` sandbox sellers with real consents and code exchanges, and their accounts
        and encrypted tokens in PostgreSQL; returns account id -> seller username."""
        seeded = asyncio.run(_seed_sellers(self.sandbox_url, count, prefix))
        self.refresh_tokens = [answer["refresh_token"] for _seller, answer in seeded]
        return asyncio.run(self._store_accounts(seeded))

    async def _store_accounts(
        self, seeded: list[tuple[dict[str, Any], dict[str, Any]]]
    ) -> dict[uuid.UUID, str]:
        cipher = TokenCipher(parse_key_ring(self.keys))
        engine = create_engine(DatabaseSettings(url=SecretStr(self.database_url)), "bench")
        accounts: dict[uuid.UUID, str] = {}
        try:
            async with engine.begin() as conn:
                org = (
                    await conn.execute(
                        text(
                            "INSERT INTO organisations (id, external_id, name) "
                            "VALUES (gen_random_uuid(), :name, :name) "
                            "ON CONFLICT (external_id) DO UPDATE SET name = excluded.name "
                            "RETURNING id"
                        ),
                        {"name": "bench"},
                    )
                ).scalar_one()
                rows, tokens = [], []
                for seller, answer in seeded:
                    account_id = uuid.uuid4()
                    accounts[account_id] = seller["username"]
                    rows.append(
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
                            "access": cipher.encrypt(
                                answer["access_token"], account_id, "access_token"
                            ),
                            "refresh": cipher.encrypt(
                                answer["refresh_token"], account_id, "refresh_token"
                            ),
                            "key_id": cipher.primary_key_id,
                            "scopes": SCOPES,
                        }
                    )
                await conn.execute(
                    text(
                        "INSERT INTO ebay_accounts (id, org_id, house_name, ebay_user_id, "
                        "username, marketplace_id, site_id, site_code, connected_at) VALUES "
                        "(:id, :org, :house, :user_id, :username, :marketplace, :site_id, "
                        ":site_code, now())"
                    ),
                    rows,
                )
                await conn.execute(
                    text(
                        "INSERT INTO ebay_tokens (account_id, access_token_ct, refresh_token_ct, "
                        "key_id, access_expires_at, scopes) VALUES (:id, :access, :refresh, "
                        ":key_id, now() + interval '2 hours', :scopes)"
                    ),
                    tokens,
                )
        finally:
            await engine.dispose()
        return accounts

    def sql(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; the rows it returned (if any)."""

        async def run() -> list[tuple[Any, ...]]:
            engine = create_engine(DatabaseSettings(url=SecretStr(self.database_url)), "bench")
            try:
                async with engine.begin() as conn:
                    result = await conn.execute(text(statement), params)
                    return [tuple(r) for r in result] if result.returns_rows else []
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def make_all_due(self) -> None:
        """Every token due now (expires in a minute, inside any lead), nothing requested."""
        self.sql(
            "UPDATE ebay_tokens SET access_expires_at = now() + interval '1 minute', "
            "refresh_requested_at = NULL, retry_at = NULL, consecutive_failures = 0, "
            "last_refresh_error = NULL"
        )

    # --- sandbox control ----------------------------------------------------------------------

    def fault(self, route: str, kind: str, **options: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.sandbox_url}/_sandbox/faults",
            json={"route": route, "kind": kind, **options},
            timeout=10,
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def clear_faults(self) -> None:
        httpx.delete(f"{self.sandbox_url}/_sandbox/faults", timeout=10).raise_for_status()

    def calls(self, route: str = "token", since: float | None = None) -> list[dict[str, Any]]:
        params = {"route": route}
        if since is not None:
            params["since"] = str(since)
        response = httpx.get(f"{self.sandbox_url}/_sandbox/calls", params=params, timeout=60)
        response.raise_for_status()
        calls: list[dict[str, Any]] = response.json()["calls"]
        return calls

    # --- services -----------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """The environment every service process gets."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
        env.update(
            {
                "CONNECTOR_ENV": "test",
                "CONNECTOR_LOG_LEVEL": "WARNING",
                "CONNECTOR_LOG_FORMAT": "json",
                "CONNECTOR_DATABASE__URL": self.database_url,
                "CONNECTOR_NATS__URL": self.nats.url,
                "CONNECTOR_NATS__NAMESPACE": self.namespace,
                "CONNECTOR_TOKEN_KEYS": self.keys,
                "CONNECTOR_EBAY__ENVIRONMENT": "local",
                "CONNECTOR_EBAY__LOCAL_BASE_URL": self.sandbox_url,
                "CONNECTOR_EBAY__CLIENT_ID": CLIENT_ID,
                "CONNECTOR_EBAY__CLIENT_SECRET": CLIENT_SECRET,
                "CONNECTOR_EBAY__RU_NAME": RU_NAME,
                "CONNECTOR_EBAY__SCOPES": json.dumps(SCOPES),
                "CONNECTOR_PIPELINE__SCHEDULER_TICK_SECONDS": "1",
            }
        )
        env.update(extra)
        return env

    def start_service(self, service: str, **env: str) -> Proc:
        """``connector <service>`` with the cluster's environment plus ``env``."""
        port = free_port()
        index = sum(1 for s in self.services if s.role == service)
        name = f"{service}-{index}"
        proc = self._spawn(
            service, name, [service], self.env(CONNECTOR_PROBE_PORT=str(port), **env), port
        )
        self.services.append(proc)
        return proc

    def ready(self, *procs: Proc, timeout: float = 60.0) -> None:
        for proc in procs:
            wait_http(f"{proc.url}/readyz", timeout, proc.process)

    def stop_services(self, timeout: float = 30.0) -> None:
        _terminate([s for s in self.services if s.alive()], timeout)

    def _spawn(self, role: str, name: str, argv: list[str], env: dict[str, str], port: int) -> Proc:
        log_path = self.root / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "connector_cli", *argv],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return Proc(role, name, process, log_path, port)


def _terminate(procs: list[Proc], timeout: float = 30.0) -> None:
    for proc in procs:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        if proc.wait(max(0.1, deadline - time.monotonic())) is None:
            proc.signal(signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def running_cluster(root: Path, *, fsync: bool = True) -> Iterator[Cluster]:
    """A started :class:`Cluster`, stopped on exit."""
    cluster = Cluster(root, fsync=fsync)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def _seed_sellers(
    base: str, count: int, prefix: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    gate = asyncio.Semaphore(16)

    async def one(http: httpx.AsyncClient, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
        async with gate:
            seller = (
                await http.post(
                    "/_sandbox/sellers",
                    json={
                        "username": f"{prefix}_{index:06d}",
                        "site_id": SITES[index % len(SITES)],
                    },
                )
            ).json()
            code = (
                await http.post(
                    "/_sandbox/consent",
                    json={"seller": seller["username"], "client_id": CLIENT_ID, "scopes": SCOPES},
                )
            ).json()["code"]
            answer = await http.post(
                "/identity/v1/oauth2/token",
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": RU_NAME},
                auth=(CLIENT_ID, CLIENT_SECRET),
            )
            answer.raise_for_status()
            return seller, answer.json()

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        return list(await asyncio.gather(*(one(http, i) for i in range(count))))
