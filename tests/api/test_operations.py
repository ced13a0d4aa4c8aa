"""Operations: probes, the JSON access log (request id, org, account; never a code, state or
token), request spans, request ids, body limits, error bodies, and the OpenAPI document."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from connector_api.settings import ApiSettings
from connector_common.logs import configure_logging
from connector_common.settings import EbaySettings
from connector_common.telemetry import setup_telemetry
from tests.api.conftest import Api, connect_seller, running_api, seed_account
from tests.fixtures.sandbox import SandboxHandle


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged as JSON lines while the test runs."""
    stream = io.StringIO()
    configure_logging("DEBUG", "json", service="connector-api", stream=stream)
    yield stream
    configure_logging("INFO", "console", stream=sys.stderr)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def access(stream: io.StringIO) -> list[dict[str, Any]]:
    return [r for r in records(stream) if r.get("event") == "request"]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced_api(
    api_settings: ApiSettings,
    dev_secret: str,
    ebay_settings: EbaySettings,
    sandbox: SandboxHandle,
    spans: InMemorySpanExporter,
) -> AsyncIterator[Api]:
    sandbox.register_app(
        sandbox.client_id,
        sandbox.client_secret,
        sandbox.ru_name,
        "http://api.test/ebay/oauth/callback",
    )
    telemetry = setup_telemetry(
        api_settings.otel, "api", span_processors=[SimpleSpanProcessor(spans)], set_global=False
    )
    settings = api_settings.model_copy(update={"ebay": ebay_settings})
    async with running_api(settings, dev_secret, telemetry) as running:
        yield running


async def test_healthz_answers_while_the_process_is_alive(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_200_when_database_and_nats_answer(api: Api) -> None:
    await api.wait_relay()
    response = await api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "nats": "ok"}


async def test_readyz_is_503_when_the_database_is_unreachable(
    api_settings: ApiSettings, dev_secret: str
) -> None:
    database = api_settings.database.model_copy(
        update={"url": SecretStr("postgresql+psycopg://nobody@127.0.0.1:9/none")}
    )
    async with running_api(
        api_settings.model_copy(update={"database": database}), dev_secret
    ) as api:
        await api.wait_relay()
        response = await api.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


async def test_a_request_while_the_database_is_unreachable_is_503_to_retry_not_500(
    api_settings: ApiSettings, dev_secret: str
) -> None:
    database = api_settings.database.model_copy(
        update={"url": SecretStr("postgresql+psycopg://nobody@127.0.0.1:9/none")}
    )
    async with running_api(
        api_settings.model_copy(update={"database": database}), dev_secret
    ) as api:
        response = await api.client.get("/ebay-accounts", headers=api.auth())
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response.headers["retry-after"]


async def test_access_log_is_one_json_line_with_request_id_org_and_account(
    api: Api, log_lines: io.StringIO
) -> None:
    account = await seed_account(api, "A")
    response = await api.client.get(
        f"/ebay-accounts/{account.id}", headers={**api.auth(), "X-Request-ID": "req-42"}
    )
    assert response.headers["x-request-id"] == "req-42"
    [line] = [r for r in access(log_lines) if r["path"] == f"/ebay-accounts/{account.id}"]
    assert line["request_id"] == "req-42"
    assert line["org_id"] == str(account.org_id)
    assert line["account_id"] == str(account.id)
    assert line["status"] == 200
    assert line["route"] == "/ebay-accounts/{account_id}"
    assert isinstance(line["latency_ms"], int | float)
    assert line["service"] == "connector-api"


async def test_a_request_id_that_is_not_safe_is_replaced(api: Api) -> None:
    unsafe = "bad id <script>" + "x" * 200
    response = await api.client.get("/healthz", headers={"X-Request-ID": unsafe})
    assert response.headers["x-request-id"] != unsafe
    assert len(response.headers["x-request-id"]) == 32


async def test_callback_code_state_and_tokens_never_reach_the_logs(
    traced_api: Api, sandbox: SandboxHandle, log_lines: io.StringIO
) -> None:
    started = await traced_api.client.post(
        "/ebay-accounts/connect", json={"house_name": "UK"}, headers=traced_api.auth()
    )
    state = started.json()["consent_url"].split("state=")[1].split("&")[0]
    code = sandbox.grant("demo_uk_seller")
    await traced_api.client.get("/ebay/oauth/callback", params={"code": code, "state": state})
    await traced_api.client.get("/ebay/oauth/callback", params={"code": code, "state": state})
    text = log_lines.getvalue()
    [first, _again] = [r for r in access(log_lines) if r["path"] == "/ebay/oauth/callback"]
    assert "code=[REDACTED]" in first["query"]
    assert "state=[REDACTED]" in first["query"]
    assert code not in text
    assert state not in text
    assert "v^1.1" not in text
    assert "v%5E1.1" not in text
    assert traced_api.dev_secret not in text


async def test_every_request_is_a_server_span_without_query_or_secrets(
    traced_api: Api, sandbox: SandboxHandle, spans: InMemorySpanExporter
) -> None:
    account = await connect_seller(traced_api, sandbox, "demo_uk_seller", "UK")
    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    server = [s for s in finished if s.name == "GET /ebay/oauth/callback"]
    assert len(server) == 1
    attributes = dict(server[0].attributes or {})
    assert attributes["http.route"] == "/ebay/oauth/callback"
    assert attributes["http.response.status_code"] == 200
    ebay_calls = [s for s in finished if s.name.startswith("ebay.")]
    assert {s.name for s in ebay_calls} >= {"ebay.oauth.exchange_code", "ebay.trading.GetUser"}
    # eBay's calls are children of the request that made them.
    assert all(s.context.trace_id == server[0].context.trace_id for s in ebay_calls)
    listed = [s for s in finished if s.name == "GET /ebay-accounts"]
    assert dict(listed[0].attributes or {})["connector.org_id"] == await traced_api.org_id("org-a")
    everything = " ".join(f"{s.name} {dict(s.attributes or {})} {s.events}" for s in finished)
    for secret in (
        "v^1.1",
        "code=",
        "state=",
        sandbox.client_secret,
        account["ebay_user_id"] + "x",
    ):
        assert secret not in everything


async def test_a_body_over_the_limit_is_413(api: Api) -> None:
    response = await api.client.post(
        "/ebay-accounts/connect",
        content=b'{"house_name": "' + b"x" * 70_000 + b'"}',
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


async def test_unknown_route_is_a_json_404(api: Api) -> None:
    response = await api.client.get("/nothing-here", headers=api.auth())
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_security_headers_are_on_every_response(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in response.headers  # served over plain http


async def test_hsts_is_sent_when_the_api_is_served_over_https(
    api_settings: ApiSettings, dev_secret: str
) -> None:
    secure = api_settings.api.model_copy(update={"public_url": "https://connector.test"})
    async with running_api(api_settings.model_copy(update={"api": secure}), dev_secret) as api:
        for path in ("/healthz", "/admin", "/ebay/oauth/callback"):
            response = await api.client.get(path)
            assert response.headers["strict-transport-security"] == (
                "max-age=31536000; includeSubDomains"
            ), path


async def test_readyz_stays_200_while_nats_is_down_and_says_so(
    api_settings: ApiSettings, dev_secret: str
) -> None:
    """The outbox keeps events while NATS is away: a NATS incident must not empty the API's
    Service (readiness depends on PostgreSQL only)."""
    from connector_devstack.embedded import free_port

    nats = api_settings.nats.model_copy(update={"url": f"nats://127.0.0.1:{free_port()}"})
    async with running_api(api_settings.model_copy(update={"nats": nats}), dev_secret) as api:
        response = await api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "nats": "unreachable"}


async def test_openapi_documents_routes_examples_errors_and_bearer_auth(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert {"/ebay-accounts", "/ebay-accounts/{account_id}", "/ebay-accounts/connect"} <= set(paths)
    assert "/admin" not in paths  # HTML pages are not API
    patch = paths["/ebay-accounts/{account_id}"]["patch"]
    assert set(patch["responses"]) >= {"200", "401", "403", "404", "409", "422"}
    error_ref = patch["responses"]["409"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref.endswith("/ErrorBody")
    components = schema["components"]
    assert components["schemas"]["Account"]["examples"]
    assert components["schemas"]["ConnectRequest"]["examples"]
    assert components["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_metrics_are_prometheus_text_and_metrics_requests_are_neither_traced_nor_timed(
    traced_api: Api, spans: InMemorySpanExporter
) -> None:
    assert (await traced_api.client.get("/ebay-accounts", headers=traced_api.auth())).is_success
    for _ in range(3):
        scraped = await traced_api.client.get("/metrics")
        assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = scraped.text
    assert 'http_server_request_duration_seconds_count{http_request_method="GET"' in text
    assert 'http_route="/ebay-accounts"' in text
    assert 'http_route="/metrics"' not in text  # scrapes would be most of the histogram
    assert not [s for s in spans.get_finished_spans() if "metrics" in s.name]
    assert "/metrics" not in (await traced_api.client.get("/openapi.json")).json()["paths"]


async def test_metrics_can_be_switched_off(api_settings: ApiSettings, dev_secret: str) -> None:
    otel = api_settings.otel.model_copy(update={"prometheus": False})
    async with running_api(api_settings.model_copy(update={"otel": otel}), dev_secret) as api:
        assert (await api.client.get("/metrics")).status_code == 404
