"""Reading eBay's answers: Retry-After forms, kept headers, Trading error priorities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from connector_common.ebay import (
    AccessTokenRejected,
    CallMeta,
    PermanentError,
    RateLimited,
    TransientError,
)
from connector_common.ebay.wire import ebay_headers, retry_after_seconds, trading_root

META = CallMeta("trading", "GetUser", 200, 1.0)


def _failure(*errors: tuple[str, str, str]) -> httpx.Response:
    body = "".join(
        f"<Errors><ErrorCode>{code}</ErrorCode><SeverityCode>{severity}</SeverityCode>"
        f"<ErrorClassification>{kind}</ErrorClassification><LongMessage>m</LongMessage></Errors>"
        for code, severity, kind in errors
    )
    xml = (
        '<GetUserResponse xmlns="urn:ebay:apis:eBLBaseComponents"><Ack>Failure</Ack>'
        f"{body}</GetUserResponse>"
    )
    return httpx.Response(200, content=xml.encode())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds_reads_delta_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_seconds_reads_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    value = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(value, now=now.timestamp()) == 90.0


def test_kept_headers_are_ebay_ids_and_rate_limits_never_secrets() -> None:
    headers = httpx.Headers(
        {
            "rlogid": "t6n",
            "X-EBAY-C-REQUEST-ID": "ri=1",
            "X-RateLimit-Remaining": "10",
            "Retry-After": "5",
            "Set-Cookie": "session=secret",
            "X-EBAY-C-TOKEN-HINT": "v^1.1#secret",
            "Content-Type": "application/json",
        }
    )
    assert ebay_headers(headers) == {
        "rlogid": "t6n",
        "x-ebay-c-request-id": "ri=1",
        "x-ratelimit-remaining": "10",
        "retry-after": "5",
    }


def test_trading_reauth_error_wins_over_other_errors() -> None:
    response = _failure(("10007", "Error", "SystemError"), ("932", "Error", "RequestError"))
    with pytest.raises(AccessTokenRejected) as caught:
        trading_root(response, META)
    assert caught.value.error_code == "932"


def test_trading_warnings_are_not_failures_of_their_own() -> None:
    response = _failure(("21926", "Warning", "RequestError"), ("518", "Error", "RequestError"))
    with pytest.raises(RateLimited) as caught:
        trading_root(response, META)
    assert caught.value.error_code == "518"


def test_trading_system_error_is_transient_and_request_error_permanent() -> None:
    with pytest.raises(TransientError):
        trading_root(_failure(("10007", "Error", "SystemError")), META)
    with pytest.raises(PermanentError):
        trading_root(_failure(("37", "Error", "RequestError")), META)


def test_unreadable_trading_xml_is_transient() -> None:
    with pytest.raises(TransientError) as caught:
        trading_root(httpx.Response(200, content=b"<GetUserResponse"), META)
    assert caught.value.error_code == "bad_xml"
