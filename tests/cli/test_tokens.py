"""`connector token mint`: a development token the API accepts; bad flags exit 2 and say why."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from connector_api.auth import TokenVerifier
from connector_api.settings import JwtSettings
from connector_cli.main import main


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = secrets.token_urlsafe(32)
    monkeypatch.setenv("CONNECTOR_API__JWT__DEV_SECRET", value)
    return value


async def verify(token: str, secret: str) -> tuple[str, str, frozenset[str]]:
    verifier = TokenVerifier.from_settings(JwtSettings(dev_secret=SecretStr(secret)))
    identity = await verifier.verify(token)
    return identity.subject, identity.org_external_id, identity.roles


async def test_mint_prints_a_token_the_api_accepts(
    secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "mint", "--org", "demo", "--role", "admin", "--sub", "ada"]) == 0
    token = capsys.readouterr().out.strip()
    assert await verify(token, secret) == ("ada", "demo", frozenset({"admin"}))


async def test_mint_reads_the_secret_that_connector_dev_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CONNECTOR_API__JWT__DEV_SECRET", raising=False)
    value = secrets.token_urlsafe(32)
    (tmp_path / "dev-jwt-secret").write_text(value + "\n")
    args = ["token", "mint", "--org", "o", "--role", "viewer", "--data-dir", str(tmp_path)]
    assert main(args) == 0
    token = capsys.readouterr().out.strip()
    assert await verify(token, value) == ("developer", "o", frozenset({"viewer"}))


def test_the_console_command_prints_one_line(secret: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector_cli", "token", "mint", "--org", "x", "--role", "admin"],
        capture_output=True,
        text=True,
        env={**os.environ, "CONNECTOR_API__JWT__DEV_SECRET": secret},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.count(".") == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "admin"], "--org"),
        (["--org", "demo", "--role", "root"], "invalid choice"),
        (["--org", "demo", "--role", "admin", "--ttl", "-5"], "--ttl"),
        (["--org", "demo", "--role", "admin", "--ttl", "soon"], "--ttl"),
        (["--org", "", "--role", "admin"], "--org"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    secret: str, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", "mint", *args])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_without_a_secret_it_exits_2_and_says_where_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CONNECTOR_API__JWT__DEV_SECRET", raising=False)
    code = main(["token", "mint", "--org", "o", "--role", "admin", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "make run" in capsys.readouterr().err


def test_a_short_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONNECTOR_API__JWT__DEV_SECRET", "short")
    assert main(["token", "mint", "--org", "o", "--role", "admin"]) == 2
    err = capsys.readouterr().err
    assert "at least 32" in err
    assert "short" not in err  # the secret is never echoed


def test_a_secret_file_that_is_not_text_is_refused_without_a_byte_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw-secret"
    raw.write_bytes(b"\x00\xbe\xef" + os.urandom(40))
    monkeypatch.delenv("CONNECTOR_API__JWT__DEV_SECRET", raising=False)
    monkeypatch.setenv("CONNECTOR_API__JWT__DEV_SECRET_FILE", str(raw))
    assert main(["token", "mint", "--org", "o", "--role", "admin"]) == 2
    err = capsys.readouterr().err
    assert "CONNECTOR_API__JWT__DEV_SECRET_FILE" in err
    assert "0xbe" not in err
