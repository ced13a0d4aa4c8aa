"""`connector api` as Kubernetes runs it: a real process that serves, answers its probes, and
stops cleanly on SIGTERM; bad flags or settings exit 2 with a message naming the problem."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time

import httpx
import pytest
from pydantic import SecretStr

from connector_api.main import register_secrets
from connector_api.settings import ApiSettings
from connector_common.redaction import redact_text
from connector_common.settings import NatsSettings
from connector_devstack.embedded import free_port


def api_env(database_url: str, nats_url: str, token_keys: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_ENV": "development",
            "CONNECTOR_DATABASE__URL": database_url,
            "CONNECTOR_NATS__URL": nats_url,
            "CONNECTOR_TOKEN_KEYS": token_keys,
            "CONNECTOR_API__JWT__DEV_SECRET": "d" * 40,
            "CONNECTOR_LOG_FORMAT": "json",
            **extra,
        }
    )
    return env


def run_api(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector_cli", "api", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_serving(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"api exited early:\n{process.communicate()[0]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # polling a server with a deadline
    raise AssertionError("the API did not become ready in time")


def test_api_serves_and_stops_cleanly_on_sigterm(
    database_url: str, nats_url: str, token_keys: str
) -> None:
    port = free_port()
    process = run_api(["--port", str(port)], api_env(database_url, nats_url, token_keys))
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert time.monotonic() - started < 30
    assert '"event": "api starting"' in output or '"event":"api starting"' in output


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--port", "abc"], "--port"), (["--port", "70000"], "--port"), (["--bogus"], "--bogus")],
)
def test_bad_flags_exit_2_with_a_message(args: list[str], says: str) -> None:
    process = run_api(args, api_env("postgresql://x@127.0.0.1:9/x", "nats://127.0.0.1:9", ""))
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert says in output


def test_production_without_its_secrets_refuses_to_start_naming_them() -> None:
    env = api_env(
        "postgresql://x@127.0.0.1:9/x", "nats://127.0.0.1:9", "", CONNECTOR_ENV="production"
    )
    process = run_api([], env)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    for name in (
        "CONNECTOR_TOKEN_KEYS",
        "CONNECTOR_API__JWT__DEV_SECRET",
        "CONNECTOR_API__JWT__JWKS_URL",
        "CONNECTOR_API__SESSION_SECRET",
    ):
        assert name in output
    assert "d" * 40 not in output  # names, never values


def test_every_configured_secret_is_scrubbed_from_log_lines() -> None:
    keys = [base64.b64encode(os.urandom(32)).decode() for _ in range(2)]
    values = {
        "nats_password": "nats-pw-" + secrets.token_hex(8),
        "nats_token": "nats-tok-" + secrets.token_hex(8),
        "client_secret": "ebay-cs-" + secrets.token_hex(8),
        "dev_secret": secrets.token_urlsafe(32),
        "session_secret": secrets.token_urlsafe(32),
        "oidc_secret": "oidc-cs-" + secrets.token_hex(8),
    }
    settings = ApiSettings(
        env="development",
        token_keys=SecretStr(f"old:{keys[0]},new:{keys[1]}"),
        nats={"user": "connector", "password": values["nats_password"]},
        ebay={"client_secret": values["client_secret"]},
        api={
            "jwt": {"dev_secret": values["dev_secret"]},
            "session_secret": values["session_secret"],
            "oidc": {"client_secret": values["oidc_secret"]},
        },
    )
    register_secrets(settings)
    # One way to authenticate to NATS at a time: the token in a second configuration.
    register_secrets(
        settings.model_copy(update={"nats": NatsSettings(token=SecretStr(values["nats_token"]))})
    )
    for name, secret in [*values.items(), ("old key", keys[0]), ("new key", keys[1])]:
        assert redact_text(f"failed with {secret}!") == "failed with [REDACTED]!", name


def test_api_started_while_nats_is_down_serves_and_stops_at_once_on_sigterm(
    database_url: str, token_keys: str
) -> None:
    port = free_port()
    dead_nats = f"nats://127.0.0.1:{free_port()}"
    process = run_api(["--port", str(port)], api_env(database_url, dead_nats, token_keys))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the API did not serve"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)  # polling a server with a deadline
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["nats"] == "unreachable"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    # Nothing to drain: the wait for NATS ends with the shutdown instead of timing out.
    assert time.monotonic() - started < 5
