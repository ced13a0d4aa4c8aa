"""`make run` starts the sandbox with the dev app registered and the demo sellers."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from connector_devstack.dev import _base_env, _plan_services, stop_services
from connector_devstack.embedded import free_port


def test_dev_launcher_starts_the_sandbox_with_the_dev_app_and_demo_sellers(
    tmp_path: Path,
) -> None:
    env = _base_env("postgresql+psycopg://dev@/dev", "nats://127.0.0.1:4222", "k:x", tmp_path)
    api_port = free_port()
    plan = _plan_services(env, api_port)
    sandbox = next(service for service in plan if service.name == "ebay-sandbox")
    secret = (tmp_path / "dev-ebay-client-secret").read_text().strip()
    argv = sandbox.argv
    assert argv[argv.index("--client-id") + 1] == "connector-dev-app"
    assert argv[argv.index("--ru-name") + 1] == "connector-dev-runame"
    callback = f"http://127.0.0.1:{api_port}/ebay/oauth/callback"
    assert argv[argv.index("--accept-url") + 1] == callback
    assert secret not in " ".join(argv)  # never visible in `ps`
    assert env["CONNECTOR_EBAY__CLIENT_SECRET"] == secret  # what the services get
    assert env["CONNECTOR_EBAY__LOCAL_BASE_URL"] == sandbox.url
    assert _plan_services(dict(env), api_port)  # a second start reuses the stored secret
    assert (tmp_path / "dev-ebay-client-secret").read_text().strip() == secret

    sandbox.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                apps = httpx.get(f"{sandbox.url}/_sandbox/apps", timeout=1).json()["apps"]
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.05)  # polling readiness with a deadline
        assert apps[0]["client_id"] == "connector-dev-app"
        assert apps[0]["accept_url"] == callback
        token = httpx.post(
            f"{sandbox.url}/identity/v1/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "scope": "https://api.ebay.com/oauth/api_scope",
            },
            auth=("connector-dev-app", secret),
        ).json()
        assert token["expires_in"] == 120
        sellers = httpx.get(f"{sandbox.url}/_sandbox/sellers").json()["sellers"]
        assert {s["marketplace_id"] for s in sellers} >= {
            "EBAY_US",
            "EBAY_GB",
            "EBAY_DE",
            "EBAY_CA",
            "EBAY_AU",
            "EBAY_MOTORS_US",
        }
    finally:
        stop_services([sandbox])
    assert sandbox.process is not None
    assert sandbox.process.returncode == 0
