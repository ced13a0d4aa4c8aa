"""The demo `connector dev` seeds: sellers on several marketplaces connected through the real
flow, idempotent across restarts (a connected account is left alone, a broken one repaired,
never a duplicate), and a token that logs in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from connector_common.settings import EbaySettings
from connector_devstack.demo import DEMO_ACCOUNTS, DEMO_ORG, seed
from connector_devstack.dev import ServiceProcess
from connector_devstack.embedded import free_port
from tests.api.conftest import make_settings
from tests.api.served import ServedApi
from tests.fixtures.sandbox import SandboxHandle


@dataclass
class NeverStop:
    requested: bool = False


@pytest.fixture
def system(
    database_url: str,
    nats_url: str,
    namespace: str,
    token_keys: str,
    sandbox: SandboxHandle,
    ebay_settings: EbaySettings,
) -> Iterator[tuple[list[ServiceProcess], dict[str, str]]]:
    secret = "demo-secret-" + "x" * 32
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sandbox.register_app(
        sandbox.client_id, sandbox.client_secret, sandbox.ru_name, f"{url}/ebay/oauth/callback"
    )
    settings = make_settings(
        database_url, nats_url, namespace, token_keys, secret, ebay=ebay_settings, public_url=url
    )
    services = [
        ServiceProcess("ebay-sandbox", [], {}, url=sandbox.base_url),
        ServiceProcess("api", [], {}, url=url),
    ]
    env = {"CONNECTOR_API__JWT__DEV_SECRET": secret, "CONNECTOR_EBAY__CLIENT_ID": sandbox.client_id}
    with ServedApi(settings, port):
        yield services, env


def accounts(url: str, token: str) -> dict[str, dict[str, object]]:
    response = httpx.get(
        f"{url}/ebay-accounts", params={"limit": 200}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    return {str(a["house_name"]): a for a in response.json()["items"]}


def test_demo_connects_sellers_on_several_marketplaces_and_prints_a_token(
    system: tuple[list[ServiceProcess], dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    services, env = system
    seed(services, env, tmp_path, NeverStop())
    out = capsys.readouterr()
    token = out.out.strip().splitlines()[-1]
    found = accounts(services[1].url or "", token)
    assert set(found) == {house for house, _, _ in DEMO_ACCOUNTS}
    markets = {str(a["marketplace_id"]) for a in found.values()}
    assert {"EBAY_US", "EBAY_GB", "EBAY_DE"} <= markets
    assert (found["London"]["marketplace_id"], found["London"]["site_id"]) == ("EBAY_GB", 3)
    assert f"{services[1].url}/admin" in out.err
    assert f"org '{DEMO_ORG}'" in out.err


def test_demo_run_again_leaves_connected_accounts_alone_and_repairs_broken_ones(
    system: tuple[list[ServiceProcess], dict[str, str]],
    sandbox: SandboxHandle,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    services, env = system
    seed(services, env, tmp_path, NeverStop())
    token = capsys.readouterr().out.strip().splitlines()[-1]
    first = accounts(services[1].url or "", token)
    seed(services, env, tmp_path, NeverStop())
    said = capsys.readouterr().err
    assert said.count("already connected") == len(DEMO_ACCOUNTS)
    assert "reconnected" not in said
    again = accounts(services[1].url or "", token)
    assert again == first  # not even new tokens: nothing a user sees changes
    # An account that needs a new consent is reconnected (same id), the others left alone.
    dsn = database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE ebay_tokens SET reconnect_required_at = now(), refresh_enabled = false"
            " WHERE account_id = %s",
            (str(first["London"]["id"]),),
        )
    assert accounts(services[1].url or "", token)["London"]["status"] == "reconnect_required"
    seed(services, env, tmp_path, NeverStop())
    said = capsys.readouterr().err
    assert "London (demo_uk_seller): reconnected" in said
    assert said.count("already connected") == len(DEMO_ACCOUNTS) - 1
    repaired = accounts(services[1].url or "", token)
    assert repaired["London"]["id"] == first["London"]["id"]
    assert repaired["London"]["status"] == "healthy"
