"""`connector api`: serve the REST API and admin page with uvicorn.

SIGTERM (or Ctrl-C) stops accepting connections, lets requests in flight finish (up to the
grace period), runs the lifespan shutdown (outbox relay, NATS, database), and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import uvicorn

from connector_api.settings import ApiSettings
from connector_common.logs import configure_logging, get_logger
from connector_common.redaction import register_secret, register_settings_secrets
from connector_common.settings import SettingsError, load_settings

GRACE_SECONDS = 25  # within Kubernetes' default 30 s termination grace period


def _parser(development: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector api", description="Run the REST API and the admin page."
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1" if development else "0.0.0.0",  # noqa: S104 (a container's port)
        help="interface to listen on (default 127.0.0.1 in development, else 0.0.0.0)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    return parser


def _port(value: int) -> int:
    if not 0 < value < 65536:
        raise SettingsError("--port must be between 1 and 65535")
    return value


def register_secrets(settings: ApiSettings) -> None:
    """Make every configured secret redactable in logs, whatever shape it takes."""
    # The common ones (eBay client secret, each token key, NATS credentials), then the API's.
    register_settings_secrets(settings)
    for secret in (
        settings.api.jwt.dev_secret,
        settings.api.session_secret,
        settings.api.oidc.client_secret,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())


def main(argv: Sequence[str]) -> int:
    """Entry point of `connector api`; returns the exit code."""
    development = os.environ.get("CONNECTOR_ENV", "").lower() == "development"
    args = _parser(development).parse_args(list(argv))
    try:
        port = _port(args.port)
        settings = load_settings(ApiSettings)
    except SettingsError as exc:
        sys.stderr.write(f"connector api: {exc}\n")
        return 2
    configure_logging(settings.log_level, settings.log_format, service=settings.service_name)
    register_secrets(settings)
    from connector_api.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=port,
        log_config=None,  # our structlog handlers, not uvicorn's
        access_log=False,  # the middleware writes one redacted line per request
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        timeout_graceful_shutdown=GRACE_SECONDS,
        server_header=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    get_logger(__name__).info("api starting", host=args.host, port=port)
    # uvicorn handles SIGTERM itself (graceful stop), then re-raises it with the handler that was
    # there before; with this one the re-raised signal is a no-op and we exit 0, not -15.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    # uvicorn exits the process itself only on start-up failure; a clean stop returns here.
    return 0 if server.started else 1
