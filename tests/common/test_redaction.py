"""Redaction: real-shaped eBay secrets never survive a log line, whichever logger wrote it."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from connector_common.logs import configure_logging
from connector_common.redaction import REDACTED, redact_text, register_secret

ACCESS = (
    "v^1.1#i^1#p^3#r^0#f^0#I^3#t^H4sIAAAAAAAAAOVYa2wUVRTe7ZYWLIiUEzjknnIh12pa"
    "+AJKsQ0v4mPwIRqZ4yNjA1ZhJ1lJmsImJM0Y5kBmaP=="
)
REFRESH = "v^1.1#i^1#f^0#r^1#p^3#I^3#t^Ul4xMF8yOkY0RjlCMTI4MzBGNDI5QTVGQjU1NzY0Nw=="
CODE_ENCODED = "v%5E1.1%23i%5E1%23f%5E0%23r%5E1%23I%5E3%23p%5E3%23t%5EUl41XzExOjVDRjMz"
CLIENT_SECRET = "PRD-7c1a2b3c4d5e-f6a7-8b9c-0d1e-2f3a"


@pytest.fixture
def log_output() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", service="tests", stream=stream)
    register_secret(CLIENT_SECRET)
    return stream


def lines(stream: io.StringIO) -> str:
    return stream.getvalue()


@pytest.mark.parametrize(
    "text",
    [
        f"token={ACCESS}",
        f'{{"access_token":"{ACCESS}","expires_in":7200}}',
        f"Authorization: Bearer {ACCESS}",
        f"X-EBAY-API-IAF-TOKEN: {ACCESS}",
        f"{{'X-EBAY-API-IAF-TOKEN': '{ACCESS}'}}",
        f"<RequesterCredentials><eBayAuthToken>{ACCESS}</eBayAuthToken></RequesterCredentials>",
        f"grant_type=refresh_token&refresh_token={REFRESH}&scope=x",
        f"GET /ebay/oauth/callback?state=abc123statevalue&code={CODE_ENCODED}&expires_in=299",
        f"raw token in text {REFRESH} end",
        f"Authorization: Basic {CLIENT_SECRET}",
        f"client secret is {CLIENT_SECRET}",
    ],
)
def test_redact_text_removes_every_shape(text: str) -> None:
    register_secret(CLIENT_SECRET)
    cleaned = redact_text(text)
    for secret in (ACCESS, REFRESH, CODE_ENCODED, CLIENT_SECRET, "abc123statevalue"):
        assert secret not in cleaned
    assert REDACTED in cleaned


def test_redaction_keeps_harmless_text() -> None:
    text = "refreshed account 7 (Warehouse-A), status_code=200 error_code=931 expires_in=7200"
    assert redact_text(text) == text


def test_structlog_event_keys_and_values_are_scrubbed(log_output: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.info(
        "token response",
        access_token=ACCESS,
        refresh_token=REFRESH,
        headers={"Authorization": f"Bearer {ACCESS}", "X-EBAY-C-REQUEST-ID": "ri=abc"},
        body=f"<eBayAuthToken>{ACCESS}</eBayAuthToken>",
        client_secret=CLIENT_SECRET,
    )
    output = lines(log_output)
    record = json.loads(output.strip().splitlines()[-1])
    assert record["access_token"] == REDACTED
    assert record["headers"]["Authorization"] == REDACTED
    assert record["headers"]["X-EBAY-C-REQUEST-ID"] == "ri=abc"
    for secret in (ACCESS, REFRESH, CLIENT_SECRET):
        assert secret not in output


def test_stdlib_records_are_scrubbed_including_args_and_tracebacks(
    log_output: io.StringIO,
) -> None:
    logger = logging.getLogger("some.library")
    logger.warning("sending %s with %s", f"refresh_token={REFRESH}", f"Bearer {ACCESS}")
    try:
        raise ValueError(f"bad token {ACCESS}")
    except ValueError:
        logger.exception("call failed for secret %s", CLIENT_SECRET)
    output = lines(log_output)
    assert "sending" in output
    assert "ValueError" in output
    for secret in (ACCESS, REFRESH, CLIENT_SECRET):
        assert secret not in output


@pytest.mark.parametrize(
    "text",
    [
        "publish ebay.events.{org_id}.token.refreshed",
        "refresh:0f8fad5b-d9cb-469f-a165-70867728950e:3",
        "AUTHORIZATION: Basic dXNlcjpwYXNzd29yZA==",
        "author\u0131zation: opaque-credential-value",  # dotless i: IGNORECASE takes it for i
        "ba\u017fic dXNlcjpwYXNzd29yZA==",  # long s: IGNORECASE takes it for s
        "ACCESS_TOKEN = v^1.1#i^1#r^0#abc",
        "{'refresh_token' : 'opaque'}",
        "Token=abc123 and TOKEN\t:\tdef456",
        "X-EBAY-API-IAF-TOKEN: abcdef",
        "<eBayAuthToken>AgAAAA**secret</eBayAuthToken>",
        "callback?CODE=abc&State=xyz",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln",
        "V%5E1.1%23I%5E1%23abc",
        "Set-Cookie: session=abc",
        "the token.refreshed event of a clean statement",
    ],
)
def test_the_quick_check_never_skips_what_the_patterns_would_redact(text: str) -> None:
    from connector_common.redaction import _PATTERNS

    expected = text
    for pattern, replacement in _PATTERNS:
        expected = pattern.sub(replacement, expected)
    assert redact_text(text) == expected
