"""Signed values (cursors, CSRF tokens, flash messages): a signature that is not ours is
refused, whatever characters it holds; a value signed for one purpose does not verify for
another."""

from __future__ import annotations

import pytest

from connector_api.signing import CursorCodec, Mac, Sealed


@pytest.mark.parametrize("signature", ["s\u00e9gn\u00e9", "\u2603" * 43, "", "\udcff"])
def test_a_signature_that_is_not_ours_does_not_verify(signature: str) -> None:
    mac = Mac("x" * 32, "csrf")
    assert mac.verify("session-id", signature) is False
    with pytest.raises(ValueError, match="bad or expired signature"):
        Sealed("x" * 32, "flash").loads(f"e30.{signature}")


def test_a_value_signed_for_one_purpose_does_not_verify_for_another() -> None:
    csrf, other = Mac("x" * 32, "csrf"), Mac("x" * 32, "admin-session")
    assert csrf.verify("sid", csrf.mac("sid"))
    assert not other.verify("sid", csrf.mac("sid"))
    token = Sealed("x" * 32, "flash").dumps({"k": "info"})
    with pytest.raises(ValueError, match="bad or expired"):
        Sealed("x" * 32, "oidc-login").loads(token)
    assert Sealed("x" * 32, "flash").loads(token) == {"k": "info"}


def test_a_sealed_value_expires() -> None:
    sealed = Sealed("x" * 32, "flash", max_age_seconds=0)
    token = sealed.dumps([1])
    with pytest.raises(ValueError, match="bad or expired"):
        Sealed("x" * 32, "flash", max_age_seconds=-1).loads(token)


def test_a_cursor_is_bound_to_its_query() -> None:
    codec = CursorCodec("x" * 32)
    cursor = codec.encode("status=healthy", ["a", 1])
    assert codec.decode("status=healthy", cursor) == ["a", 1]
    with pytest.raises(Exception, match="another query"):
        codec.decode("status=expired", cursor)
    with pytest.raises(Exception, match="not valid"):
        CursorCodec("y" * 32).decode("status=healthy", cursor)
