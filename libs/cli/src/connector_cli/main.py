"""The `connector` command: one entry point for every part of the system."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from connector_common.settings import SettingsError

# `connector <name> ...` runs `<module>.main(argv)`; each service parses its own flags.
SERVICE_COMMANDS: dict[str, tuple[str, str]] = {
    "api": ("connector_api.main", "run the REST API and admin page"),
    "scheduler": ("connector_scheduler.main", "run the scheduler"),
    "token-refresher": ("connector_token_refresher.main", "run the token refresher"),
    "health-checker": ("connector_health_checker.main", "run the health checker"),
    "sandbox": ("ebay_sandbox.main", "run the local eBay sandbox (development stack)"),
}

# Commands of the development stack (the connector-devstack and connector-ebay-sandbox packages),
# which production images leave out.
DEVSTACK_MODULES = {
    "dev": "connector_devstack.dev",
    "infra": "connector_devstack.dev",
    "sandbox": "ebay_sandbox.main",
}
DEVSTACK_HINT = (
    "connector {command}: this is a development command, and the development stack is not "
    "installed here (production images leave it out on purpose). In a checkout of the "
    "repository, `make run` installs it and starts everything; or install it with "
    "`uv sync --group devstack` (the embedded PostgreSQL and NATS servers, the eBay sandbox "
    "and `connector dev`)."
)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port (0-65535)")
    return port


def _wait_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {value!r}") from None
    if not 0 <= seconds <= 24 * 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector",
        description="eBay connector: tokens kept fresh and encrypted, accounts health-checked.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run the whole system locally (what `make run` does)")
    dev.add_argument("--data-dir", default=os.environ.get("CONNECTOR_DATA_DIR", ".data"))
    dev.add_argument(
        "--api-port", type=_port, default=8000, help="API port (default 8000; 0: any free port)"
    )

    infra = sub.add_parser("infra", help="start only embedded PostgreSQL + NATS, print URLs")
    infra.add_argument("--data-dir", default=os.environ.get("CONNECTOR_DATA_DIR", ".data"))

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--url", help="database URL (default: CONNECTOR_DATABASE__URL)")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument(
        "--downgrade", action="store_true", help="migrate down to --revision (e.g. base)"
    )
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing: exit 0 when the database has this version's schema (or a newer "
        "one), 3 when migrations are pending",
    )
    migrate.add_argument(
        "--wait",
        type=_wait_seconds,
        default=0.0,
        metavar="SECONDS",
        help="with --check: wait up to SECONDS for the migration to be applied (an init "
        "container holding a new version's pods until the migration Job is done)",
    )

    from connector_cli import events, keys, provision, tokens

    provision.add_parser(sub)
    tokens.add_parser(sub)
    events.add_parser(sub)
    keys.add_parser(sub)

    for name, (_module, help_text) in SERVICE_COMMANDS.items():
        service = sub.add_parser(name, help=help_text, add_help=False)
        service.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `connector` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in SERVICE_COMMANDS:
        # Services parse their own flags; argparse's REMAINDER rejects a leading "--port N".
        args = argparse.Namespace(command=arguments[0], args=arguments[1:])
    else:
        args = _parser().parse_args(arguments)
    try:
        return _dispatch(args)
    except SettingsError as exc:
        print(f"connector: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _devstack_missing(command: str) -> bool:
    """True (after saying what to install) when a development command's package is missing."""
    module = DEVSTACK_MODULES.get(command)
    if module is None:
        return False
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        print(DEVSTACK_HINT.format(command=command), file=sys.stderr)
    return not found


def _dispatch(args: argparse.Namespace) -> int:
    if _devstack_missing(args.command):
        return 2
    if args.command == "dev":
        from connector_devstack.dev import run_dev

        return run_dev(args.data_dir, api_port=args.api_port)
    if args.command == "infra":
        from connector_devstack.dev import run_infra

        return run_infra(args.data_dir)
    if args.command == "migrate":
        return _migrate(args)
    if args.command == "nats":
        from connector_cli import provision

        return provision.run(args)
    if args.command == "token":
        from connector_cli import tokens

        return tokens.run(args)
    if args.command == "events":
        from connector_cli import events

        return events.run(args)
    if args.command == "keys":
        from connector_cli import keys

        return keys.run(args)
    module_name, _help = SERVICE_COMMANDS[args.command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"connector: {args.command} is not part of this build yet", file=sys.stderr)
            return 2
        raise
    return int(module.main(args.args))


def _migrate(args: argparse.Namespace) -> int:
    from alembic.util import CommandError
    from pydantic import SecretStr, ValidationError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from connector_common import migrate
    from connector_common.redaction import redact_text, register_secret
    from connector_common.settings import DatabaseOnlySettings, DatabaseSettings, load_settings

    if args.url:
        try:
            url = DatabaseSettings(url=SecretStr(args.url)).url.get_secret_value()
        except ValidationError:
            raise SettingsError("--url must be a postgresql:// URL") from None
    else:
        url = load_settings(DatabaseOnlySettings).database.url.get_secret_value()
    try:
        if password := make_url(url).password:
            register_secret(str(password))  # so no error line below can carry it
        if args.check:
            return _check_schema(url, args.wait)
        if args.downgrade:
            migrate.downgrade(url, args.revision)
        else:
            migrate.upgrade(url, args.revision)
        revision = migrate.current_revision(url)
    except (ArgumentError, NoSuchModuleError):
        raise SettingsError("the database URL cannot be parsed") from None
    except CommandError as exc:  # e.g. an unknown --revision
        print(f"connector migrate: {redact_text(str(exc))[:300]}", file=sys.stderr)
        return 2
    except DBAPIError as exc:
        # One line, not a traceback: the driver's first line says what happened.
        reason = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else ""
        print(f"connector migrate: database error: {redact_text(reason)[:300]}", file=sys.stderr)
        return 1
    print(f"database at revision {revision or 'base (empty)'}")
    return 0


def _check_schema(url: str, wait: float) -> int:
    """`connector migrate --check [--wait N]`: 0 when the schema suits this version, else 3.

    While waiting, a database that does not answer yet is waited for too (one line per reason
    change and a progress line every 10 s); its errors are never printed with the password.
    """
    import time

    from sqlalchemy.exc import DBAPIError

    from connector_common import migrate
    from connector_common.redaction import redact_text

    started = time.monotonic()
    deadline = started + wait
    last_said = ""
    last_progress = started
    while True:
        try:
            state, current, head = migrate.schema_state(url)
        except DBAPIError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else ""
            said = f"database not reachable yet: {redact_text(reason)[:200]}"
        else:
            if state != "behind":
                relation = "this version's schema" if state == "current" else "a newer schema"
                print(f"database at revision {current}: {relation} (this version: {head})")
                return 0
            said = (
                f"migrations pending: database at revision {current or 'base (empty)'}, "
                f"this version needs {head}"
            )
        now = time.monotonic()
        if now >= deadline:
            print(f"connector migrate --check: {said}", file=sys.stderr)
            return 3
        if said != last_said or now - last_progress >= 10:
            print(
                f"connector migrate --check: {said}; waiting ({now - started:.0f} s of {wait:.0f})",
                file=sys.stderr,
                flush=True,
            )
            last_said, last_progress = said, now
        time.sleep(min(2.0, max(0.0, deadline - now)))


if __name__ == "__main__":
    sys.exit(main())
