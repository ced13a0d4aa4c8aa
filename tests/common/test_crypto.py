"""AES-256-GCM token cipher: key ring, rotation, and binding to account and field."""

from __future__ import annotations

import os
import uuid

import pytest

from connector_common.crypto import DecryptionError, TokenCipher, UnknownKeyError
from connector_common.settings import parse_key_ring

TOKEN = "v^1.1#i^1#p^3#r^1#I^3#f^0#t^H4sIAAAAAAAAAOVYa2wUVRTe7ZYWLIiUEzjknnIh12pa=="


def ring(*ids: str) -> dict[str, bytes]:
    return {key_id: os.urandom(32) for key_id in ids}


def test_round_trip_and_ciphertext_hides_the_token() -> None:
    cipher = TokenCipher(ring("k1"))
    account = uuid.uuid4()
    blob = cipher.encrypt(TOKEN, account, "access_token")
    assert TOKEN.encode() not in blob
    assert cipher.decrypt(blob, account, "access_token") == TOKEN


def test_same_token_encrypts_differently_each_time() -> None:
    cipher = TokenCipher(ring("k1"))
    account = uuid.uuid4()
    assert cipher.encrypt(TOKEN, account, "access_token") != cipher.encrypt(
        TOKEN, account, "access_token"
    )


def test_ciphertext_carries_the_key_id_and_newest_key_encrypts() -> None:
    keys = ring("old", "new")
    cipher = TokenCipher(keys)
    blob = cipher.encrypt(TOKEN, uuid.uuid4(), "refresh_token")
    assert cipher.primary_key_id == "new"
    assert cipher.key_id_of(blob) == "new"


def test_rotation_old_ciphertexts_still_decrypt_and_need_rewrap() -> None:
    old_keys = ring("k1")
    account = uuid.uuid4()
    old_blob = TokenCipher(old_keys).encrypt(TOKEN, account, "refresh_token")
    rotated = TokenCipher({**old_keys, **ring("k2")})
    assert rotated.decrypt(old_blob, account, "refresh_token") == TOKEN
    assert rotated.needs_rewrap(old_blob)
    assert not rotated.needs_rewrap(rotated.encrypt(TOKEN, account, "refresh_token"))


def test_ciphertext_moved_to_another_account_fails() -> None:
    cipher = TokenCipher(ring("k1"))
    blob = cipher.encrypt(TOKEN, uuid.uuid4(), "access_token")
    other = uuid.uuid4()
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(blob, other, "access_token")
    assert str(other) in str(info.value)
    assert TOKEN not in str(info.value)


def test_ciphertext_moved_to_another_field_fails() -> None:
    cipher = TokenCipher(ring("k1"))
    account = uuid.uuid4()
    blob = cipher.encrypt(TOKEN, account, "access_token")
    with pytest.raises(DecryptionError):
        cipher.decrypt(blob, account, "refresh_token")


def test_unknown_key_id_gives_a_clear_error_naming_the_ids() -> None:
    account = uuid.uuid4()
    blob = TokenCipher(ring("retired")).encrypt(TOKEN, account, "access_token")
    with pytest.raises(UnknownKeyError, match=r"'retired'.*known ids: current"):
        TokenCipher(ring("current")).decrypt(blob, account, "access_token")


def test_tampered_ciphertext_fails() -> None:
    cipher = TokenCipher(ring("k1"))
    account = uuid.uuid4()
    blob = bytearray(cipher.encrypt(TOKEN, account, "access_token"))
    blob[-1] ^= 0x01
    with pytest.raises(DecryptionError):
        cipher.decrypt(bytes(blob), account, "access_token")


@pytest.mark.parametrize("blob", [b"", b"\x02\x01k", b"\x01\x02k1short"])
def test_malformed_ciphertext_fails_cleanly(blob: bytes) -> None:
    with pytest.raises(DecryptionError):
        TokenCipher(ring("k1")).decrypt(blob, uuid.uuid4(), "access_token")


def test_key_ring_from_settings_keeps_order_last_encrypts(token_keys: str) -> None:
    cipher = TokenCipher(parse_key_ring(token_keys))
    assert cipher.key_ids == ("test-old", "test-new")
    assert cipher.primary_key_id == "test-new"
