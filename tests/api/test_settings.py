"""API settings: algorithms pinned and sane, the dev secret only in development, production
needs its JWKS URL and session secret; errors name variables, never values."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from connector_api.settings import ApiSettings
from connector_common.settings import SettingsError, load_settings

KEYS = f"k:{base64.b64encode(os.urandom(32)).decode()}"
SESSION = "s" * 40


def settings(env: str = "production", **api: Any) -> ApiSettings:
    if env == "production":
        api["jwt"] = {"issuer": "https://idp.example", "audience": "ebay-connector"} | dict(
            api.get("jwt", {})
        )
        api.setdefault("public_url", "https://connector.example")
    return load_settings(ApiSettings, env=env, token_keys=KEYS, api=api)


def test_production_refuses_the_development_issuer() -> None:
    with pytest.raises(SettingsError, match="CONNECTOR_API__JWT__ISSUER"):
        settings(
            jwt={"jwks_url": "https://idp/jwks", "issuer": "connector-dev"}, session_secret=SESSION
        )


def test_production_with_jwks_and_session_secret_starts() -> None:
    loaded = settings(jwt={"jwks_url": "https://idp/jwks"}, session_secret=SESSION)
    assert loaded.api.jwt.pinned_algorithms == ["RS256"]


@pytest.mark.parametrize("algorithms", [["none"], ["RS256", "none"], ["HS512"]])
def test_unacceptable_algorithms_are_refused(algorithms: list[str]) -> None:
    with pytest.raises(SettingsError, match="CONNECTOR_API__JWT"):
        settings(
            jwt={"jwks_url": "https://idp/jwks", "algorithms": algorithms}, session_secret=SESSION
        )


def test_symmetric_algorithm_with_a_jwks_url_is_refused() -> None:
    with pytest.raises(SettingsError, match="asymmetric"):
        settings(
            jwt={"jwks_url": "https://idp/jwks", "algorithms": "HS256"}, session_secret=SESSION
        )


def test_algorithms_can_be_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_API__JWT__ALGORITHMS", "RS256,ES256")
    loaded = settings(jwt={"jwks_url": "https://idp/jwks"}, session_secret=SESSION)
    assert loaded.api.jwt.pinned_algorithms == ["RS256", "ES256"]


def test_dev_secret_outside_development_is_refused_without_echoing_it() -> None:
    secret = "x" * 40
    with pytest.raises(SettingsError) as raised:
        settings(jwt={"jwks_url": "https://idp/jwks", "dev_secret": secret}, session_secret=SESSION)
    assert "CONNECTOR_API__JWT__DEV_SECRET" in str(raised.value)
    assert secret not in str(raised.value)


def test_short_dev_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="32 characters"):
        settings(env="development", jwt={"dev_secret": "short"})


def test_development_needs_some_key_source() -> None:
    with pytest.raises(SettingsError, match="DEV_SECRET"):
        settings(env="development")


def test_placeholder_session_secret_is_refused_in_production() -> None:
    with pytest.raises(SettingsError, match="CONNECTOR_API__SESSION_SECRET"):
        settings(jwt={"jwks_url": "https://idp/jwks"}, session_secret="changeme")


@pytest.mark.parametrize("public_url", ["http://127.0.0.1:8000", "http://connector.example"])
def test_production_refuses_a_public_url_that_is_not_https(public_url: str) -> None:
    # Over http the admin session cookie would be sent without Secure.
    with pytest.raises(SettingsError, match="CONNECTOR_API__PUBLIC_URL"):
        settings(
            jwt={"jwks_url": "https://idp/jwks"}, session_secret=SESSION, public_url=public_url
        )


def test_https_public_url_makes_cookies_secure() -> None:
    loaded = settings(
        jwt={"jwks_url": "https://idp/jwks"},
        session_secret=SESSION,
        public_url="https://c.example/",
    )
    assert loaded.api.secure_cookies
    assert loaded.api.public_url == "https://c.example"
