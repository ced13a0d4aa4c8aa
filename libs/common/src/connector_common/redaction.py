"""Scrub secrets from anything that may be logged, traced or shown.

Every service installs :func:`redact_event` (structlog) and :class:`RedactingFilter` (stdlib
logging). They remove eBay OAuth tokens and authorization codes (``v^1.1#...``, raw or
URL-encoded), ``Authorization`` and ``X-EBAY-API-IAF-TOKEN`` headers, ``<eBayAuthToken>`` XML,
OAuth ``code``/``state`` query parameters, values under secret-looking keys, and any value
registered at start-up with :func:`register_secret` (the client secret, encryption keys), and
JWTs. Spans go through the same rules (``connector_common.telemetry.ScrubbingSpanProcessor``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector_common.settings import CommonSettings

REDACTED = "[REDACTED]"

# Keys whose values are always secret, whatever they look like.
SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "iaf_token",
        "x-ebay-api-iaf-token",
        "authorization",
        "proxy-authorization",
        "client_secret",
        "secret",
        "password",
        "cookie",
        "set-cookie",
        "token_keys",
        "code",
        "state",
        "api_key",
        "jwt",
        "bearer",
    }
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # <eBayAuthToken>...</eBayAuthToken> in Trading XML.
    (re.compile(r"(?is)(<eBayAuthToken>).*?(</eBayAuthToken>)"), rf"\1{REDACTED}\2"),
    # Header lines or dict reprs: Authorization / IAF token / cookies.
    (
        re.compile(
            r"(?i)((?:proxy-)?authorization|x-ebay-api-iaf-token|set-cookie|cookie)"
            r"(['\"]?\s*[:=]\s*['\"]?)([^'\"\r\n,}]+)"
        ),
        rf"\1\2{REDACTED}",
    ),
    # Bearer / Basic credentials anywhere.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=^#%:-]{6,}"), rf"\1 {REDACTED}"),
    # JSON, form or query pairs with secret names.
    (
        re.compile(
            r"(?i)([\"']?\b(?:access_token|refresh_token|id_token|client_secret|password|"
            r"code|state|token)[\"']?\s*[:=]\s*[\"']?)([^\"'&\s,}<]+)"
        ),
        rf"\1{REDACTED}",
    ),
    # JWTs (ours, an identity provider's): header.payload.signature, base64url JSON.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # eBay user tokens and authorization codes: v^1.1#i^1#... (raw or URL-encoded).
    (re.compile(r"v\^1\.1#[^\s\"'<>&,;)}\]]+"), REDACTED),
    (re.compile(r"(?i)v%5E1\.1%23[^\s\"'<>&,;)}\]]+"), REDACTED),
)

# Every pattern above needs one of these words, or "token" before ":" or "=", whatever the case:
# a text without any (most span names, attribute values and log fields) is returned as it is
# after a few substring checks instead of seven regular expressions (docs/benchmarks.md, the
# cost of a span). Case-folded so that every character IGNORECASE matches to a letter folds to
# it (checked over all of Unicode; the dotless i is the one exception, mapped by hand).
_TRIGGERS = (
    "ebayauthtoken",
    "authorization",
    "iaf-token",
    "cookie",
    "bearer",
    "basic",
    "secret",
    "password",
    "code",
    "state",
    "eyj",
    "v^1.1",
    "v%5e1.1",
)
_TOKEN_PAIR = re.compile(r"token[\"']?\s*[:=]")


def _may_hold_secret(text: str) -> bool:
    folded = text.casefold().replace("\u0131", "i")
    if any(word in folded for word in _TRIGGERS):
        return True
    return "token" in folded and _TOKEN_PAIR.search(folded) is not None


_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value (client secret, key material) so it is scrubbed verbatim."""
    if value and len(value) >= 6:
        with _registered_lock:
            _registered.add(value)


def register_settings_secrets(settings: CommonSettings) -> None:
    """Register every secret the common settings hold: the eBay client secret, each key of the
    token key ring (its material, as it would appear alone), the NATS credentials and the eBay
    deletion notifications' verification token."""
    register_secret(settings.ebay.client_secret.get_secret_value())
    if settings.token_keys is not None:
        for entry in settings.token_keys.get_secret_value().split(","):
            register_secret(entry.partition(":")[2].strip())
    for secret in (
        settings.nats.password,
        settings.nats.token,
        settings.ebay.deletion.verification_token,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())


def redact_text(text: str) -> str:
    """Return ``text`` with every known secret shape replaced by ``[REDACTED]``."""
    if _may_hold_secret(text):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    if _registered:
        for secret in tuple(_registered):
            if secret in text:
                text = text.replace(secret, REDACTED)
    return text


def is_secret_key(key: object) -> bool:
    """True for mapping keys whose values must never be shown."""
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def redact_value(value: Any, _depth: int = 0) -> Any:
    """Redact strings and, recursively, mappings and sequences."""
    if _depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if is_secret_key(k) else redact_value(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, _depth + 1) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: scrub every key and value of the event."""
    for key in list(event_dict.keys()):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(event_dict[key])
    return event_dict


class RedactingFilter(logging.Filter):
    """stdlib logging filter: renders the message, scrubs it, and scrubs tracebacks."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            return True  # a structlog event, already scrubbed by redact_event
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
