"""`connector migrate --check [--wait N]`: the init container that holds a new version's pods
until the migration Job brought the schema to that version (or a newer one)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from sqlalchemy.engine import make_url

from connector_cli.main import main
from connector_common import migrate
from connector_devstack.embedded import free_port
from tests.fixtures.infra import PostgresServer, database_with_roles, unique_name

pytestmark = pytest.mark.slow
HEAD = migrate.head_revision()


@dataclass
class Checked:
    returncode: int
    stdout: str
    stderr: str


def check(url: str, *args: str) -> Checked:
    """`connector migrate --check` in this process (its output captured)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["migrate", "--check", "--url", url, *args])
    return Checked(code, out.getvalue(), err.getvalue())


def check_argv(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "connector_cli", "migrate", "--check", "--url", url, *args]


@pytest.fixture
def empty_database(pg_server: PostgresServer) -> Iterator[str]:
    name = unique_name("connector_check_")
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


def test_pending_migrations_exit_3_and_say_which(empty_database: str) -> None:
    result = check(empty_database)
    assert result.returncode == 3
    assert f"database at revision base (empty), this version needs {HEAD}" in result.stderr
    migrate.upgrade(empty_database, "0002")
    result = check(empty_database)
    assert result.returncode == 3
    assert f"at revision 0002, this version needs {HEAD}" in result.stderr


def test_the_schema_of_this_version_or_a_newer_one_passes(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    result = check(empty_database)
    assert result.returncode == 0, result.stderr
    assert f"database at revision {HEAD}: this version's schema" in result.stdout
    # A newer release migrated further (rolling back to this one): its revision is unknown here.
    dsn = make_url(empty_database).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
    result = check(empty_database)
    assert result.returncode == 0, result.stderr
    assert "a newer schema" in result.stdout


def test_wait_returns_as_soon_as_the_migration_job_is_done(empty_database: str) -> None:
    waiting = subprocess.Popen(
        check_argv(empty_database, "--wait", "120"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stderr is not None
        first = waiting.stderr.readline()  # it says why it waits before the migration runs
        assert "migrations pending" in first
        assert waiting.poll() is None
        migrate.upgrade(empty_database)
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    assert "this version's schema" in out


def test_an_unreachable_database_is_waited_for_then_named_without_the_password() -> None:
    url = f"postgresql://connector_app:hunter2-secret@127.0.0.1:{free_port()}/connector"
    result = check(url, "--wait", "1")
    assert result.returncode == 3
    assert "database not reachable yet" in result.stderr
    assert "hunter2-secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_the_services_role_can_run_the_check(pg_server: PostgresServer) -> None:
    """The init containers use the services' database URL (rows only), not the owner's."""
    database = database_with_roles(pg_server)
    try:
        result = check(database.app_url)
        assert result.returncode == 0, result.stderr
        assert "this version's schema" in result.stdout
    finally:
        pg_server.drop_database(database.name)


def test_bad_wait_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--check", "--wait", "soon"])
    assert exited.value.code == 2
    assert "--wait" in capsys.readouterr().err
