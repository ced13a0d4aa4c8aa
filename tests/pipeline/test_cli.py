"""Bad flags and bad settings stop a pipeline service at once with a clear message (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SECRET = "kZ3-not-a-real-key-but-secret-anyway"


@pytest.mark.parametrize(
    ("service", "args", "env", "expected"),
    [
        ("token-refresher", ["--concurrency", "many"], {}, "invalid int value"),
        (
            "health-checker",
            [],
            {"CONNECTOR_PIPELINE__HEALTH_INTERVAL_SECONDS": "30"},
            "CONNECTOR_PIPELINE: health_interval_seconds minus health_jitter_seconds",
        ),
        (
            "scheduler",
            ["--tick-seconds", "0"],
            {"CONNECTOR_TOKEN_KEYS": SECRET},
            "CONNECTOR_TOKEN_KEYS entry 1 is not 'id:base64key'",
        ),
        ("scheduler", [], {"CONNECTOR_WORKER": SECRET}, "CONNECTOR_WORKER (or a"),
    ],
)
def test_a_bad_flag_or_setting_exits_2_naming_it_and_never_echoing_a_secret(
    service: str, args: list[str], env: dict[str, str], expected: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    result = subprocess.run(
        [sys.executable, "-m", "connector_cli", service, *args],
        env={**base, "CONNECTOR_ENV": "development", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert SECRET not in result.stderr
    assert "Traceback" not in result.stderr
