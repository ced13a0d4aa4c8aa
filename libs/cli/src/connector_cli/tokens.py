"""`connector token mint`: print a development JWT for the API and the admin page.

The token is signed with the development HS256 secret: ``CONNECTOR_API__JWT__DEV_SECRET`` (or
its ``_FILE`` variant), else the one `connector dev` generated in ``<data dir>/dev-jwt-secret``.
The API accepts such tokens only with ``CONNECTOR_ENV=development``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SECRET_VARIABLE = "CONNECTOR_API__JWT__DEV_SECRET"  # noqa: S105 (a variable name)
SECRET_FILE_NAME = "dev-jwt-secret"  # noqa: S105 (a file name)
MAX_TTL = 30 * 24 * 3600


class TokenError(Exception):
    """Why no token could be minted (never contains the secret)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `connector token mint ...`."""
    token = sub.add_parser("token", help="development tokens for the API")
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    mint = actions.add_parser(
        "mint", help="print a development JWT signed with the dev secret (development only)"
    )
    mint.add_argument("--org", required=True, type=_org, help="organisation id (org_id claim)")
    mint.add_argument("--role", required=True, choices=["admin", "viewer"], help="role claim")
    mint.add_argument("--sub", default="developer", type=_subject, help="person (sub claim)")
    mint.add_argument(
        "--ttl", type=_ttl, default=12 * 3600, help="lifetime in seconds (default 43200)"
    )
    mint.add_argument(
        "--data-dir",
        default=os.environ.get("CONNECTOR_DATA_DIR", ".data"),
        help="where `connector dev` keeps its secrets (default .data)",
    )


def _org(value: str) -> str:
    from connector_api.auth import InvalidOrgId, canonical_org_id

    try:
        canonical = canonical_org_id(value)
    except InvalidOrgId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if canonical != value:
        # The API would fold it; a minted token names the organisation as the API knows it.
        raise argparse.ArgumentTypeError(f"write it in lower case: {canonical!r}")
    return value


def _subject(value: str) -> str:
    value = value.strip()
    if not 0 < len(value) <= 200 or not value.isprintable():
        raise argparse.ArgumentTypeError("must be 1-200 printable characters")
    return value


def _ttl(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number of seconds") from None
    if not 0 < seconds <= MAX_TTL:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_TTL} seconds")
    return seconds


def dev_secret(data_dir: str) -> str:
    """The development signing secret, from the environment or the data folder."""
    if value := os.environ.get(SECRET_VARIABLE, "").strip():
        return value
    if path := os.environ.get(f"{SECRET_VARIABLE}_FILE"):
        return _read_secret(Path(path), f"{SECRET_VARIABLE}_FILE")
    stored = Path(data_dir) / SECRET_FILE_NAME
    if stored.exists():
        return _read_secret(stored, str(stored))
    raise TokenError(
        f"no development JWT secret: set {SECRET_VARIABLE}, or run `make run` once "
        f"(it creates {stored})"
    )


def _read_secret(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenError(f"{name} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        # Python's message would quote a byte of the secret and its position.
        raise TokenError(f"{name} is not UTF-8 text") from None


def run(args: argparse.Namespace) -> int:
    """Print the token on stdout; problems go to stderr with exit code 2."""
    from connector_api.devtokens import mint_dev_token
    from connector_api.settings import DEV_AUDIENCE, DEV_ISSUER

    try:
        token = mint_dev_token(
            dev_secret(args.data_dir),
            org=args.org,
            role=args.role,
            subject=args.sub,
            ttl_seconds=args.ttl,
            issuer=os.environ.get("CONNECTOR_API__JWT__ISSUER", DEV_ISSUER),
            audience=os.environ.get("CONNECTOR_API__JWT__AUDIENCE", DEV_AUDIENCE),
        )
    except (TokenError, ValueError) as exc:
        print(f"connector token mint: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
