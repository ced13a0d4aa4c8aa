"""``connector sandbox``: run the local eBay sandbox as a process.

    connector sandbox --port 8081 [--host 127.0.0.1] [--token-lifetime SECONDS]
        [--client-id ID --client-secret SECRET --ru-name RUNAME --accept-url URL
         [--decline-url URL]] [--no-demo-sellers] [--state-file PATH]

The secret may also come from ``EBAY_SANDBOX_CLIENT_SECRET`` (keeps it out of ``ps``).
SIGTERM and Ctrl-C stop it cleanly (uvicorn's own signal handling). With ``--state-file``, its
sellers, consents and tokens are kept in that SQLite file and are there again after a restart.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from ebay_sandbox.app import create_app
from ebay_sandbox.state import AppRegistration, SandboxConfig
from ebay_sandbox.store import StateFileBusy

SECRET_ENV = "EBAY_SANDBOX_CLIENT_SECRET"  # noqa: S105 - a variable name


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError("must be a TCP port (1-65535)")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of ``connector sandbox``."""
    p = argparse.ArgumentParser(
        prog="connector sandbox",
        description="A local eBay speaking eBay's wire formats (development and tests only).",
    )
    p.add_argument("--port", type=_port, required=True, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--token-lifetime",
        type=_positive_int,
        default=7200,
        help="access token lifetime in seconds (eBay: 7200)",
    )
    p.add_argument("--client-id", help="register this app at start-up")
    p.add_argument("--client-secret", help=f"its client secret (or env {SECRET_ENV})")
    p.add_argument("--ru-name", help="its RuName (the OAuth redirect_uri value)")
    p.add_argument("--accept-url", help="where consent redirects for that RuName")
    p.add_argument("--decline-url", help="where a declined consent redirects (default: accept)")
    p.add_argument("--no-demo-sellers", action="store_true", help="start without demo sellers")
    p.add_argument(
        "--state-file",
        type=Path,
        help="keep sellers, consents and tokens in this SQLite file across restarts",
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def config_from_args(args: argparse.Namespace, p: argparse.ArgumentParser) -> SandboxConfig:
    """Validate the app flags together (all or none) and build the configuration."""
    secret = args.client_secret or os.environ.get(SECRET_ENV)
    app_flags = {
        "--client-id": args.client_id,
        "--client-secret": secret,
        "--ru-name": args.ru_name,
        "--accept-url": args.accept_url,
    }
    given = [name for name, value in app_flags.items() if value]
    apps: list[AppRegistration] = []
    if given:
        missing = [name for name, value in app_flags.items() if not value]
        if missing:
            p.error("registering an app needs " + ", ".join(missing))
        if not str(args.accept_url).startswith(("http://", "https://")):
            p.error("--accept-url must be an http:// or https:// URL")
        apps.append(
            AppRegistration(
                args.client_id, str(secret), args.ru_name, args.accept_url, args.decline_url
            )
        )
    elif args.decline_url:
        p.error("--decline-url needs --client-id, --client-secret, --ru-name and --accept-url")
    return SandboxConfig(
        access_token_lifetime=args.token_lifetime,
        apps=apps,
        demo_sellers=not args.no_demo_sellers,
        state_file=args.state_file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT; exit 2 on bad flags (argparse)."""
    p = parser()
    args = p.parse_args(list(argv) if argv is not None else None)
    config = config_from_args(args, p)
    try:
        app = create_app(config)
    except (StateFileBusy, ValueError, OSError, sqlite3.Error) as exc:
        print(f"connector sandbox: cannot use the state file: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    print(  # noqa: T201 - the one line a person starting it by hand needs
        f"eBay sandbox listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True
    )
    # uvicorn handles SIGTERM (graceful shutdown), then re-raises it to the handler that was
    # installed before it ran; a no-op one there makes SIGTERM a clean exit with status 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        app.state.sandbox.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
