"""The test fixtures' choice of infrastructure: testcontainers without Docker skips, saying why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_testcontainers_without_docker_engine_skips_with_the_reason() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "CONNECTOR_"))}
    env["CONNECTOR_TEST_INFRA"] = "testcontainers"
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/common/test_constraints.py::test_same_house_name_in_two_orgs_is_accepted",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 skipped" in output
    assert "CONNECTOR_TEST_INFRA=testcontainers but no Docker engine answers" in output
