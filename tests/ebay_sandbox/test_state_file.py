"""The sandbox's state file: a restarted sandbox knows the same sellers and honours the same
consents and tokens, as `make run` needs after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_devstack.embedded import free_port
from ebay_sandbox.app import create_app
from ebay_sandbox.state import AppRegistration, SandboxConfig
from ebay_sandbox.store import StateFileBusy
from tests.ebay_sandbox.test_main import _wait_healthy
from tests.fixtures.sandbox import DEFAULT_SCOPES, SandboxServer

APP = AppRegistration("state-app", "state-secret", "state-runame", "http://127.0.0.1:9/cb")


class Restartable:
    """A sandbox on a fixed port and state file that can be stopped and started again."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: SandboxServer | None = None

    def start(self) -> SandboxServer:
        config = SandboxConfig(apps=[APP], state_file=self.state_file)
        self.server = SandboxServer(config, port=self.port)
        self.server.start()
        return self.server

    def restart(self) -> SandboxServer:
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def sandbox_on_disk(tmp_path: Path) -> Iterator[Restartable]:
    restartable = Restartable(tmp_path / "data" / "ebay-sandbox.sqlite3")
    restartable.start()
    try:
        yield restartable
    finally:
        restartable.stop()


def control(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.post(f"{url}/_sandbox{path}", json=body or {})
    assert response.status_code < 300, response.text
    return response.json()


def token(url: str, form: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}/identity/v1/oauth2/token", data=form, auth=(APP.client_id, APP.client_secret)
    )


def connect(url: str, seller: str) -> dict[str, Any]:
    """Consent and code exchange: the tokens a connector would store."""
    code = control(
        url,
        "/consent",
        {"seller": seller, "client_id": APP.client_id, "scopes": list(DEFAULT_SCOPES)},
    )
    answer = token(
        url,
        {"grant_type": "authorization_code", "code": code["code"], "redirect_uri": APP.ru_name},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def identity(url: str, access_token: str) -> httpx.Response:
    return httpx.get(
        f"{url}/commerce/identity/v1/user/", headers={"Authorization": f"Bearer {access_token}"}
    )


def test_a_restart_between_connect_and_refresh_changes_nothing(
    sandbox_on_disk: Restartable,
) -> None:
    url = sandbox_on_disk.url
    seller = control(url, "/sellers", {"username": "montreal_shop", "marketplace_id": "EBAY_CA"})
    tokens = connect(url, "montreal_shop")
    demo_before = httpx.get(f"{url}/_sandbox/sellers/demo_uk_seller").json()

    sandbox_on_disk.restart()

    # The same seller, with the same immutable user id (not a new eBay user).
    again = httpx.get(f"{url}/_sandbox/sellers/montreal_shop").json()
    assert again == seller
    assert httpx.get(f"{url}/_sandbox/sellers/demo_uk_seller").json() == demo_before
    # The access token issued before the restart still works, for the same user.
    me = identity(url, tokens["access_token"])
    assert me.status_code == 200
    assert me.json()["userId"] == seller["user_id"]
    # And the refresh token refreshes.
    refreshed = token(
        url, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    assert identity(url, refreshed.json()["access_token"]).json()["userId"] == seller["user_id"]


def test_revocations_suspensions_renames_and_spent_codes_survive_a_restart(
    sandbox_on_disk: Restartable,
) -> None:
    url = sandbox_on_disk.url
    revoked = connect(url, "demo_us_seller")
    control(url, "/sellers/demo_us_seller/revoke")
    control(url, "/sellers/demo_de_seller/suspend", {"suspended": True})
    control(url, "/sellers/demo_ca_seller/rename", {"username": "maple_leaf_parts"})
    code = control(
        url,
        "/consent",
        {"seller": "demo_au_seller", "client_id": APP.client_id, "scope": DEFAULT_SCOPES[0]},
    )["code"]
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": APP.ru_name}
    assert token(url, exchange).status_code == 200
    unused = control(
        url,
        "/consent",
        {"seller": "demo_au_seller", "client_id": APP.client_id, "scope": DEFAULT_SCOPES[0]},
    )["code"]

    sandbox_on_disk.restart()

    refresh = {"grant_type": "refresh_token", "refresh_token": revoked["refresh_token"]}
    assert token(url, refresh).json()["error"] == "invalid_grant"
    assert httpx.get(f"{url}/_sandbox/sellers/demo_de_seller").json()["suspended"] is True
    assert httpx.get(f"{url}/_sandbox/sellers/maple_leaf_parts").status_code == 200
    # The demo sellers are all there, but a renamed one is not created twice.
    assert httpx.get(f"{url}/_sandbox/sellers/demo_ca_seller").status_code == 404
    assert token(url, exchange).json()["error"] == "invalid_grant"  # codes stay single use
    fresh = {"grant_type": "authorization_code", "code": unused, "redirect_uri": APP.ru_name}
    assert token(url, fresh).status_code == 200  # an unused code still works


def test_reset_empties_the_state_file(sandbox_on_disk: Restartable) -> None:
    url = sandbox_on_disk.url
    control(url, "/sellers", {"username": "short_lived", "site_id": 3})
    control(url, "/reset")
    sandbox_on_disk.restart()
    assert httpx.get(f"{url}/_sandbox/sellers/short_lived").status_code == 404
    names = {s["username"] for s in httpx.get(f"{url}/_sandbox/sellers").json()["sellers"]}
    assert "demo_uk_seller" in names


def test_the_command_lines_app_replaces_the_stored_one(sandbox_on_disk: Restartable) -> None:
    url = sandbox_on_disk.url
    control(
        url,
        "/apps",
        {
            "client_id": APP.client_id,
            "client_secret": "changed-at-runtime",
            "ru_name": APP.ru_name,
            "accept_url": "http://127.0.0.1:9/elsewhere",
        },
    )
    sandbox_on_disk.restart()
    apps = httpx.get(f"{url}/_sandbox/apps").json()["apps"]
    assert [a["accept_url"] for a in apps if a["client_id"] == APP.client_id] == [APP.accept_url]


def test_a_state_file_in_use_is_refused(sandbox_on_disk: Restartable) -> None:
    with pytest.raises(StateFileBusy, match="in use by another sandbox"):
        create_app(SandboxConfig(state_file=sandbox_on_disk.state_file))


def test_the_state_file_is_readable_by_its_owner_only(sandbox_on_disk: Restartable) -> None:
    assert sandbox_on_disk.state_file.stat().st_mode & 0o077 == 0


def _cli(port: int, state_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector_cli",
            "sandbox",
            "--port",
            str(port),
            "--client-id",
            APP.client_id,
            "--ru-name",
            APP.ru_name,
            "--accept-url",
            APP.accept_url,
            "--state-file",
            str(state_file),
        ],
        env={**os.environ, "EBAY_SANDBOX_CLIENT_SECRET": APP.client_secret},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_the_process_keeps_its_state_across_sigterm(tmp_path: Path) -> None:
    state_file = tmp_path / "sandbox.sqlite3"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _cli(port, state_file)
    try:
        _wait_healthy(url, first)
        tokens = connect(url, "demo_uk_seller")
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
    second = _cli(port, state_file)
    try:
        _wait_healthy(url, second)
        refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        assert token(url, refresh).status_code == 200
        # While it runs, a second process on the same file says why it cannot start.
        third = _cli(free_port(), state_file)
        _out, err = third.communicate(timeout=30)
        assert third.returncode == 2
        assert b"in use by another sandbox" in err
        assert b"Traceback" not in err
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
