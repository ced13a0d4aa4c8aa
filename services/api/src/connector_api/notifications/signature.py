"""``X-EBAY-SIGNATURE``: what it holds, and checking it against eBay's public key.

The header is base64 of ``{"alg": "ecdsa", "kid": ..., "signature": <base64 DER>, "digest":
"SHA1"}``. eBay signs the notification's compact JSON (its SDKs verify ``JSON.stringify`` of the
parsed body) with ECDSA P-256; eBay's published test vector verifies with SHA-1 over Python's
``json.dumps(message, separators=(",", ":"))``. We verify the body exactly as received first, then
its compact re-serialisation (what eBay's SDKs do), so whitespace a proxy adds cannot break it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connector_common.ebay.parsers import pem_lines

MAX_HEADER_CHARS = 4096
# eBay's kids are UUIDs; anything outside this never reaches a URL or a cache.
KID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256}


class BadSignature(Exception):
    """The notification cannot be trusted; ``reason`` says why (never quotes the input)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignatureHeader:
    """A parsed ``X-EBAY-SIGNATURE``."""

    kid: str
    signature: bytes  # DER
    digest: str  # "SHA1"


def parse_header(value: str | None) -> SignatureHeader:
    """Decode the header; raises :class:`BadSignature` when it is missing or malformed."""
    if not value:
        raise BadSignature("X-EBAY-SIGNATURE is missing")
    if len(value) > MAX_HEADER_CHARS:
        raise BadSignature("X-EBAY-SIGNATURE is too long")
    try:
        decoded = json.loads(base64.b64decode(value.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise BadSignature("X-EBAY-SIGNATURE is not base64 JSON") from None
    if not isinstance(decoded, dict):
        raise BadSignature("X-EBAY-SIGNATURE is not a JSON object")
    alg, kid = decoded.get("alg"), decoded.get("kid")
    signature, digest = decoded.get("signature"), decoded.get("digest")
    if not isinstance(alg, str) or alg.lower() != "ecdsa":
        raise BadSignature("X-EBAY-SIGNATURE names an algorithm other than ecdsa")
    if not isinstance(kid, str) or not KID.match(kid):
        raise BadSignature("X-EBAY-SIGNATURE has no valid kid")
    if not isinstance(digest, str) or digest.upper() not in DIGESTS:
        raise BadSignature("X-EBAY-SIGNATURE names an unknown digest")
    if not isinstance(signature, str):
        raise BadSignature("X-EBAY-SIGNATURE has no signature")
    try:
        der = base64.b64decode(signature, validate=True)
    except binascii.Error:
        raise BadSignature("the signature is not base64") from None
    if not 8 <= len(der) <= 80:  # a DER P-256 ECDSA signature is 70-72 bytes
        raise BadSignature("the signature has the wrong length")
    return SignatureHeader(kid=kid, signature=der, digest=digest.upper())


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """eBay's one-line PEM as a P-256 public key (ValueError for anything else)."""
    key = serialization.load_pem_public_key(pem_lines(pem).encode())
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("eBay's notification key is not an ECDSA P-256 key")
    return key


def compact(body: bytes) -> bytes | None:
    """The body as ``JSON.stringify`` would write it (None when it is not JSON)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()


def verify(key: ec.EllipticCurvePublicKey, header: SignatureHeader, body: bytes) -> bool:
    """True when eBay's key signed this body (as received, or in compact form)."""
    algorithm = ec.ECDSA(DIGESTS[header.digest]())
    candidates = [body]
    normalised = compact(body)
    if normalised is not None and normalised != body:
        candidates.append(normalised)
    for message in candidates:
        try:
            key.verify(header.signature, message, algorithm)
        except InvalidSignature:
            continue
        return True
    return False
