"""`connector sandbox`: starts, serves, exits cleanly on SIGTERM; bad flags exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from connector_devstack.embedded import free_port


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the sandbox exited early"
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)  # polling readiness with a deadline
    raise AssertionError("the sandbox did not become healthy")


def test_cli_starts_serves_and_exits_on_sigterm() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EBAY_SANDBOX_CLIENT_SECRET": "cli-test-secret"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector_cli",
            "sandbox",
            "--port",
            str(port),
            "--token-lifetime",
            "60",
            "--client-id",
            "cli-app",
            "--ru-name",
            "cli-runame",
            "--accept-url",
            "http://127.0.0.1:9/callback",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_healthy(url, process)
        sellers = httpx.get(f"{url}/_sandbox/sellers").json()["sellers"]
        assert len(sellers) >= 6
        token = httpx.post(
            f"{url}/identity/v1/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "scope": "https://api.ebay.com/oauth/api_scope",
            },
            auth=("cli-app", "cli-test-secret"),
        ).json()
        assert token["expires_in"] == 60
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _out, err = process.communicate()
    assert b"cli-test-secret" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--port"),
        (["--port", "abc"], "is not a whole number"),
        (["--port", "70000"], "must be a TCP port"),
        (["--port", "8081", "--token-lifetime", "0"], "must be at least 1"),
        (["--port", "8081", "--client-id", "x"], "registering an app needs"),
        (
            [
                "--port",
                "8081",
                "--client-id",
                "x",
                "--client-secret",
                "y",
                "--ru-name",
                "r",
                "--accept-url",
                "ftp://nope",
            ],
            "--accept-url must be an http",
        ),
    ],
)
def test_bad_flags_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector_cli", "sandbox", *args],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
