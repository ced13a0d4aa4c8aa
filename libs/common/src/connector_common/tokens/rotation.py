"""Finishing a token key rotation: which key ids the stored ciphertexts use, and re-encrypting
every ciphertext that is not under the newest key, online.

A ciphertext names its key id in its header (``crypto.py``), so the database itself says which
keys are in use: no bookkeeping that could drift. Re-encryption goes in batches, each its own
short transaction, in ``account_id`` order:

1. read a batch of rows whose access or refresh ciphertext does not start with the newest key's
   header (the rows to do, nothing else);
2. decrypt and re-encrypt them in this process (same plaintext, same account and field);
3. write them back only where ``version`` and ``lease_epoch`` are still what was read.

Step 3 makes it safe beside running refreshers: a refresher that wrote new tokens meanwhile
(``version + 1``) or claimed the row (``lease_epoch + 1``) wins, and the row is simply looked
at again in the next pass (its new ciphertexts are under the newest key if the refresher runs
with the new key ring). Rotation never bumps ``version`` or ``lease_epoch`` itself: it writes
no new material, and a refresher in the middle of an eBay call must not lose its result.

Nothing is remembered between runs because nothing needs to be: a row is done exactly when its
ciphertexts carry the newest key id, so a run interrupted (Ctrl-C, a crash, a lost database)
leaves committed batches done and the next run continues with what is left.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.crypto import FORMAT_VERSION, TokenCipher, TokenCipherError, TokenField
from connector_common.db.engine import SessionFactory, unit_of_work

MAX_PASSES = 5  # rows skipped because a refresher touched them are retried in later passes

# The key id of a ciphertext, read from its header (format byte, id length, id).
_KEY_ID_SQL = """
CASE WHEN length({col}) >= 2 AND get_byte({col}, 0) = 1
     THEN encode(substring({col} FROM 3 FOR get_byte({col}, 1)), 'escape')
     ELSE '(not a ciphertext)' END
"""


@dataclass(frozen=True)
class KeyUsage:
    """How many stored ciphertexts (access and refresh tokens) each key id protects."""

    ciphertexts: dict[str, int]
    rows: int  # token rows holding at least one ciphertext

    def other_than(self, key_id: str) -> dict[str, int]:
        """The key ids in use besides ``key_id``."""
        return {k: n for k, n in self.ciphertexts.items() if k != key_id and n}


@dataclass
class RotationProgress:
    """What a run did so far; ``on_batch`` receives it after every committed batch."""

    to_do: int  # rows needing re-encryption when the run started
    done: int = 0  # rows re-encrypted and committed by this run
    skipped: int = 0  # rows a refresher touched meanwhile (looked at again in the next pass)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)  # rows that do not decrypt
    passes: int = 0


async def key_usage(session: AsyncSession) -> KeyUsage:
    """Ciphertexts per key id, read from the ciphertexts themselves."""
    rows = (
        await session.execute(
            text(
                f"""
                SELECT kid, count(*) FROM (
                    SELECT {_KEY_ID_SQL.format(col="access_token_ct")} AS kid
                      FROM ebay_tokens WHERE access_token_ct IS NOT NULL
                    UNION ALL
                    SELECT {_KEY_ID_SQL.format(col="refresh_token_ct")}
                      FROM ebay_tokens WHERE refresh_token_ct IS NOT NULL
                ) AS c GROUP BY kid ORDER BY kid
                """  # noqa: S608 (the format arguments are our column names)
            )
        )
    ).all()
    count = await session.scalar(
        text(
            "SELECT count(*) FROM ebay_tokens "
            "WHERE access_token_ct IS NOT NULL OR refresh_token_ct IS NOT NULL"
        )
    )
    return KeyUsage({str(k): int(n) for k, n in rows}, int(count or 0))


def key_header(key_id: str) -> bytes:
    """The first bytes of every ciphertext made with ``key_id``."""
    raw = key_id.encode()
    return bytes([FORMAT_VERSION, len(raw)]) + raw


_PENDING = """
    (access_token_ct IS NOT NULL AND substring(access_token_ct FOR :n) <> :header)
 OR (refresh_token_ct IS NOT NULL AND substring(refresh_token_ct FOR :n) <> :header)
"""


async def rows_to_do(session: AsyncSession, primary: str) -> int:
    """Token rows with a ciphertext not under ``primary``."""
    header = key_header(primary)
    count = await session.scalar(
        text(f"SELECT count(*) FROM ebay_tokens WHERE {_PENDING}"),  # noqa: S608 (constant)
        {"n": len(header), "header": header},
    )
    return int(count or 0)


@dataclass(frozen=True)
class _Row:
    account_id: uuid.UUID
    access: bytes | None
    refresh: bytes | None
    version: int
    epoch: int


async def _next_batch(
    session: AsyncSession, primary: str, after: uuid.UUID | None, size: int
) -> list[_Row]:
    header = key_header(primary)
    rows = (
        await session.execute(
            text(
                f"""
                SELECT account_id, access_token_ct, refresh_token_ct, version, lease_epoch
                  FROM ebay_tokens
                 WHERE (CAST(:after AS uuid) IS NULL OR account_id > :after) AND ({_PENDING})
                 ORDER BY account_id
                 LIMIT :size
                """  # noqa: S608 (constant)
            ),
            {"after": after, "n": len(header), "header": header, "size": size},
        )
    ).all()
    return [_Row(*row) for row in rows]


async def _write_batch(
    session: AsyncSession, primary: str, rewrapped: list[tuple[_Row, bytes | None, bytes | None]]
) -> int:
    if not rewrapped:
        return 0
    written = await session.execute(
        text(
            """
            UPDATE ebay_tokens AS t
               SET access_token_ct = v.access, refresh_token_ct = v.refresh, key_id = :key_id
              FROM unnest(CAST(:ids AS uuid[]), CAST(:access AS bytea[]),
                          CAST(:refresh AS bytea[]), CAST(:versions AS int[]),
                          CAST(:epochs AS bigint[])) AS v(id, access, refresh, version, epoch)
             WHERE t.account_id = v.id AND t.version = v.version AND t.lease_epoch = v.epoch
            """
        ),
        {
            "key_id": primary,
            "ids": [r.account_id for r, _, _ in rewrapped],
            "access": [a for _, a, _ in rewrapped],
            "refresh": [f for _, _, f in rewrapped],
            "versions": [r.version for r, _, _ in rewrapped],
            "epochs": [r.epoch for r, _, _ in rewrapped],
        },
    )
    return int(written.rowcount or 0)  # type: ignore[attr-defined]


def _rewrap(cipher: TokenCipher, row: _Row) -> tuple[bytes | None, bytes | None]:
    def one(blob: bytes | None, field: TokenField) -> bytes | None:
        if blob is None or not cipher.needs_rewrap(blob):
            return blob
        plain = cipher.decrypt(blob, row.account_id, field)
        return cipher.encrypt(plain, row.account_id, field)

    return one(row.access, "access_token"), one(row.refresh, "refresh_token")


async def rotate(
    sessions: SessionFactory,
    cipher: TokenCipher,
    *,
    batch_size: int = 500,
    on_batch: Callable[[RotationProgress], None] | None = None,
) -> RotationProgress:
    """Re-encrypt every ciphertext not under the cipher's newest key; see the module docstring.

    Raises whatever the database raises (committed batches stay done); a row that does not
    decrypt with the ring is left as it is and reported in ``failed``.
    """
    primary = cipher.primary_key_id
    async with unit_of_work(sessions) as session:
        progress = RotationProgress(to_do=await rows_to_do(session, primary))
    report = on_batch or (lambda _: None)
    while progress.passes < MAX_PASSES:
        progress.passes += 1
        touched = await _sweep(sessions, cipher, batch_size, progress, report)
        if touched == 0:
            break  # nothing left that we could do
    return progress


async def _sweep(
    sessions: SessionFactory,
    cipher: TokenCipher,
    batch_size: int,
    progress: RotationProgress,
    report: Callable[[RotationProgress], None],
) -> int:
    """One pass over the table; returns how many rows it re-encrypted or skipped."""
    primary = cipher.primary_key_id
    after: uuid.UUID | None = None
    touched = 0
    while True:
        async with unit_of_work(sessions) as session:
            batch = await _next_batch(session, primary, after, batch_size)
            if not batch:
                return touched
            after = batch[-1].account_id
            rewrapped = []
            for row in batch:
                if row.account_id in progress.failed:
                    continue
                try:
                    access, refresh = _rewrap(cipher, row)
                except TokenCipherError as exc:
                    progress.failed[row.account_id] = str(exc)
                    continue
                rewrapped.append((row, access, refresh))
            written = await _write_batch(session, primary, rewrapped)
        progress.done += written
        progress.skipped += len(rewrapped) - written
        touched += len(rewrapped)
        report(progress)
