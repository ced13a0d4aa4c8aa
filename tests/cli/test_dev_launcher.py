"""`connector dev` / `connector infra` as a user runs them: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from connector_devstack.embedded import free_port
from tests.fixtures.infra import PostgresServer, unique_name

pytestmark = pytest.mark.slow


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (postgres, nats-server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        server = "postgres" in cmdline or "nats-server" in cmdline
        if server and str(path) in cmdline:
            found.append(cmdline)
    return found


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    return subprocess.Popen(
        [sys.executable, "-m", "connector_cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 120) -> list[str]:
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError("process ended before printing " + marker + ":\n" + "".join(seen))
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} not printed in time:\n" + "".join(seen))


def stop_and_wait(process: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    process.send_signal(sig)
    output, _ = process.communicate(timeout=90)
    return output


def test_infra_prints_urls_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = start(["infra", "--data-dir", str(data)], tmp_path)
    try:
        lines = read_until(process, "CONNECTOR_NATS__URL=")
    except AssertionError:
        process.kill()
        raise
    database_url = next(line for line in lines if line.startswith("CONNECTOR_DATABASE__URL="))
    dsn = database_url.split("=", 1)[1].strip().replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision is not None
    assert processes_using(data), "postgres and nats-server should be running"
    stop_and_wait(process)
    assert process.returncode == 0
    assert processes_using(data) == []


def _api_and_token(lines: list[str]) -> tuple[str, str]:
    api = next(line for line in lines if "admin page: " in line)
    url = api.split("admin page: ", 1)[1].split("/admin", 1)[0].strip()
    token = next(line.strip() for line in lines if line.startswith("eyJ"))
    return url, token


def _accounts(url: str, token: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(
        f"{url}/ebay-accounts",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {a["house_name"]: a for a in response.json()["items"]}


def _wait_refreshed(url: str, token: str, house: str, after: str | None) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        account = _accounts(url, token)[house]
        refreshed = (account["token"] or {}).get("last_refreshed_at")
        if refreshed and refreshed != after:
            return account
        time.sleep(0.25)  # polling the API with a deadline
    raise AssertionError(f"{house} was not refreshed after the restart")


def test_dev_restart_keeps_keys_and_every_account_as_it_was_and_leaves_no_orphans(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    process = start(["dev", "--data-dir", str(data), "--api-port", "0"], tmp_path)
    try:
        lines = read_until(process, "everything is up")
        url, token = _api_and_token(lines)
        before = _accounts(url, token)
    except AssertionError:
        process.kill()
        raise
    assert any("generated a development token encryption key" in line for line in lines)
    key_file = data / "dev-token-keys"
    assert key_file.stat().st_mode & 0o077 == 0
    assert processes_using(data)
    output = stop_and_wait(process)
    assert "stopped" in output
    assert process.returncode == 0
    assert processes_using(data) == []
    first_key = key_file.read_text()
    assert len(before) == 6

    again = start(["dev", "--data-dir", str(data), "--api-port", "0"], tmp_path)
    try:
        lines = read_until(again, "everything is up")
        url, token = _api_and_token(lines)
        after = _accounts(url, token)
        # The refresh tokens from before the restart still refresh.
        house = "London"
        auth = {"Authorization": f"Bearer {token}"}
        asked = httpx.post(f"{url}/ebay-accounts/{after[house]['id']}/refresh", headers=auth)
        assert asked.status_code == 202, asked.text
        refreshed = _wait_refreshed(url, token, house, after[house]["token"]["last_refreshed_at"])
    finally:
        stop_and_wait(again, signal.SIGTERM)
    assert not any("generated a development token" in line for line in lines)
    assert key_file.read_text() == first_key
    assert processes_using(data) == []
    # Every account as it was: same ids, same eBay users, connected once, no new consent.
    said = "".join(lines)
    assert said.count("already connected") == 6, said
    assert "reconnected" not in said
    assert "replaced" not in said
    keep = ("id", "ebay_user_id", "username", "marketplace_id", "connected_at", "is_active")
    assert {h: {k: a[k] for k in keep} for h, a in after.items()} == {
        h: {k: a[k] for k in keep} for h, a in before.items()
    }
    assert all(a["status"] in ("healthy", "expiring_soon") for a in after.values()), after
    assert refreshed["status"] in ("healthy", "expiring_soon")
    assert refreshed["token"]["last_refresh_error"] is None


def test_migrate_command_reports_the_revision(pg_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures.infra import unique_name

    name = unique_name("connector_cli_")
    url = pg_server.create_database(name)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
        env["CONNECTOR_DATABASE__URL"] = url
        result = subprocess.run(
            [sys.executable, "-m", "connector_cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "database at revision" in result.stdout
    finally:
        pg_server.drop_database(name)


def test_migrate_with_bad_url_fails_clearly_without_the_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env["CONNECTOR_DATABASE__URL"] = "mysql://root:hunter2@db/x"
    result = subprocess.run(
        [sys.executable, "-m", "connector_cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "CONNECTOR_DATABASE__URL" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def run_cli(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "connector_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "mysql://root:hunter2@db/x"], "--url must be a postgresql:// URL"),
        (["--url", "{database}", "--revision", "nope"], "nope"),
    ],
)
def test_migrate_with_a_bad_flag_exits_2_in_one_line_without_the_password(
    pg_server: PostgresServer, args: list[str], says: str
) -> None:
    name = unique_name("connector_cli_")
    url = pg_server.create_database(name)
    try:
        result = run_cli(["migrate", *(arg.format(database=url) for arg in args)])
    finally:
        pg_server.drop_database(name)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_migrate_with_an_unreachable_database_fails_in_one_line_without_the_password() -> None:
    result = run_cli(["migrate", "--url", f"postgresql://root:hunter2@127.0.0.1:{free_port()}/x"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "connection refused" in result.stderr.lower()
    assert "hunter2" not in result.stderr + result.stdout


def test_dev_with_an_out_of_range_port_exits_2_before_starting_anything(tmp_path: Path) -> None:
    result = run_cli(["dev", "--data-dir", str(tmp_path), "--api-port", "70000"])
    assert result.returncode == 2
    assert "--api-port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "postgres").exists()
