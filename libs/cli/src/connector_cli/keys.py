"""`connector keys status` and `connector keys rotate`: finish a token key rotation.

Both read ``CONNECTOR_DATABASE__URL`` and ``CONNECTOR_TOKEN_KEYS`` (or their ``_FILE``
variants), like the services. ``status`` counts the stored ciphertexts per key id; ``rotate``
re-encrypts everything under the newest key of the ring, online, in short batches, showing
rows/s and the time left, and says at the end which old key ids may now be removed. Ctrl-C (or
a crash) loses nothing: run it again and it continues with what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, TextIO

from pydantic import SecretStr, field_validator
from tqdm import tqdm

from connector_common.settings import (
    DatabaseSettings,
    EnvSettings,
    load_settings,
    parse_key_ring,
)

EXIT_INTERRUPTED = 130
PLAIN_PROGRESS_SECONDS = 5.0  # without a terminal: one progress line this often


class KeySettings(EnvSettings):
    """What the key commands need: the database and the key ring (no other secret)."""

    database: DatabaseSettings = DatabaseSettings()
    token_keys: SecretStr | None = None

    @field_validator("token_keys")
    @classmethod
    def _parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            raise ValueError("is required: the key ring whose newest key everything moves to")
        parse_key_ring(value.get_secret_value())
        return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `connector keys status|rotate`."""
    keys = sub.add_parser("keys", help="token encryption keys: usage and rotation")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    actions.add_parser("status", help="stored ciphertexts per key id (from the database)")
    rotate = actions.add_parser(
        "rotate", help="re-encrypt every token under the newest key (online, resumable)"
    )
    rotate.add_argument(
        "--batch-size",
        type=_batch_size,
        default=500,
        help="rows per transaction (default 500)",
    )


def _batch_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if not 1 <= size <= 10_000:
        raise argparse.ArgumentTypeError("must be between 1 and 10000")
    return size


def run(args: argparse.Namespace) -> int:
    """Entry point of `connector keys ...`."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from connector_common.crypto import TokenCipher
    from connector_common.redaction import redact_text, register_secret

    settings = load_settings(KeySettings)
    assert settings.token_keys is not None
    url = settings.database.url.get_secret_value()
    if password := make_url(url).password:
        register_secret(str(password))  # so no error line below can carry it
    cipher = TokenCipher(parse_key_ring(settings.token_keys.get_secret_value()))
    command = f"connector keys {args.keys_command}"
    try:
        if args.keys_command == "status":
            return asyncio.run(_status(settings, cipher, sys.stdout))
        return asyncio.run(_rotate(settings, cipher, args.batch_size, sys.stdout, sys.stderr))
    except DBAPIError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else ""
        print(f"{command}: database error: {redact_text(reason)[:300]}", file=sys.stderr)
        print("every batch committed so far is done; run it again to continue.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\nconnector keys rotate: interrupted; every batch committed so far is done. "
            "Run it again to continue.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _engine(settings: KeySettings) -> Any:
    from connector_common.db.engine import create_engine

    return create_engine(settings.database, application_name="connector-keys")


async def _status(settings: KeySettings, cipher: Any, out: TextIO) -> int:
    from connector_common.db.engine import create_session_factory, unit_of_work
    from connector_common.tokens.rotation import key_usage

    engine = _engine(settings)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            usage = await key_usage(session)
    finally:
        await engine.dispose()
    primary = cipher.primary_key_id
    print(f"{'key id':<32} {'ciphertexts':>12}  role", file=out)
    for key_id in dict.fromkeys([*cipher.key_ids, *usage.ciphertexts]):
        role = (
            "newest (encrypts)"
            if key_id == primary
            else "older (decrypts)"
            if key_id in cipher.key_ids
            else "NOT IN CONNECTOR_TOKEN_KEYS"
        )
        print(f"{key_id:<32} {usage.ciphertexts.get(key_id, 0):>12,}  {role}", file=out)
    print(f"token rows with ciphertexts: {usage.rows:,}", file=out)
    print(_verdict(cipher, usage.ciphertexts), file=out)
    return 0


def _verdict(cipher: Any, ciphertexts: dict[str, int]) -> str:
    primary = cipher.primary_key_id
    older = [k for k in cipher.key_ids if k != primary]
    still = {k: n for k, n in ciphertexts.items() if k != primary and n}
    if still:
        used = ", ".join(f"{k!r} ({n:,})" for k, n in still.items())
        return f"still in use besides {primary!r}: {used}; run `connector keys rotate`."
    if older:
        names = ", ".join(repr(k) for k in older)
        return (
            f"every ciphertext is under {primary!r}: key id(s) {names} may now be removed "
            "from CONNECTOR_TOKEN_KEYS."
        )
    return f"every ciphertext is under {primary!r}, the only key in CONNECTOR_TOKEN_KEYS."


class _Progress:
    """A tqdm bar on a terminal; otherwise one plain line every few seconds (logs)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._started = time.monotonic()
        self._printed = 0.0
        self._bar = (
            tqdm(total=total, unit="rows", unit_scale=True, desc="re-encrypting", file=stream)
            if self._tty
            else None
        )
        self.total = total

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.total = max(self._bar.total or 0, done)
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        if now - self._printed >= PLAIN_PROGRESS_SECONDS:
            self._printed = now
            self.line(done)

    def line(self, done: int) -> None:
        meter = tqdm.format_meter(
            done,
            max(self.total, done),
            time.monotonic() - self._started,
            unit="rows",
            unit_scale=True,
            prefix="re-encrypting",
            ncols=0,
        )
        print(meter, file=self._stream, flush=True)

    def close(self, done: int) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self.line(done)


async def _rotate(
    settings: KeySettings, cipher: Any, batch_size: int, out: TextIO, err: TextIO
) -> int:
    from connector_common.db.engine import create_session_factory, unit_of_work
    from connector_common.tokens.rotation import RotationProgress, key_usage, rotate, rows_to_do

    engine = _engine(settings)
    sessions = create_session_factory(engine)
    try:
        async with unit_of_work(sessions) as session:
            total = await rows_to_do(session, cipher.primary_key_id)
        print(
            f"{total:,} token rows to re-encrypt under key {cipher.primary_key_id!r}",
            file=out,
            flush=True,
        )
        bar = _Progress(total, err)
        done = [0]

        def report(progress: RotationProgress) -> None:
            done[0] = progress.done
            bar.update(progress.done)

        try:
            progress = await rotate(sessions, cipher, batch_size=batch_size, on_batch=report)
        finally:
            bar.close(done[0])
        async with unit_of_work(sessions) as session:
            usage = await key_usage(session)
    finally:
        await engine.dispose()
    print(
        f"re-encrypted {progress.done:,} rows in {progress.passes} pass(es); "
        f"{progress.skipped:,} were being refreshed and were looked at again",
        file=out,
    )
    for account_id, reason in list(progress.failed.items())[:20]:
        print(f"not re-encrypted: account {account_id}: {reason}", file=out)
    print(_verdict(cipher, usage.ciphertexts), file=out)
    return 0 if not usage.other_than(cipher.primary_key_id) else 1
