"""End-to-end fixtures: the services as real processes (``python -m connector_cli <service>``)
on this test's database, NATS namespace and sandbox, plus a small client for the API.

Each process logs JSON lines to a file under the test's ``tmp_path``; the last lines of every log
are printed at teardown, so a failing test shows what the services said.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.db.engine import SessionFactory, create_session_factory
from connector_common.messaging import Topology
from connector_devstack.embedded import free_port
from tests.fixtures.infra import provision_namespace
from tests.fixtures.sandbox import SandboxHandle

# Fast timing for tests; each test may override any of these.
BASE_TIMING = {
    "CONNECTOR_PIPELINE__SCHEDULER_TICK_SECONDS": "1",
    "CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS": "600",
    "CONNECTOR_PIPELINE__HEALTH_INTERVAL_SECONDS": "300",
    "CONNECTOR_PIPELINE__HEALTH_JITTER_SECONDS": "10",
    "CONNECTOR_PIPELINE__REQUEUE_SECONDS": "61",
    "CONNECTOR_WORKER__FETCH_TIMEOUT_SECONDS": "1",
    "CONNECTOR_WORKER__RETRY_BASE_SECONDS": "0.5",
    "CONNECTOR_WORKER__RETRY_MAX_SECONDS": "4",
    "CONNECTOR_WORKER__GRACEFUL_TIMEOUT_SECONDS": "20",
    "CONNECTOR_EBAY__READ_TIMEOUT_SECONDS": "5",
    "CONNECTOR_EBAY__MAX_RETRY_SECONDS": "2",
}


@dataclass
class Service:
    """One running service process."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int  # probe port (workers) or HTTP port (api)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` seconds (then the test fails)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not exit within {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return int(self.process.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Fleet:
    """Starts services with one environment and stops them all at the end."""

    base_env: dict[str, str]
    logs: Path
    services: list[Service] = field(default_factory=list)

    def start(self, service: str, *args: str, **env: str) -> Service:
        """Start ``connector <service> ARGS`` with the base environment plus ``env``."""
        port = free_port()
        full_env = {**self.base_env, **env}
        if service == "api":
            full_env["CONNECTOR_API__PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            args = ("--port", str(port), *args)
        else:
            full_env["CONNECTOR_PROBE_PORT"] = str(port)
        index = sum(1 for s in self.services if s.name.startswith(service))
        name = f"{service}-{index}"
        log_path = self.logs / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "connector_cli", service, *args],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started = Service(name, process, log_path, port)
        self.services.append(started)
        return started

    async def ready(self, *services: Service, timeout: float = 30.0) -> None:
        """Until every service's ``/readyz`` answers 200."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            for service in services:
                while True:
                    if service.process.poll() is not None:
                        raise AssertionError(f"{service.name} exited:\n{service.log()[-3000:]}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{service.url}/readyz")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{service.name} not ready:\n{service.log()[-3000:]}")
                    await asyncio.sleep(0.1)

    def stop_all(self) -> None:
        for service in self.services:
            service.signal(signal.SIGTERM)
        for service in self.services:
            try:
                service.process.wait(30)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(5)
        for service in self.services:
            tail = "\n".join(service.log().splitlines()[-400:])
            print(f"----- {service.name} (exit {service.process.returncode}) -----\n{tail}")


@pytest.fixture
async def fleet(
    tmp_path: Path,
    database_url: str,
    nats_url: str,
    topology: Topology,
    token_keys: str,
    sandbox: SandboxHandle,
) -> AsyncIterator[Fleet]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_ENV": "development",
            "CONNECTOR_LOG_FORMAT": "json",
            "CONNECTOR_DATABASE__URL": database_url,
            "CONNECTOR_DATABASE__POOL_SIZE": "5",
            "CONNECTOR_NATS__URL": nats_url,
            "CONNECTOR_NATS__NAMESPACE": topology.namespace,
            "CONNECTOR_TOKEN_KEYS": token_keys,
            "CONNECTOR_EBAY__ENVIRONMENT": "local",
            "CONNECTOR_EBAY__LOCAL_BASE_URL": sandbox.base_url,
            "CONNECTOR_EBAY__CLIENT_ID": sandbox.client_id,
            "CONNECTOR_EBAY__CLIENT_SECRET": sandbox.client_secret,
            "CONNECTOR_EBAY__RU_NAME": sandbox.ru_name,
            # JSON: the space-separated form the README shows does not parse (reported).
            "CONNECTOR_EBAY__SCOPES": json.dumps(list(sandbox.scopes)),
            **BASE_TIMING,
        }
    )
    # What the provisioning Job does in a cluster: the services only bind.
    assert await provision_namespace(nats_url, topology.namespace)
    running = Fleet(env, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return create_session_factory(engine)


@dataclass
class ApiClient:
    """Drives a running ``connector api`` process as an org admin would."""

    http: httpx.AsyncClient
    headers: dict[str, str]

    async def connect(self, sandbox: SandboxHandle, seller: str, house_name: str) -> dict[str, Any]:
        """The connect flow without a browser: start, the seller consents, eBay's redirect."""
        started = await self.http.post(
            "/ebay-accounts/connect",
            json={"house_name": house_name, "purpose": "orders"},
            headers=self.headers,
        )
        assert started.status_code == 201, started.text
        await self._consent(sandbox, seller, started.json()["consent_url"])
        return await self.account_by_house(house_name)

    async def reconnect(self, sandbox: SandboxHandle, seller: str, account_id: str) -> None:
        started = await self.http.post(
            f"/ebay-accounts/{account_id}/reconnect", headers=self.headers
        )
        assert started.status_code == 201, started.text
        await self._consent(sandbox, seller, started.json()["consent_url"])

    async def _consent(self, sandbox: SandboxHandle, seller: str, consent_url: str) -> None:
        code = await asyncio.to_thread(sandbox.grant, seller)
        state = parse_qs(urlsplit(consent_url).query)["state"][0]
        callback = await self.http.get(
            "/ebay/oauth/callback", params={"code": code, "state": state, "expires_in": "299"}
        )
        assert callback.status_code == 200, callback.text

    async def accounts(self) -> list[dict[str, Any]]:
        listed = await self.http.get("/ebay-accounts", headers=self.headers)
        assert listed.status_code == 200, listed.text
        items: list[dict[str, Any]] = listed.json()["items"]
        return items

    async def account_by_house(self, house_name: str) -> dict[str, Any]:
        return next(a for a in await self.accounts() if a["house_name"] == house_name)


@contextlib.asynccontextmanager
async def api_client(fleet: Fleet, sandbox: SandboxHandle, org: str) -> AsyncIterator[ApiClient]:
    """Start ``connector api`` and yield a client acting as an admin of ``org``."""
    from connector_api.devtokens import mint_dev_token

    dev_secret = secrets.token_urlsafe(32)
    api = fleet.start(
        "api",
        CONNECTOR_API__JWT__DEV_SECRET=dev_secret,
        CONNECTOR_API__SESSION_SECRET=secrets.token_urlsafe(32),
    )
    sandbox.register_app(
        sandbox.client_id, sandbox.client_secret, sandbox.ru_name, f"{api.url}/ebay/oauth/callback"
    )
    await fleet.ready(api)
    token = mint_dev_token(dev_secret, org=org, role="admin", subject="e2e-admin")
    async with httpx.AsyncClient(base_url=api.url, timeout=10.0) as http:
        yield ApiClient(http, {"Authorization": f"Bearer {token}"})
