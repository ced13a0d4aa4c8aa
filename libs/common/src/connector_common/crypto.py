"""AES-256-GCM encryption of eBay tokens at rest, with a key ring and row-bound associated data.

A ciphertext is ``b"\\x01" | len(key_id) | key_id | nonce(12) | ciphertext+tag``. The key id
travels inside it, so any listed key can decrypt what it made while only the newest key
encrypts. The associated data names the table, the account and the field, so a ciphertext
copied to another account or another column does not decrypt.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = 1
NONCE_BYTES = 12
TokenField = Literal["access_token", "refresh_token"]


class TokenCipherError(Exception):
    """A token could not be encrypted or decrypted; the message never holds secret bytes."""


class UnknownKeyError(TokenCipherError):
    """The ciphertext names a key id that is not in the configured key ring."""


class DecryptionError(TokenCipherError):
    """The ciphertext is corrupt, or belongs to another account or field."""


def associated_data(account_id: uuid.UUID, field: TokenField) -> bytes:
    """What binds a ciphertext to its row and column."""
    return f"ebay_tokens:{account_id}:{field}:v{FORMAT_VERSION}".encode()


class TokenCipher:
    """Encrypts with the newest key of the ring, decrypts with whichever key made the data."""

    def __init__(self, key_ring: Mapping[str, bytes]) -> None:
        if not key_ring:
            raise TokenCipherError("the key ring is empty")
        for key_id, key in key_ring.items():
            if len(key) != 32:
                raise TokenCipherError(f"key {key_id!r} is not 32 bytes (AES-256)")
            if not 0 < len(key_id.encode()) < 256:
                raise TokenCipherError("key ids must be 1-255 bytes")
        self._aeads = {key_id: AESGCM(key) for key_id, key in key_ring.items()}
        self._primary = list(key_ring)[-1]

    @property
    def primary_key_id(self) -> str:
        """The key id new ciphertexts are made with."""
        return self._primary

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id that can decrypt."""
        return tuple(self._aeads)

    def encrypt(self, plaintext: str, account_id: uuid.UUID, field: TokenField) -> bytes:
        """Encrypt a token for one account and field with the primary key."""
        nonce = os.urandom(NONCE_BYTES)
        kid = self._primary.encode()
        body = self._aeads[self._primary].encrypt(
            nonce, plaintext.encode(), associated_data(account_id, field)
        )
        return bytes([FORMAT_VERSION, len(kid)]) + kid + nonce + body

    def decrypt(self, blob: bytes, account_id: uuid.UUID, field: TokenField) -> str:
        """Decrypt a token; raises if it was made for another account/field or an unknown key."""
        key_id, nonce, body = self._split(blob)
        aead = self._aeads.get(key_id)
        if aead is None:
            raise UnknownKeyError(
                f"the {field} of account {account_id} was encrypted with key id {key_id!r}, "
                f"which is not in CONNECTOR_TOKEN_KEYS (known ids: {', '.join(self._aeads)})"
            )
        try:
            plain = aead.decrypt(nonce, body, associated_data(account_id, field))
        except InvalidTag:
            raise DecryptionError(
                f"the {field} of account {account_id} does not decrypt: it is corrupt or was "
                "made for another account or field"
            ) from None
        return plain.decode()

    def key_id_of(self, blob: bytes) -> str:
        """The key id recorded in a ciphertext."""
        return self._split(blob)[0]

    def needs_rewrap(self, blob: bytes) -> bool:
        """True when the ciphertext was made with an older key than the primary one."""
        return self.key_id_of(blob) != self._primary

    @staticmethod
    def _split(blob: bytes) -> tuple[str, bytes, bytes]:
        if len(blob) < 2 or blob[0] != FORMAT_VERSION:
            raise DecryptionError("token ciphertext has an unknown format")
        kid_len = blob[1]
        start = 2 + kid_len
        if len(blob) < start + NONCE_BYTES + 16:
            raise DecryptionError("token ciphertext is truncated")
        try:
            key_id = blob[2:start].decode()
        except UnicodeDecodeError:
            raise DecryptionError("token ciphertext has a malformed key id") from None
        return key_id, blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
