"""Demo data for `connector dev`: an org with sandbox sellers on several marketplaces, each
connected through the real flow (connect → consent URL → the sandbox's consent → our callback,
as eBay's redirect would), then a token and the admin page URL for the person at the terminal.

Idempotent across restarts: the sandbox keeps its sellers, consents and tokens in the data
folder, so an account that is already connected is left exactly as it is. Only what cannot work
is repaired: a demo account that needs a new consent is reconnected (same account id), and one
whose seller no longer exists (the sandbox's state file was removed) is replaced.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx

from connector_devstack.dev import ServiceProcess, say, show

DEMO_ORG = "demo"
DEMO_ACCOUNTS: tuple[tuple[str, str, str], ...] = (
    ("Warehouse-US", "demo_us_seller", "US orders"),
    ("London", "demo_uk_seller", "UK orders"),
    ("Berlin", "demo_de_seller", "DE orders and returns"),
    ("Toronto", "demo_ca_seller", "Canada"),
    ("Sydney", "demo_au_seller", "Australia"),
    ("Motors", "demo_motors_seller", "eBay Motors parts"),
)
READY_TIMEOUT = 90.0
# Statuses a demo account only leaves through a new consent (anything else heals by itself).
NEEDS_CONSENT = frozenset({"reconnect_required", "not_connected"})


class StopFlag(Protocol):
    requested: bool


class DemoError(Exception):
    """The demo could not be seeded (the services keep running)."""


def _url(services: Sequence[ServiceProcess], name: str) -> str | None:
    return next((s.url for s in services if s.name == name and s.url), None)


def _wait_ready(http: httpx.Client, url: str, stop: StopFlag) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and not stop.requested:
        try:
            if http.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.25)  # polling a starting service, with a deadline
    return False


def seed(
    services: list[ServiceProcess], env: dict[str, str], data_dir: Path, stop: StopFlag
) -> None:
    """Connect the demo accounts and print how to log in; never stops the launcher."""
    api_url, sandbox_url = _url(services, "api"), _url(services, "ebay-sandbox")
    secret = env.get("CONNECTOR_API__JWT__DEV_SECRET")
    if not api_url or not sandbox_url or not secret:
        return
    with httpx.Client(timeout=10) as http:
        if not (
            _wait_ready(http, f"{api_url}/readyz", stop)
            and _wait_ready(http, f"{sandbox_url}/_sandbox/health", stop)
        ):
            if not stop.requested:
                say("the API or the sandbox did not become ready: no demo data")
            return
        from connector_api.devtokens import mint_dev_token

        token = mint_dev_token(
            secret, org=DEMO_ORG, role="admin", subject="demo-admin", ttl_seconds=12 * 3600
        )
        demo = Demo(http, api_url, sandbox_url, token, env.get("CONNECTOR_EBAY__CLIENT_ID", ""))
        try:
            for house_name, seller, purpose in DEMO_ACCOUNTS:
                outcome = demo.connect(house_name, seller, purpose)
                say(f"demo: {house_name} ({seller}): {outcome}")
        except (DemoError, httpx.HTTPError) as exc:
            say(f"demo data incomplete: {exc}")
        token_for_deletion = env.get("CONNECTOR_EBAY__DELETION__VERIFICATION_TOKEN")
        if token_for_deletion:
            from connector_devstack.deletion_demo import register

            try:
                register(
                    http,
                    api_url,
                    sandbox_url,
                    token_for_deletion,
                    env.get("CONNECTOR_NATS__URL"),
                    example_seller=DEMO_ACCOUNTS[1][1],
                )
            except httpx.HTTPError as exc:
                say(f"account deletion: could not register the endpoint: {exc}")
    say(f"admin page: {api_url}/admin  (org '{DEMO_ORG}', role admin)")
    say(
        "log in by pasting this token (valid 12 h; `connector token mint --org demo --role "
        "admin` makes another):"
    )
    show(token)


class Demo:
    """Connects demo sellers the way a person and eBay would, without a browser."""

    def __init__(
        self, http: httpx.Client, api_url: str, sandbox_url: str, token: str, client_id: str
    ) -> None:
        self.http = http
        self.api = api_url
        self.sandbox = sandbox_url
        self.auth = {"Authorization": f"Bearer {token}"}
        self.client_id = client_id

    def _accounts(self) -> dict[str, dict[str, Any]]:
        response = self.http.get(
            f"{self.api}/ebay-accounts", params={"limit": 200}, headers=self.auth
        )
        self._check(response, "list accounts")
        return {a["house_name"].lower(): a for a in response.json()["items"]}

    def _seller_user_id(self, seller: str) -> str | None:
        response = self.http.get(f"{self.sandbox}/_sandbox/sellers/{seller}")
        if response.status_code != 200:
            return None
        user_id = response.json().get("user_id")
        return str(user_id) if user_id else None

    def connect(self, house_name: str, seller: str, purpose: str) -> str:
        """Connect one demo account unless it is connected already; says what happened."""
        existing = self._accounts().get(house_name.lower())
        replaced = False
        same_seller = existing is not None and existing["ebay_user_id"] == self._seller_user_id(
            seller
        )
        if same_seller and existing is not None and existing["status"] not in NEEDS_CONSENT:
            return "already connected"
        if existing is not None and not same_seller:
            # The sandbox restarted with new users: this account's seller is gone for good.
            gone = self.http.delete(f"{self.api}/ebay-accounts/{existing['id']}", headers=self.auth)
            self._check(gone, "remove the stale demo account")
            existing, replaced = None, True
        if existing is None:
            started = self.http.post(
                f"{self.api}/ebay-accounts/connect",
                json={"house_name": house_name, "purpose": purpose},
                headers=self.auth,
            )
            verb = "replaced (the sandbox restarted with new users)" if replaced else "connected"
        else:
            started = self.http.post(
                f"{self.api}/ebay-accounts/{existing['id']}/reconnect", headers=self.auth
            )
            verb = "reconnected"
        self._check(started, "start connecting")
        query = parse_qs(urlsplit(started.json()["consent_url"]).query)
        granted = self.http.post(
            f"{self.sandbox}/_sandbox/consent",
            json={
                "seller": seller,
                "client_id": self.client_id,
                "scopes": query.get("scope", [""])[0].split(),
            },
        )
        self._check(granted, "consent in the sandbox")
        back = self.http.get(
            f"{self.api}/ebay/oauth/callback",
            params={"code": granted.json()["code"], "state": query["state"][0], "expires_in": 299},
        )
        self._check(back, "complete the callback")
        return verb

    @staticmethod
    def _check(response: httpx.Response, step: str) -> None:
        if response.status_code >= 400:
            raise DemoError(f"{step}: HTTP {response.status_code}")
