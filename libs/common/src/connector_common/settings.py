"""Settings shared by every service, read from environment variables at start-up.

Every variable starts with ``CONNECTOR_``; nested groups use ``__`` (``CONNECTOR_NATS__URL``).
Any variable may instead be given as ``<NAME>_FILE`` pointing at a file that holds the value,
which is how Kubernetes secret volumes are mounted (``CONNECTOR_EBAY__CLIENT_SECRET_FILE``).
Outside ``CONNECTOR_ENV=development`` a missing or placeholder secret stops start-up.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from connector_common.platform_settings import BudgetSettings, DeletionSettings

ENV_PREFIX = "CONNECTOR_"
FILE_SUFFIX = "_FILE"

# Values people leave in config files; none of them may guard production secrets.
PLACEHOLDERS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "placeholder",
        "secret",
        "password",
        "todo",
        "xxx",
        "dev",
        "development",
        "test",
    }
)


class Environment(StrEnum):
    """Where the process runs; only development accepts placeholder secrets."""

    DEVELOPMENT = "development"
    TEST = "test"
    STAGING = "staging"
    PRODUCTION = "production"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the variable, never its value."""


def is_placeholder(value: str | None) -> bool:
    """True when a secret is missing or is a well-known placeholder."""
    if value is None:
        return True
    stripped = value.strip().lower()
    return stripped in PLACEHOLDERS or stripped.startswith(("changeme", "change-me", "<"))


class FileAwareEnvSource(EnvSettingsSource):
    """Environment source that also reads ``<NAME>_FILE`` variables from files."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = dict(super()._load_env_vars())
        prefix = (self.env_prefix or "").lower()
        for name, path in list(env.items()):
            lowered = name.lower()
            if not lowered.startswith(prefix) or not lowered.endswith(FILE_SUFFIX.lower()):
                continue
            target = name[: -len(FILE_SUFFIX)]
            if target in env or path is None:
                continue  # an explicit value wins over a file
            env[target] = _read_secret_file(name, path)
        return env


def _read_secret_file(variable: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        # The path is not secret, the content is; say which variable and why.
        raise SettingsError(
            f"{variable.upper()} points at {path!r}, which cannot be read: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        # Python's message would quote a byte of the secret and its position.
        raise SettingsError(
            f"{variable.upper()} points at {path!r}, which is not UTF-8 text "
            "(a binary key? keys are base64 text)"
        ) from None


class DatabaseSettings(BaseModel):
    """PostgreSQL connection."""

    url: SecretStr = SecretStr("postgresql+psycopg://postgres@127.0.0.1:5432/connector")
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=10, ge=0, le=200)
    statement_timeout_ms: int = Field(default=15_000, ge=100)

    @field_validator("url")
    @classmethod
    def _psycopg_driver(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw.startswith("postgres://"):
            raw = "postgresql://" + raw.removeprefix("postgres://")
        if raw.startswith("postgresql://"):
            raw = "postgresql+psycopg://" + raw.removeprefix("postgresql://")
        if not raw.startswith("postgresql+psycopg://"):
            raise ValueError("must be a postgresql:// URL")
        return SecretStr(raw)


class NatsSettings(BaseModel):
    """NATS JetStream connection and naming.

    ``namespace`` is the first token of every subject and the prefix of every stream name, so
    several installations (or tests) can share one NATS cluster without seeing each other.
    """

    url: str = "nats://127.0.0.1:4222"
    namespace: str = Field(default="ebay", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    # One way to authenticate, at most: user + password, a token, a .creds file (user JWT and
    # NKey seed, as `nsc` writes them: operator/JWT mode) or an NKey seed file (nkey users in
    # the server configuration). The *_file settings are paths, read by nats-py at connect.
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    # TLS: the CA that signed the servers' certificates (else the system's), and a client
    # certificate and key when the servers verify clients (mutual TLS).
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    stream_replicas: int = Field(default=1, ge=1, le=5)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Self:
        ways = [
            name
            for name, given in (
                ("USER/PASSWORD", self.user is not None or self.password is not None),
                ("TOKEN", self.token is not None),
                ("CREDS_FILE", self.creds_file is not None),
                ("NKEY_SEED_FILE", self.nkey_seed_file is not None),
            )
            if given
        ]
        if len(ways) > 1:
            raise ValueError("set one way to authenticate to NATS, not " + " and ".join(ways))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE go together (a client certificate)")
        return self

    @property
    def uses_tls(self) -> bool:
        """True when the connection must be TLS (a tls:// URL, a CA or a client certificate)."""
        return bool(
            self.tls_ca_file
            or self.tls_cert_file
            or any(server.startswith(("tls://", "wss://")) for server in self.servers)
        )

    @field_validator("url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        for server in value.split(","):
            if not server.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError("each server must be a nats://, tls://, ws:// or wss:// URL")
        return value

    @property
    def servers(self) -> list[str]:
        """The URL list nats-py expects."""
        return [s.strip() for s in self.url.split(",") if s.strip()]


class OtelSettings(BaseModel):
    """OpenTelemetry export; nothing is pushed unless an endpoint or console is set.

    ``/metrics`` (Prometheus text, pulled) is on unless ``prometheus`` is false; OTLP may be on
    at the same time: both read the same instruments.
    """

    exporter: Literal["none", "otlp", "console"] = "none"
    endpoint: str | None = None  # e.g. http://otel-collector:4318
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    metric_interval_seconds: float = Field(default=30.0, gt=0)
    prometheus: bool = True  # serve /metrics
    # ``service.version`` on every span and metric; default: the installed package version.
    # Deployments set it to the image tag (CONNECTOR_OTEL__SERVICE_VERSION).
    service_version: str | None = Field(default=None, max_length=100)


class EbaySettings(BaseModel):
    """How we reach eBay: which environment, which app, which scopes."""

    environment: Literal["production", "sandbox", "local"] = "local"
    local_base_url: str = "http://127.0.0.1:8081"
    client_id: str = "connector-dev-app"
    client_secret: SecretStr = SecretStr("changeme")
    ru_name: str = "connector-dev-runame"
    # NoDecode: the env value is split by the validator below (space- or comma-separated, or a
    # JSON list), instead of pydantic-settings insisting on JSON.
    scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "https://api.ebay.com/oauth/api_scope",
            "https://api.ebay.com/oauth/api_scope/sell.account",
            "https://api.ebay.com/oauth/api_scope/commerce.identity.readonly",
        ]
    )
    compatibility_level: int = 1349
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    read_timeout_seconds: float = Field(default=15.0, gt=0)
    max_attempts: int = Field(default=4, ge=1, le=10)
    max_retry_seconds: float = Field(default=60.0, gt=0)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    # eBay's platform rules (docs/ebay-compliance.md).
    budget: BudgetSettings = BudgetSettings()
    deletion: DeletionSettings = DeletionSettings()
    reconsent_warning_days: int = Field(default=30, ge=1, le=365)

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except ValueError:
                    raise ValueError("is not a valid JSON list of scopes") from None
            return [s for s in value.replace(",", " ").split() if s]
        return value


class EnvSettings(BaseSettings):
    """``CONNECTOR_*`` environment variables (and their ``*_FILE`` variants)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        case_sensitive=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, FileAwareEnvSource(settings_cls), file_secret_settings)


class DatabaseOnlySettings(EnvSettings):
    """Just the database, for `connector migrate` (a migration job needs no other secret)."""

    database: DatabaseSettings = DatabaseSettings()


class CommonSettings(EnvSettings):
    """What every service reads: environment, database, NATS, telemetry, logging, eBay, keys."""

    env: Environment = Environment.PRODUCTION
    service_name: str = "connector"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    database: DatabaseSettings = DatabaseSettings()
    nats: NatsSettings = NatsSettings()
    otel: OtelSettings = OtelSettings()
    ebay: EbaySettings = EbaySettings()
    # Token encryption key ring: "id:base64key,id2:base64key"; the LAST key encrypts new tokens.
    token_keys: SecretStr | None = None

    @field_validator("token_keys")
    @classmethod
    def _keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            parse_key_ring(value.get_secret_value())  # raises with a message free of key bytes
        return value

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Self:
        if self.env is Environment.DEVELOPMENT:
            return self
        problems = self.secret_problems()
        if problems:
            raise SettingsError(
                f"CONNECTOR_ENV={self.env.value} refuses to start: "
                + "; ".join(problems)
                + " (set them, or their *_FILE variants; only CONNECTOR_ENV=development "
                "accepts placeholders)"
            )
        return self

    def secret_problems(self) -> list[str]:
        """Names of the secrets that are missing or placeholders (values never included)."""
        problems: list[str] = []
        keys = self.token_keys.get_secret_value() if self.token_keys else None
        if keys is None or not keys.strip():
            problems.append("CONNECTOR_TOKEN_KEYS is missing")
        if self.ebay.environment != "local" and is_placeholder(
            self.ebay.client_secret.get_secret_value()
        ):
            problems.append("CONNECTOR_EBAY__CLIENT_SECRET is missing or a placeholder")
        return problems

    @property
    def is_development(self) -> bool:
        """True in a developer's machine setup."""
        return self.env is Environment.DEVELOPMENT

    def key_ring(self) -> dict[str, bytes]:
        """The token encryption keys, oldest first (the last one encrypts)."""
        if self.token_keys is None or not self.token_keys.get_secret_value().strip():
            raise SettingsError("CONNECTOR_TOKEN_KEYS is not set: tokens cannot be encrypted")
        return parse_key_ring(self.token_keys.get_secret_value())


def parse_key_ring(raw: str) -> dict[str, bytes]:
    """Parse ``id:base64,id:base64`` into an ordered mapping; errors never echo key material."""
    ring: dict[str, bytes] = {}
    for position, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not key_id:
            raise SettingsError(f"CONNECTOR_TOKEN_KEYS entry {position} is not 'id:base64key'")
        if not key_id.replace("-", "").replace("_", "").isalnum() or len(key_id) > 32:
            raise SettingsError(
                f"CONNECTOR_TOKEN_KEYS entry {position}: "
                "key id must be 1-32 letters, digits, - or _"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SettingsError(
                f"CONNECTOR_TOKEN_KEYS key {key_id!r} is not valid base64"
            ) from None
        if len(key) != 32:
            raise SettingsError(
                f"CONNECTOR_TOKEN_KEYS key {key_id!r} must decode to 32 bytes, not {len(key)}"
            )
        if key_id in ring:
            raise SettingsError(f"CONNECTOR_TOKEN_KEYS lists key id {key_id!r} twice")
        ring[key_id] = key
    if not ring:
        raise SettingsError("CONNECTOR_TOKEN_KEYS holds no keys")
    return ring


def generate_key_entry(key_id: str) -> str:
    """A fresh ``id:base64`` key ring entry (32 random bytes)."""
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


S = TypeVar("S", bound=EnvSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings, turning validation errors into one message that names variables only.

    pydantic's own message echoes the input values, which may be secrets; this one never does.
    """
    from pydantic import ValidationError

    try:
        return cls(**overrides)
    except SourceError as exc:
        # A group given as one JSON variable (CONNECTOR_DATABASE='{...}') that does not parse:
        # pydantic-settings names only the field, and its traceback would reach the terminal.
        field = re.search(r'field "([^"]+)"', str(exc))
        group = f"{ENV_PREFIX}{field.group(1).upper()}" if field else f"a {ENV_PREFIX}* variable"
        raise SettingsError(
            f"invalid configuration: {group} (or a {group}__* variable) must be valid JSON"
        ) from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False, include_url=False):
            loc = "__".join(str(part) for part in error["loc"]).upper()
            variable = f"{ENV_PREFIX}{loc}" if loc else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{variable}: {message}" if loc else message)
        raise SettingsError("invalid configuration: " + "; ".join(lines)) from None
