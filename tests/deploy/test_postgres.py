"""PostgreSQL as deploy/postgres sets it up, tried on the embedded server: the services' role
can read and write rows but change no schema; a logical backup restores into a database the
connector runs on; the example database URL verifies the server with the mounted CA."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from connector_common import migrate
from connector_common.crypto import TokenCipher
from connector_common.db.engine import create_engine, create_session_factory, unit_of_work
from connector_common.db.models import EbayAccount, EbayToken
from connector_common.settings import DatabaseSettings, parse_key_ring
from connector_devstack.embedded import free_port, postgres_bin_dir
from tests.fixtures.factories import make_account, make_org, make_token
from tests.fixtures.infra import PostgresServer, database_with_roles, unique_name
from tests.fixtures.nats_cluster import write_tls

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SECRETS = ROOT / "deploy" / "examples" / "secret.yaml"


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_the_services_role_writes_rows_but_changes_no_schema(pg_server: PostgresServer) -> None:
    database = database_with_roles(pg_server)
    try:
        with psycopg.connect(dsn(database.app_url), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO organisations (id, external_id, name) "
                "VALUES (gen_random_uuid(), 'roles-test', 'roles')"
            )
            conn.execute("UPDATE organisations SET name = 'x' WHERE external_id = 'roles-test'")
            conn.execute("DELETE FROM organisations WHERE external_id = 'roles-test'")
            for ddl in (
                "CREATE TABLE intruder (id int)",
                "ALTER TABLE organisations ADD COLUMN intruder int",
                "DROP TABLE outbox",
                "TRUNCATE outbox",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(ddl)
        with psycopg.connect(dsn(database.owner_url), autocommit=True) as conn:
            owner = conn.execute(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        assert owner == [("connector",)]
    finally:
        pg_server.drop_database(database.name)


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(postgres_bin_dir() / tool), *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{tool}: {result.stderr[-2000:]}"
    return result


async def test_a_logical_backup_restores_into_a_database_the_connector_runs_on(
    pg_server: PostgresServer, token_keys: str, tmp_path: Path
) -> None:
    """pg_dump / pg_restore from the embedded wheel (docs/operations.md, Backup and restore)."""
    source = database_with_roles(pg_server)
    target = unique_name("connector_restored_")
    cipher = TokenCipher(parse_key_ring(token_keys))
    engine = create_engine(DatabaseSettings(url=SecretStr(source.app_url)), "tests")
    sessions = create_session_factory(engine)
    try:
        accounts = []
        async with unit_of_work(sessions) as session:  # written as the services' role
            org = await make_org(session)
            for n in range(25):
                account = await make_account(session, org, house_name=f"House {n}")
                await make_token(session, account, cipher, access=f"access-{n}")
                accounts.append(account.id)
        await engine.dispose()

        dump = tmp_path / "connector.dump"
        _run("pg_dump", "--format=custom", "--file", str(dump), dsn(source.owner_url))
        with psycopg.connect(pg_server.admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{target}" OWNER connector')
        restored_owner = make_url(source.owner_url).set(database=target)
        restored_app = make_url(source.app_url).set(database=target)
        admin = make_url(pg_server.url_for(target)).set(drivername="postgresql")
        _run(
            "pg_restore",
            "--exit-on-error",
            "--dbname",
            admin.render_as_string(hide_password=False),
            str(dump),
        )

        app_url = restored_app.render_as_string(hide_password=False)
        state, revision, head = migrate.schema_state(app_url)
        assert (state, revision) == ("current", head)
        restored = create_engine(DatabaseSettings(url=SecretStr(app_url)), "tests")
        try:
            async with unit_of_work(create_session_factory(restored)) as session:
                found = (await session.scalars(select(EbayAccount.id))).all()
                assert sorted(found) == sorted(accounts)
                # Ciphertexts are bound to their account id, which the restore keeps.
                for token in (await session.scalars(select(EbayToken))).all():
                    assert token.access_token_ct is not None
                    plain = cipher.decrypt(token.access_token_ct, token.account_id, "access_token")
                    assert plain.startswith("access-")
                # The grants came along: the services' role still writes rows.
                await session.execute(text("UPDATE ebay_accounts SET purpose = 'restored'"))
        finally:
            await restored.dispose()
        owner_dsn = restored_owner.set(drivername="postgresql")
        with psycopg.connect(owner_dsn.render_as_string(hide_password=False)) as conn:
            tables = conn.execute(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        assert tables == [("connector",)]
    finally:
        pg_server.drop_database(target)
        pg_server.drop_database(source.name)


def _example_url() -> str:
    for document in yaml.safe_load_all(EXAMPLE_SECRETS.read_text()):
        if document and document["metadata"]["name"] == "ebay-connector-db":
            return str(document["stringData"]["app-url"])
    raise AssertionError("no ebay-connector-db example")


class TlsFront:
    """PostgreSQL's TLS negotiation in front of the embedded server (whose wheel is built
    without TLS): answers SSLRequest with 'S', does the TLS handshake with a certificate from
    our test CA, then relays the bytes. What is tried here is the client side, the connector's
    URL: which CA verifies the server, and that the host name must match."""

    SSL_REQUEST = 80877103
    GSS_REQUEST = 80877104

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TlsFront:
        # 127.0.0.2 too: an address the certificate does not name.
        self.port = free_port()
        self._server = await asyncio.start_server(
            self._serve, ["127.0.0.1", "127.0.0.2"], self.port
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length, code = struct.unpack("!II", await reader.readexactly(8))
                if code == self.GSS_REQUEST:
                    writer.write(b"N")
                    await writer.drain()
                    continue
                assert (length, code) == (8, self.SSL_REQUEST), "a client that skips TLS"
                break
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(self.context)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()


def _connect_as_the_image_would(url: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The connector's own engine, in a process whose user has no ~/.postgresql (the image's
    user has no home folder): only what the URL says decides the TLS verification."""
    code = (
        "import asyncio, sys\n"
        "from pydantic import SecretStr\n"
        "from sqlalchemy import text\n"
        "from connector_common.db.engine import create_engine\n"
        "from connector_common.settings import DatabaseSettings\n"
        "async def main():\n"
        "    engine = create_engine(DatabaseSettings(url=SecretStr(sys.argv[1])), 'tls-check')\n"
        "    try:\n"
        "        async with engine.connect() as connection:\n"
        "            print('answered', await connection.scalar(text('SELECT 1')))\n"
        "    finally:\n"
        "        await engine.dispose()\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNECTOR_", "PG"))}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", code, url], env=env, capture_output=True, text=True, check=False
    )


async def test_the_example_database_url_verifies_the_server_with_the_mounted_ca(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    ca, cert, key = write_tls(tmp_path / "tls")
    other_ca, _, _ = write_tls(tmp_path / "other")
    home = tmp_path / "home"
    home.mkdir()
    mounted_ca = tmp_path / "secrets" / "postgres-ca.crt"  # where the overlay mounts it
    mounted_ca.parent.mkdir()
    mounted_ca.write_bytes(ca.read_bytes())
    upstream = make_url(pg_server.base_url)
    assert upstream.port is not None
    example = make_url(_example_url())
    assert example.query["sslmode"] == "verify-full"

    def pointed_at(port: int, host: str = "localhost", **query: str) -> str:
        # The example's URL, at this server: same options, the CA where it is mounted.
        return example.set(
            host=host,
            port=port,
            username=upstream.username,
            password=None,
            database=upstream.database,
            query={"sslmode": "verify-full", **query},
        ).render_as_string(hide_password=False)

    async with TlsFront(upstream.port, cert, key) as front:
        verified = await asyncio.to_thread(
            _connect_as_the_image_would, pointed_at(front.port, sslrootcert=str(mounted_ca)), home
        )
        assert verified.returncode == 0, verified.stderr[-2000:]
        assert verified.stdout.strip() == "answered 1"
        # Without sslrootcert, verify-full looks in ~/.postgresql, which the image does not have.
        bare = await asyncio.to_thread(_connect_as_the_image_would, pointed_at(front.port), home)
        assert bare.returncode != 0
        assert "root certificate file" in bare.stderr
        # Another CA, or a name the certificate does not carry: refused, not trusted.
        wrong = await asyncio.to_thread(
            _connect_as_the_image_would,
            pointed_at(front.port, sslrootcert=str(other_ca)),
            home,
        )
        assert wrong.returncode != 0
        assert "SSL error" in wrong.stderr
        renamed = await asyncio.to_thread(
            _connect_as_the_image_would,
            pointed_at(front.port, host="127.0.0.2", sslrootcert=str(mounted_ca)),
            home,
        )
        assert renamed.returncode != 0
        assert "does not match host name" in renamed.stderr
