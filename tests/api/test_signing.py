"""Signed values (cursors, CSRF tokens, flash messages): a signature that is not ours is
refused, whatever characters it holds."""

from __future__ import annotations

import pytest

from connector_api.signing import Signer


@pytest.mark.parametrize("signature", ["s\u00e9gn\u00e9", "\u2603" * 43, ""])
def test_a_signature_that_is_not_ours_does_not_verify(signature: str) -> None:
    signer = Signer("x" * 32, "csrf")
    assert signer.verify_mac("session-id", signature) is False
    with pytest.raises(ValueError, match="bad signature"):
        signer.loads(f"e30.{signature}")
