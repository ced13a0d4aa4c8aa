"""The API under test: the real app (lifespan included) on this test's database and NATS
namespace, called over ASGI with httpx; tokens minted with the development secret."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from nats.js import JetStreamContext
from pydantic import SecretStr

from connector_api.app import create_app
from connector_api.devtokens import mint_dev_token
from connector_api.settings import ApiSettings
from connector_api.state import AppState
from connector_common.db.engine import unit_of_work
from connector_common.db.models import EbayAccount, Organisation
from connector_common.events import Event, parse_event
from connector_common.messaging import Topology
from connector_common.settings import EbaySettings
from connector_common.telemetry import Telemetry, setup_telemetry
from tests.fixtures.factories import make_account, make_token
from tests.fixtures.idp import idp  # noqa: F401 (fixture)
from tests.fixtures.infra import PostgresServer, provision_namespace, unique_name
from tests.fixtures.realm_idp import realm_idp  # noqa: F401 (fixture)
from tests.fixtures.sandbox import SandboxHandle

API_URL = "http://api.test"


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it is true, failing at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


@dataclass
class Api:
    """A running API and a client for it."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: ApiSettings
    dev_secret: str
    default_org: str = "org-a"

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.connector
        return state

    def token(
        self, org: str | None = None, role: str = "admin", sub: str = "alice", **kw: Any
    ) -> str:
        org = org or self.default_org
        return mint_dev_token(self.dev_secret, org=org, role=role, subject=sub, **kw)

    def auth(
        self, org: str | None = None, role: str = "admin", sub: str = "alice"
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(org, role, sub)}"}

    async def wait_relay(self) -> None:
        """Until NATS is connected and the outbox relay runs."""

        async def ready() -> bool:
            return self.state.relay is not None

        await wait_for(ready)

    async def org_id(self, external_id: str) -> str:
        return str(await self.state.orgs.resolve(external_id))


@asynccontextmanager
async def running_api(
    settings: ApiSettings, dev_secret: str, telemetry: Telemetry | None = None
) -> AsyncIterator[Api]:
    """Start the app's lifespan and yield a client on it."""
    telemetry = telemetry or setup_telemetry(settings.otel, "connector-api-test", set_global=False)
    # The streams the API publishes to, as provisioning declares them (when NATS is up).
    await provision_namespace(settings.nats.url, settings.nats.namespace)
    app = create_app(settings, telemetry=telemetry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=API_URL) as client:
            yield Api(app, client, settings, dev_secret)


@pytest.fixture
def dev_secret() -> str:
    return secrets.token_urlsafe(32)


def make_settings(
    database_url: str,
    nats_url: str,
    namespace: str,
    token_keys: str,
    dev_secret: str,
    ebay: EbaySettings | None = None,
    **api: Any,
) -> ApiSettings:
    return ApiSettings(
        env="development",
        database={"url": SecretStr(database_url)},
        nats={"url": nats_url, "namespace": namespace},
        token_keys=SecretStr(token_keys),
        ebay=ebay or EbaySettings(local_base_url="http://127.0.0.1:9", max_attempts=1),
        api={
            "public_url": API_URL,
            "jwt": {"dev_secret": SecretStr(dev_secret)},
            "session_secret": SecretStr(secrets.token_urlsafe(32)),
            # Tests share one client address and, per module, one API: limits far above what
            # they do (test_rate_limits.py sets its own).
            "rate_limits": {
                "per_address_per_minute": 100_000,
                "per_org_per_minute": 100_000,
                "login_per_address_per_minute": 100_000,
                "connect_per_org_per_minute": 100_000,
                "callback_per_address_per_minute": 100_000,
            },
            # Likewise load shedding: tests fire bursts of requests on purpose
            # (test_load_shedding.py sets its own bounds).
            "shedding": {"max_queued": 100_000, "max_wait_seconds": 60},
            **api,
        },
    )


@pytest.fixture
def api_settings(
    database_url: str, nats_url: str, namespace: str, token_keys: str, dev_secret: str
) -> ApiSettings:
    return make_settings(database_url, nats_url, namespace, token_keys, dev_secret)


@pytest.fixture
async def api(api_settings: ApiSettings, dev_secret: str) -> AsyncIterator[Api]:
    """The API without a reachable eBay (for everything but connecting)."""
    async with running_api(api_settings, dev_secret) as running:
        yield running


@pytest.fixture(scope="module")
async def shared_api(
    pg_server: PostgresServer, template_db: str, nats_url: str
) -> AsyncIterator[Api]:
    """One API and database for a whole module, for tests that isolate themselves by org
    (each uses org names of its own); saves a database and a start-up per test."""
    name = unique_name("connector_api_")
    url = pg_server.create_database(name, template=template_db)
    keys = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
    secret = secrets.token_urlsafe(32)
    settings = make_settings(url, nats_url, unique_name("t"), keys, secret)
    try:
        async with running_api(settings, secret) as running:
            yield running
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def org_api(shared_api: Api) -> Api:
    """The module's shared API, acting for an org of this test alone."""
    return dataclasses.replace(shared_api, default_org=f"org-{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def connect_api(
    api_settings: ApiSettings,
    dev_secret: str,
    ebay_settings: EbaySettings,
    sandbox: SandboxHandle,
) -> AsyncIterator[Api]:
    """The API talking to the sandbox, whose app's accept URL is this API's callback."""
    sandbox.register_app(
        sandbox.client_id,
        sandbox.client_secret,
        sandbox.ru_name,
        f"{API_URL}/ebay/oauth/callback",
    )
    settings = api_settings.model_copy(update={"ebay": ebay_settings})
    async with running_api(settings, dev_secret) as running:
        yield running


def state_of(consent_url: str) -> str:
    """The ``state`` we put in eBay's consent URL."""
    return parse_qs(urlsplit(consent_url).query)["state"][0]


async def connect_seller(
    api: Api,
    sandbox: SandboxHandle,
    seller: str,
    house_name: str,
    org: str = "org-a",
    purpose: str = "orders",
) -> dict[str, Any]:
    """The real connect flow without a browser: start, consent in the sandbox, callback."""
    started = await api.client.post(
        "/ebay-accounts/connect",
        json={"house_name": house_name, "purpose": purpose},
        headers=api.auth(org),
    )
    assert started.status_code == 201, started.text
    code = sandbox.grant(seller)
    callback = await api.client.get(
        "/ebay/oauth/callback",
        params={
            "code": code,
            "state": state_of(started.json()["consent_url"]),
            "expires_in": "299",
        },
    )
    assert callback.status_code == 200, callback.text
    listed = await api.client.get("/ebay-accounts", headers=api.auth(org))
    by_name = {a["house_name"]: a for a in listed.json()["items"]}
    account: dict[str, Any] = by_name[house_name]
    return account


async def events_of(
    js: JetStreamContext, topology: Topology, org_id: str, count: int, timeout: float = 10.0
) -> list[tuple[Event, dict[str, str]]]:
    """Wait until ``count`` events of an org are on the EVENTS stream; return them in order."""
    subject = topology.events_subject(org_id)

    async def enough() -> bool:
        info = await js.stream_info(topology.events_stream, subjects_filter=subject)
        return sum((info.state.subjects or {}).values()) >= count

    await wait_for(enough, timeout)
    sub = await js.subscribe(subject, ordered_consumer=True)
    found: list[tuple[Event, dict[str, str]]] = []
    try:
        while len(found) < count:
            msg = await sub.next_msg(timeout=timeout)
            found.append((parse_event(msg.data), dict(msg.headers or {})))
    finally:
        await sub.unsubscribe()
    return found


async def seed_account(
    api: Api,
    house_name: str,
    org: str | None = None,
    *,
    token: bool = True,
    **fields: Any,
) -> EbayAccount:
    """An account (and by default a token) written straight to the database."""
    org_id = await api.state.orgs.resolve(org or api.default_org)
    async with unit_of_work(api.state.sessions) as session:
        organisation = await session.get(Organisation, org_id)
        assert organisation is not None
        token_fields = {k[6:]: fields.pop(k) for k in list(fields) if k.startswith("token_")}
        account = await make_account(session, organisation, house_name, **fields)
        if token:
            await make_token(session, account, api.state.cipher, **token_fields)
    return account
