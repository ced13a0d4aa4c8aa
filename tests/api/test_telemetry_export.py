"""What leaves `connector api` over OTLP, as an operator's collector receives it.

The API runs as a real process with the global OpenTelemetry set-up of production
(``CONNECTOR_OTEL__EXPORTER=otlp``) and exports to an in-test OTLP/HTTP receiver. With a global
provider set, FastAPI's native telemetry would switch itself on and add a second server span
whose ``url.query`` holds the OAuth callback's ``code`` and ``state``: there must be one server
span per request, and no secret in any span.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connector_api.devtokens import mint_dev_token
from connector_devstack.embedded import free_port
from tests.api.test_main import api_env, run_api, wait_until_serving
from tests.fixtures.otlp import OtlpReceiver
from tests.fixtures.sandbox import SandboxHandle

DEV_SECRET = "telemetry-export-dev-secret-" + "x" * 16


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


def test_callbacks_leave_one_server_span_each_and_no_secret_in_any_span(
    database_url: str,
    nats_url: str,
    token_keys: str,
    sandbox: SandboxHandle,
    receiver: OtlpReceiver,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sandbox.register_app(
        sandbox.client_id, sandbox.client_secret, sandbox.ru_name, f"{url}/ebay/oauth/callback"
    )
    env = api_env(
        database_url,
        nats_url,
        token_keys,
        CONNECTOR_API__JWT__DEV_SECRET=DEV_SECRET,
        CONNECTOR_API__PUBLIC_URL=url,
        CONNECTOR_OTEL__EXPORTER="otlp",
        CONNECTOR_OTEL__ENDPOINT=receiver.endpoint,
        CONNECTOR_EBAY__ENVIRONMENT="local",
        CONNECTOR_EBAY__LOCAL_BASE_URL=sandbox.base_url,
        CONNECTOR_EBAY__CLIENT_ID=sandbox.client_id,
        CONNECTOR_EBAY__CLIENT_SECRET=sandbox.client_secret,
        CONNECTOR_EBAY__RU_NAME=sandbox.ru_name,
        CONNECTOR_EBAY__MAX_ATTEMPTS="1",
    )
    token = mint_dev_token(DEV_SECRET, org="telemetry-org", role="admin", subject="alice")
    auth = {"Authorization": f"Bearer {token}"}
    process = run_api(["--port", str(port)], env)
    secrets: list[str] = [token, sandbox.client_secret, DEV_SECRET]
    try:
        wait_until_serving(url, process)
        with httpx.Client(base_url=url, timeout=15) as client:
            sellers = ["demo_uk_seller", "demo_de_seller", "demo_us_seller"]
            for number, seller in enumerate(sellers):
                started = client.post(
                    "/ebay-accounts/connect", json={"house_name": f"House-{number}"}, headers=auth
                )
                assert started.status_code == 201, started.text
                state = parse_qs(urlsplit(started.json()["consent_url"]).query)["state"][0]
                code = sandbox.grant(seller)
                secrets += [state, code]
                callback = client.get("/ebay/oauth/callback", params={"code": code, "state": state})
                assert callback.status_code == 200, callback.text
            # A refused callback (state unknown) goes through the error path too.
            bogus_code = sandbox.grant("demo_ca_seller")
            secrets += [bogus_code, "bogus-state-value-123456"]
            refused = client.get(
                "/ebay/oauth/callback",
                params={"code": bogus_code, "state": "bogus-state-value-123456"},
            )
            assert refused.status_code >= 400
            assert client.get("/ebay-accounts", headers=auth).status_code == 200
        process.send_signal(signal.SIGTERM)  # shutdown flushes the batch exporter
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    spans = receiver.snapshot()
    callbacks = [s for s in spans if s.kind == "SERVER" and "/ebay/oauth/callback" in s.name]
    assert len(callbacks) == 4, [(s.name, s.scope) for s in spans if s.kind == "SERVER"]
    assert {s.scope for s in spans if s.kind == "SERVER"} == {"connector_api"}
    # The eBay calls the callbacks made were exported too: the check below is not vacuous.
    assert any(s.name == "ebay.oauth.exchange_code" for s in spans)
    assert any(s.name == "GET /ebay-accounts" for s in spans)
    for span in spans:
        text = span.text()
        for secret in secrets:
            assert secret not in text, f"a secret in span {span.name!r} ({span.scope})"
        for shape in ("v^1.1", "v%5E1.1", "code=", "state=", "eyJ"):
            assert shape not in text, f"{shape!r} in span {span.name!r} ({span.scope})"
        assert "url.query" not in span.attributes
    # One HTTP duration histogram, in seconds, from our middleware (FastAPI's own is off).
    assert "http.server.request.duration" in receiver.metric_names


def test_probes_are_not_traced(
    database_url: str, nats_url: str, token_keys: str, receiver: OtlpReceiver
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = api_env(
        database_url,
        nats_url,
        token_keys,
        CONNECTOR_OTEL__EXPORTER="otlp",
        CONNECTOR_OTEL__ENDPOINT=receiver.endpoint,
    )
    process = run_api(["--port", str(port)], env)
    try:
        wait_until_serving(url, process)
        for _ in range(5):
            assert httpx.get(f"{url}/healthz").status_code == 200
            assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.get(f"{url}/openapi.json").status_code == 200
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    names = {s.name for s in receiver.snapshot()}
    assert "GET /openapi.json" in names  # exported at all: the check below is not vacuous
    assert not {n for n in names if "healthz" in n or "readyz" in n}
