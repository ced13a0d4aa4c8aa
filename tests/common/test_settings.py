"""Settings: env vars, *_FILE secrets, and refusing placeholders outside development."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from connector_common.settings import (
    CommonSettings,
    SettingsError,
    load_settings,
    parse_key_ring,
)

SECRET = "sUp3r-s3cret-client-value-123"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CONNECTOR_"):
            monkeypatch.delenv(name)
    return monkeypatch


def key_entry(kid: str = "k1") -> str:
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def test_development_accepts_placeholders(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONNECTOR_ENV", "development")
    settings = load_settings(CommonSettings)
    assert settings.is_development


def test_production_without_key_refuses_to_start(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONNECTOR_ENV", "production")
    with pytest.raises(SettingsError, match="CONNECTOR_TOKEN_KEYS is missing"):
        load_settings(CommonSettings)


def test_production_with_placeholder_client_secret_refuses(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONNECTOR_ENV", "production")
    clean_env.setenv("CONNECTOR_TOKEN_KEYS", key_entry())
    clean_env.setenv("CONNECTOR_EBAY__ENVIRONMENT", "production")
    clean_env.setenv("CONNECTOR_EBAY__CLIENT_SECRET", "changeme")
    with pytest.raises(SettingsError, match="CONNECTOR_EBAY__CLIENT_SECRET"):
        load_settings(CommonSettings)


def test_production_with_real_secrets_starts(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONNECTOR_ENV", "production")
    clean_env.setenv("CONNECTOR_TOKEN_KEYS", key_entry())
    clean_env.setenv("CONNECTOR_EBAY__ENVIRONMENT", "production")
    clean_env.setenv("CONNECTOR_EBAY__CLIENT_SECRET", SECRET)
    settings = load_settings(CommonSettings)
    assert settings.ebay.client_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)


def test_secret_read_from_file_variable(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(SECRET + "\n")
    keys_file = tmp_path / "keys"
    keys_file.write_text(key_entry("mounted"))
    clean_env.setenv("CONNECTOR_ENV", "production")
    clean_env.setenv("CONNECTOR_EBAY__ENVIRONMENT", "sandbox")
    clean_env.setenv("CONNECTOR_EBAY__CLIENT_SECRET_FILE", str(secret_file))
    clean_env.setenv("CONNECTOR_TOKEN_KEYS_FILE", str(keys_file))
    settings = load_settings(CommonSettings)
    assert settings.ebay.client_secret.get_secret_value() == SECRET
    assert list(settings.key_ring()) == ["mounted"]


def test_unreadable_secret_file_names_the_variable(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("CONNECTOR_ENV", "development")
    clean_env.setenv("CONNECTOR_EBAY__CLIENT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="CONNECTOR_EBAY__CLIENT_SECRET_FILE"):
        load_settings(CommonSettings)


def test_a_secret_file_that_is_not_text_names_the_variable_and_no_byte_of_it(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    raw_key = tmp_path / "raw-key"  # a binary key mounted where base64 text belongs
    raw_key.write_bytes(b"\x00\xbe\xef\xfa" + os.urandom(28))
    clean_env.setenv("CONNECTOR_ENV", "development")
    clean_env.setenv("CONNECTOR_TOKEN_KEYS_FILE", str(raw_key))
    with pytest.raises(SettingsError) as info:
        load_settings(CommonSettings)
    message = str(info.value)
    assert "CONNECTOR_TOKEN_KEYS_FILE" in message
    assert "0xbe" not in message
    assert "position" not in message


def test_invalid_value_error_names_variable_and_hides_values(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("CONNECTOR_ENV", "development")
    clean_env.setenv("CONNECTOR_EBAY__CLIENT_SECRET", SECRET)
    clean_env.setenv("CONNECTOR_DATABASE__URL", "mysql://user:hunter2@db/x")
    with pytest.raises(SettingsError) as info:
        load_settings(CommonSettings)
    message = str(info.value)
    assert "CONNECTOR_DATABASE__URL" in message
    assert "hunter2" not in message
    assert SECRET not in message


def test_bad_environment_name_is_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONNECTOR_ENV", "prod-ish")
    with pytest.raises(SettingsError, match="CONNECTOR_ENV"):
        load_settings(CommonSettings)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("nokey", "not 'id:base64key'"),
        ("k1:!!!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "32 bytes"),
        ("", "holds no keys"),
    ],
)
def test_key_ring_errors_are_clear_and_hide_key_bytes(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        parse_key_ring(raw)
    assert "!!!" not in str(info.value)


def test_duplicate_key_id_rejected() -> None:
    entry = key_entry("same")
    with pytest.raises(SettingsError, match="twice"):
        parse_key_ring(f"{entry},{entry}")


def test_nested_nats_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONNECTOR_ENV", "development")
    clean_env.setenv("CONNECTOR_NATS__URL", "nats://a:4222,nats://b:4222")
    settings = load_settings(CommonSettings)
    assert settings.nats.servers == ["nats://a:4222", "nats://b:4222"]


@pytest.mark.parametrize(
    "raw",
    [
        "https://api.ebay.com/oauth/api_scope https://api.ebay.com/oauth/api_scope/sell.account",
        "https://api.ebay.com/oauth/api_scope,https://api.ebay.com/oauth/api_scope/sell.account",
        '["https://api.ebay.com/oauth/api_scope", "https://api.ebay.com/oauth/api_scope/sell.account"]',
    ],
)
def test_scopes_accept_space_comma_or_json_lists(clean_env: pytest.MonkeyPatch, raw: str) -> None:
    clean_env.setenv("CONNECTOR_ENV", "development")
    clean_env.setenv("CONNECTOR_EBAY__SCOPES", raw)
    assert load_settings(CommonSettings).ebay.scopes == [
        "https://api.ebay.com/oauth/api_scope",
        "https://api.ebay.com/oauth/api_scope/sell.account",
    ]


def test_malformed_json_scopes_get_a_clear_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONNECTOR_ENV", "development")
    clean_env.setenv("CONNECTOR_EBAY__SCOPES", '["unterminated')
    with pytest.raises(SettingsError, match="CONNECTOR_EBAY__SCOPES"):
        load_settings(CommonSettings)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CONNECTOR_DATABASE", '{"url": "postgresql://u:hunter2@db/x"'),
        ("CONNECTOR_EBAY", "hunter2"),
    ],
)
def test_a_group_variable_that_is_not_json_names_the_variable_not_a_traceback(
    clean_env: pytest.MonkeyPatch, variable: str, raw: str
) -> None:
    clean_env.setenv("CONNECTOR_ENV", "development")
    clean_env.setenv(variable, raw)
    # pydantic-settings raises its own SettingsError here; callers only turn ours into exit 2.
    with pytest.raises(SettingsError) as info:
        load_settings(CommonSettings)
    message = str(info.value)
    assert variable in message
    assert "JSON" in message
    assert "hunter2" not in message


def test_nats_credentials_and_tls_files_are_paths_checked_at_start(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seed = tmp_path / "api.nk"
    seed.write_text("SUAM...seed\n")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    clean_env.setenv("CONNECTOR_ENV", "development")
    clean_env.setenv("CONNECTOR_NATS__URL", "tls://nats.nats.svc:4222")
    clean_env.setenv("CONNECTOR_NATS__NKEY_SEED_FILE", str(seed))
    clean_env.setenv("CONNECTOR_NATS__TLS_CA_FILE", str(ca))
    settings = load_settings(CommonSettings)
    assert settings.nats.nkey_seed_file == str(seed)
    assert settings.nats.tls_ca_file == str(ca)
    assert settings.nats.uses_tls
    # A path nobody can read is named at start-up, not at the first reconnect.
    clean_env.setenv("CONNECTOR_NATS__NKEY_SEED_FILE", str(tmp_path / "missing.nk"))
    with pytest.raises(SettingsError, match="CONNECTOR_NATS__NKEY_SEED_FILE points at"):
        load_settings(CommonSettings)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {
                "CONNECTOR_NATS__USER": "a",
                "CONNECTOR_NATS__PASSWORD": "b",
                "CONNECTOR_NATS__TOKEN": "t",
            },
            "one way to authenticate to NATS, not USER/PASSWORD and TOKEN",
        ),
        (
            {"CONNECTOR_NATS__TOKEN": "t", "CONNECTOR_NATS__CREDS_FILE": "CREDS"},
            "not TOKEN and CREDS_FILE",
        ),
        ({"CONNECTOR_NATS__TLS_CERT_FILE": "CERT"}, "TLS_CERT_FILE and TLS_KEY_FILE go together"),
    ],
)
def test_contradictory_nats_settings_are_refused_by_name(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    clean_env.setenv("CONNECTOR_ENV", "development")
    for name, value in variables.items():
        if value.isupper():  # a file that exists
            (tmp_path / value).write_text("x")
            value = str(tmp_path / value)
        clean_env.setenv(name, value)
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings(CommonSettings)
    assert "CONNECTOR_NATS" in str(raised.value)
