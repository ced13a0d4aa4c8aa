"""`connector keys status` and `connector keys rotate` (issue 13): a key rotation you can
finish, on 100,000 rows, beside running refreshers, interrupted and crashed half-way."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, create_session_factory, unit_of_work
from connector_common.db.models import EbayToken
from connector_common.ebay import EbayClient
from connector_common.tokens.rotation import key_usage, rows_to_do
from connector_common.tokens.store import RefreshOutcome, RefreshRequest, StoreTiming, TokenStore
from tests.fixtures.keys import bulk_seed
from tests.fixtures.pipeline import make_org_row, seed_many
from tests.fixtures.sandbox import SandboxHandle


@dataclass(frozen=True)
class Ring:
    """Two keys: the old one the rows were written with, and the new one."""

    old: bytes
    new: bytes

    def env(self, *key_ids: str) -> str:
        keys = {"old": self.old, "new": self.new}
        return ",".join(f"{k}:{base64.b64encode(keys[k]).decode()}" for k in key_ids)

    def cipher(self, *key_ids: str) -> TokenCipher:
        keys = {"old": self.old, "new": self.new}
        return TokenCipher({k: keys[k] for k in key_ids})


@pytest.fixture
def ring() -> Ring:
    return Ring(os.urandom(32), os.urandom(32))


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return create_session_factory(engine)


@dataclass
class Finished:
    code: int
    out: str
    err: str


async def keys_command(
    database_url: str, token_keys: str, *args: str
) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update({"CONNECTOR_DATABASE__URL": database_url, "CONNECTOR_TOKEN_KEYS": token_keys})
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector_cli",
        "keys",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process, timeout: float = 240) -> Finished:
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


async def all_tokens(sessions: SessionFactory) -> list[EbayToken]:
    async with unit_of_work(sessions) as session:
        return list((await session.scalars(select(EbayToken))).all())


async def usage(sessions: SessionFactory) -> dict[str, int]:
    async with unit_of_work(sessions) as session:
        return (await key_usage(session)).ciphertexts


def make_store(
    sessions: SessionFactory, cipher: TokenCipher, client: EbayClient, owner: str
) -> TokenStore:
    timing = StoreTiming(
        lease_seconds=30.0,
        refresh_lead_seconds=600.0,
        retry_base_seconds=5.0,
        retry_max_seconds=300.0,
        permanent_retry_seconds=3600.0,
    )
    return TokenStore(sessions, cipher, client, owner=owner, namespace="ebay", timing=timing)


async def test_status_counts_ciphertexts_per_key_id_from_the_database(
    database_url: str, sessions: SessionFactory, ring: Ring
) -> None:
    org = await make_org_row(sessions)
    await asyncio.to_thread(bulk_seed, database_url, org.id, ring.cipher("old"), 30)
    await asyncio.to_thread(bulk_seed, database_url, org.id, ring.cipher("old", "new"), 12)
    done = await finish(await keys_command(database_url, ring.env("old", "new"), "status"))
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert any(line.split()[:2] == ["old", "60"] and "older" in line for line in lines), done.out
    assert any(line.split()[:2] == ["new", "24"] and "newest" in line for line in lines), done.out
    assert "token rows with ciphertexts: 42" in done.out
    assert "still in use besides 'new': 'old' (60)" in lines[-1]
    # A key id the ring no longer has is named as such.
    done = await finish(await keys_command(database_url, ring.env("new"), "status"))
    assert "NOT IN CONNECTOR_TOKEN_KEYS" in done.out


async def test_rotate_finishes_on_100k_rows_beside_running_refreshers(
    database_url: str,
    sessions: SessionFactory,
    ring: Ring,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
) -> None:
    org = await make_org_row(sessions)
    old = ring.cipher("old")
    live = list(await seed_many(sessions, old, ebay_client, sandbox, org, 30, prefix="rot"))
    bulk = await asyncio.to_thread(bulk_seed, database_url, org.id, old, 100_000 - len(live))
    before = {t.account_id: t for t in await all_tokens(sessions)}
    refresh_plain = {
        a: old.decrypt(before[a].refresh_token_ct or b"", a, "refresh_token") for a in live
    }
    # The services were rolled with the new ring first; refreshers keep refreshing meanwhile.
    new = ring.cipher("old", "new")
    stop = asyncio.Event()
    outcomes: Counter[RefreshOutcome] = Counter()

    async def refresher(owner: str) -> None:
        store = make_store(sessions, new, ebay_client, owner)
        while not stop.is_set():
            for account_id in live:
                result = await store.refresh(RefreshRequest(account_id, reason="manual"))
                outcomes[result.outcome] += 1

    refreshers = [asyncio.create_task(refresher(f"refresher-{n}")) for n in range(3)]
    try:
        done = await finish(await keys_command(database_url, ring.env("old", "new"), "rotate"))
    finally:
        stop.set()
        await asyncio.gather(*refreshers)
    assert done.code == 0, done.out + done.err
    # Refreshers may have moved a few live rows to the new key before the count.
    to_do = int(done.out.split(" token rows to re-encrypt")[0].replace(",", ""))
    assert 100_000 - len(live) <= to_do <= 100_000
    assert "rows/s" in done.err  # the progress line
    assert done.out.splitlines()[-1] == (
        "every ciphertext is under 'new': key id(s) 'old' may now be removed from "
        "CONNECTOR_TOKEN_KEYS."
    )
    assert await usage(sessions) == {"new": 200_000}
    # The old key is removable: the new key alone decrypts every row, to what it was.
    only_new = ring.cipher("new")
    after = {t.account_id: t for t in await all_tokens(sessions)}
    assert set(after) == set(before)  # nothing lost
    for account_id in bulk:
        token = after[account_id]
        assert only_new.decrypt(token.access_token_ct or b"", account_id, "access_token") == (
            f"access-{account_id}"
        )
        assert only_new.decrypt(token.refresh_token_ct or b"", account_id, "refresh_token") == (
            f"refresh-{account_id}"
        )
        assert token.version == 1  # rotation writes no new token material
    for account_id in live:
        token = after[account_id]
        assert (
            only_new.decrypt(token.refresh_token_ct or b"", account_id, "refresh_token")
            == (refresh_plain[account_id])
        )
        only_new.decrypt(token.access_token_ct or b"", account_id, "access_token")
    assert outcomes[RefreshOutcome.REFRESHED] >= len(live)
    assert set(outcomes) <= {RefreshOutcome.REFRESHED, RefreshOutcome.BUSY}, outcomes


async def rows_left(sessions: SessionFactory) -> int:
    async with unit_of_work(sessions) as session:
        return await rows_to_do(session, "new")


async def stop_half_way(
    database_url: str, sessions: SessionFactory, ring: Ring, sig: signal.Signals
) -> Finished:
    """Start a rotation in small batches and send ``sig`` once some, not all, rows are done."""
    total = await rows_left(sessions)
    process = await keys_command(
        database_url, ring.env("old", "new"), "rotate", "--batch-size", "50"
    )
    deadline = asyncio.get_running_loop().time() + 120
    while not 0 < await rows_left(sessions) < total * 0.8:
        assert asyncio.get_running_loop().time() < deadline, "the rotation did not start"
        assert process.returncode is None, "it finished before it could be stopped"
        await asyncio.sleep(0.05)
    process.send_signal(sig)
    return await finish(process)


async def test_rotate_resumes_after_ctrl_c_and_after_a_crash(
    database_url: str, sessions: SessionFactory, ring: Ring
) -> None:
    org = await make_org_row(sessions)
    ids = await asyncio.to_thread(bulk_seed, database_url, org.id, ring.cipher("old"), 20_000)
    interrupted = await stop_half_way(database_url, sessions, ring, signal.SIGINT)
    assert interrupted.code == 130, interrupted.out + interrupted.err
    assert "Run it again to continue" in interrupted.err
    halfway = await usage(sessions)
    assert halfway["old"] > 0
    assert halfway["new"] > 0
    crashed = await stop_half_way(database_url, sessions, ring, signal.SIGKILL)
    assert crashed.code == -signal.SIGKILL
    # Whatever state the stops left, every row still decrypts with the ring.
    both = ring.cipher("old", "new")
    for token in await all_tokens(sessions):
        assert both.decrypt(token.refresh_token_ct or b"", token.account_id, "refresh_token") == (
            f"refresh-{token.account_id}"
        )
    resumed = await finish(await keys_command(database_url, ring.env("old", "new"), "rotate"))
    assert resumed.code == 0, resumed.out + resumed.err
    assert "may now be removed" in resumed.out.splitlines()[-1]
    assert await usage(sessions) == {"new": 2 * len(ids)}


async def test_a_row_that_does_not_decrypt_is_reported_and_keeps_its_key(
    database_url: str, sessions: SessionFactory, ring: Ring
) -> None:
    org = await make_org_row(sessions)
    ids = await asyncio.to_thread(bulk_seed, database_url, org.id, ring.cipher("old"), 10)
    broken = ids[3]
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, broken)
        assert token is not None
        blob = token.access_token_ct
        assert blob is not None
        token.access_token_ct = blob[:-1] + bytes([blob[-1] ^ 1])  # one bit flipped
    done = await finish(await keys_command(database_url, ring.env("old", "new"), "rotate"))
    assert done.code == 1
    assert f"not re-encrypted: account {broken}" in done.out
    assert "still in use besides 'new': 'old' (2)" in done.out.splitlines()[-1]
    assert await usage(sessions) == {"new": 18, "old": 2}


@pytest.mark.parametrize(
    ("env", "says"),
    [({}, "CONNECTOR_TOKEN_KEYS"), ({"CONNECTOR_TOKEN_KEYS": "old:bad"}, "not valid base64")],
)
async def test_bad_settings_exit_2_naming_the_variable(env: dict[str, str], says: str) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector_cli",
        "keys",
        "status",
        env={**environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    done = await finish(process)
    assert done.code == 2
    assert says in done.err
