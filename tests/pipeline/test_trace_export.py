"""What an operator's collector receives (issue 9, "done when"): every service a real process
exporting over OTLP/HTTP to an in-test receiver; a seller connects through the sandbox's consent
and an admin asks for a refresh now.

The refresh is one trace: the API's request span, the outbox relay's publish span, the token
refresher's process span, its call to eBay and its fenced token write. No span of any service
holds a secret (code, state, tokens, client secret, key, a JWT), and no probe is traced.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connector_api.devtokens import mint_dev_token
from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory
from connector_common.messaging import Topology
from connector_common.settings import parse_key_ring
from tests.fixtures.otlp import OtlpReceiver, ReceivedSpan
from tests.fixtures.pipeline import eventually, token_row
from tests.fixtures.sandbox import SandboxHandle
from tests.pipeline.conftest import Fleet

pytestmark = pytest.mark.slow

PROBES = ("/healthz", "/readyz", "/livez", "/metrics")
JWT = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+")


def fenced_write(span: ReceivedSpan) -> bool:
    """The statement that writes refreshed tokens if the lease still holds (tokens/repository)."""
    query = str(span.attributes.get("db.query.text", "")).lstrip()
    head = "WITH written AS ("
    return query.startswith(head) and query[len(head) :].lstrip().startswith("UPDATE ebay_tokens")


def one(spans: list[ReceivedSpan], what: str, **match: str) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (what, [(s.name, s.kind, s.resource["service.name"]) for s in spans])
    return found[0]


async def test_refresh_now_is_one_trace_from_the_api_request_to_the_token_write(
    fleet: Fleet,
    sandbox: SandboxHandle,
    sessions: SessionFactory,
    topology: Topology,
    token_keys: str,
) -> None:
    receiver = OtlpReceiver().start()
    try:
        fleet.base_env.update(
            CONNECTOR_OTEL__EXPORTER="otlp",
            CONNECTOR_OTEL__ENDPOINT=receiver.endpoint,
            CONNECTOR_OTEL__METRIC_INTERVAL_SECONDS="3600",
            OTEL_BSP_SCHEDULE_DELAY="100",  # export within 0.1 s, not 5 s
        )
        dev_secret = secrets.token_urlsafe(32)
        session_secret = secrets.token_urlsafe(32)
        api = fleet.start(
            "api",
            CONNECTOR_API__JWT__DEV_SECRET=dev_secret,
            CONNECTOR_API__SESSION_SECRET=session_secret,
        )
        workers = [fleet.start(name) for name in ("token-refresher", "health-checker", "scheduler")]
        sandbox.register_app(
            sandbox.client_id,
            sandbox.client_secret,
            sandbox.ru_name,
            f"{api.url}/ebay/oauth/callback",
        )
        await fleet.ready(api, *workers)
        bearer = mint_dev_token(dev_secret, org="org-traced", role="admin", subject="admin")
        auth = {"Authorization": f"Bearer {bearer}"}
        canaries = [bearer, dev_secret, session_secret, sandbox.client_secret]
        canaries += [entry.partition(":")[2] for entry in token_keys.split(",")]
        cipher = TokenCipher(parse_key_ring(token_keys))
        async with httpx.AsyncClient(base_url=api.url, timeout=10.0) as http:
            started = await http.post(
                "/ebay-accounts/connect", json={"house_name": "Traced"}, headers=auth
            )
            assert started.status_code == 201, started.text
            state = parse_qs(urlsplit(started.json()["consent_url"]).query)["state"][0]
            code = await asyncio.to_thread(sandbox.grant, "demo_uk_seller")
            canaries += [state, code]
            callback = await http.get("/ebay/oauth/callback", params={"code": code, "state": state})
            assert callback.status_code == 200, callback.text
            listed = await http.get("/ebay-accounts", headers=auth)
            account_id = uuid.UUID(listed.json()["items"][0]["id"])
            canaries += await stored_tokens(sessions, cipher, account_id)

            refresh = await http.post(f"/ebay-accounts/{account_id}/refresh", headers=auth)
            assert refresh.status_code == 202, refresh.text

            async def refreshed() -> bool:
                return (await token_row(sessions, account_id)).version == 2

            await eventually(refreshed, what="the refresh now")
            canaries += await stored_tokens(sessions, cipher, account_id)
            for service in fleet.services:  # probed: these must leave no span
                answers = {p: (await http.get(f"{service.url}{p}")).status_code for p in PROBES}
                assert answers["/readyz"] == 200, (service.name, answers)

        def request_trace() -> list[ReceivedSpan]:
            spans = receiver.snapshot()
            requests = [s for s in spans if s.name == "POST /ebay-accounts/{account_id}/refresh"]
            if not requests:
                return []
            return [s for s in spans if s.trace_id == requests[0].trace_id]

        async def written() -> bool:
            return any(fenced_write(s) for s in request_trace())

        try:
            await eventually(written, what="the token write exported in the request's trace")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; received:\n{describe(receiver.snapshot())}") from None
        for service in fleet.services:
            service.signal(signal.SIGTERM)  # each flushes what its exporter still holds
        for service in fleet.services:
            assert await service.wait_exit(30) == 0, service.log()[-3000:]

        spans = receiver.snapshot()
        trace = request_trace()
        request = one(trace, "the API request", kind="SERVER")
        assert request.resource["service.name"] == "connector-api"
        publish = one(trace, "the relay's publish", name=f"publish {topology.refresh_subject}")
        assert publish.kind == "PRODUCER"  # by any service's relay: they share the outbox
        assert publish.parent_span_id == request.span_id
        assert publish.attributes["messaging.system"] == "nats"
        assert publish.attributes["messaging.operation.type"] == "send"
        assert publish.attributes["messaging.destination.name"] == topology.refresh_subject
        message_id = publish.attributes["messaging.message.id"]
        assert message_id.startswith(f"refresh:{account_id}:")
        process = one(trace, "the refresher's process", name=f"process {topology.refresh_subject}")
        assert process.kind == "CONSUMER"
        assert process.resource["service.name"] == "token-refresher"
        assert process.parent_span_id == publish.span_id
        assert process.attributes["messaging.message.id"] == message_id
        assert process.attributes["messaging.consumer.group.name"] == topology.refresher_durable
        ebay = one(trace, "the call to eBay", kind="CLIENT", scope="connector_common.ebay")
        assert ebay.parent_span_id == process.span_id
        assert ebay.attributes["http.response.status_code"] == 200
        write = next(s for s in trace if fenced_write(s))
        assert write.kind == "CLIENT"
        assert write.parent_span_id == process.span_id
        assert write.start_ns >= ebay.end_ns  # the tokens are written after eBay answered
        # The refresh announces token.refreshed: its publish continues the same trace.
        announced = one(
            trace,
            "the event's publish",
            name=f"publish {topology.namespace}.events.{{org_id}}.token.refreshed",
        )
        assert announced.parent_span_id == process.span_id

        # Every service exported (the secret check below is not vacuous): the health check
        # after the connect used the access token against eBay.
        assert any(s.name == "ebay.trading.GetUser" and s.kind == "CLIENT" for s in spans)
        services = {s.resource["service.name"] for s in spans}
        assert {
            "connector-api",
            "token-refresher",
            "health-checker",
        } <= services
        # The relays' polling and the probes' readiness queries are no traces of their own.
        polls = [
            s.name
            for s in spans
            if not s.parent_span_id
            and ("outbox" in str(s.attributes.get("db.query.text")) or s.name.startswith("SELECT"))
        ]
        assert not polls, polls
        for span in spans:
            text = span.text()
            for canary in canaries:
                assert canary not in text, f"a secret in {span.name!r} ({span.scope})"
            assert not JWT.search(text), f"a JWT in {span.name!r} ({span.scope})"
            for path in PROBES:
                assert path not in text, f"a probe traced: {span.name!r} ({span.scope})"
    finally:
        receiver.stop()


def describe(spans: list[ReceivedSpan]) -> str:
    """One line per span, grouped by trace, to read what arrived when a wait fails."""
    return "\n".join(
        f"{s.trace_id[:8]} {s.span_id[:8]}<-{s.parent_span_id[:8] or '-':8} {s.kind:8} "
        f"{s.resource.get('service.name')}: {s.name} "
        + " ".join(str(s.attributes.get("db.query.text", "")).split())[:60]
        for s in sorted(spans, key=lambda s: (s.trace_id, s.start_ns))
    )


async def stored_tokens(
    sessions: SessionFactory, cipher: TokenCipher, account_id: uuid.UUID
) -> list[str]:
    """The account's access and refresh tokens, decrypted from its row."""
    token = await token_row(sessions, account_id)
    assert token.access_token_ct is not None
    assert token.refresh_token_ct is not None
    return [
        cipher.decrypt(token.access_token_ct, account_id, "access_token"),
        cipher.decrypt(token.refresh_token_ct, account_id, "refresh_token"),
    ]
