"""Account events reach JetStream on per-org subjects, typed and de-duplicable, if and only if
their change committed; a NATS outage delays them and loses none; none carries a token."""

from __future__ import annotations

import uuid
from pathlib import Path

from nats.js import JetStreamContext
from sqlalchemy import select

from connector_api.settings import ApiSettings
from connector_common.crypto import TokenCipher
from connector_common.db.models import EbayToken, OutboxMessage
from connector_common.events import (
    AccountDeactivated,
    AccountDeleted,
    AccountPurposeChanged,
    AccountReactivated,
    AccountRenamed,
)
from connector_common.messaging import Topology
from connector_devstack.embedded import EmbeddedNats, free_port
from tests.api.conftest import Api, connect_seller, events_of, running_api, seed_account, wait_for
from tests.fixtures.infra import provision_namespace
from tests.fixtures.sandbox import SandboxHandle


async def test_account_events_arrive_on_the_org_subject_with_their_id(
    api: Api, js: JetStreamContext, topology: Topology
) -> None:
    await api.wait_relay()
    account = await seed_account(api, "A")
    auth = api.auth()
    base = f"/ebay-accounts/{account.id}"
    await api.client.patch(base, json={"house_name": "B", "purpose": "returns"}, headers=auth)
    await api.client.post(f"{base}/deactivate", headers=auth)
    await api.client.post(f"{base}/reactivate", headers=auth)
    await api.client.delete(base, headers=auth)
    events = await events_of(js, topology, str(account.org_id), 5)
    assert [type(e) for e, _ in events] == [
        AccountRenamed,
        AccountPurposeChanged,
        AccountDeactivated,
        AccountReactivated,
        AccountDeleted,
    ]
    for event, headers in events:
        assert headers["Nats-Msg-Id"] == str(event.event_id)
        assert event.org_id == account.org_id
        assert event.account_id == account.id
        assert event.actor == "alice"  # type: ignore[attr-defined]
    renamed = events[0][0]
    assert isinstance(renamed, AccountRenamed)
    assert (renamed.old_house_name, renamed.new_house_name, renamed.house_name) == ("A", "B", "B")


async def test_another_orgs_subject_sees_nothing(
    api: Api, js: JetStreamContext, topology: Topology
) -> None:
    await api.wait_relay()
    account = await seed_account(api, "A")
    await api.client.post(f"/ebay-accounts/{account.id}/deactivate", headers=api.auth())
    await events_of(js, topology, str(account.org_id), 1)
    other = await api.org_id("org-b")
    info = await js.stream_info(
        topology.events_stream, subjects_filter=topology.events_subject(other)
    )
    assert not info.state.subjects


async def test_a_refused_change_publishes_nothing(
    api: Api, js: JetStreamContext, topology: Topology
) -> None:
    await api.wait_relay()
    await seed_account(api, "Montreal")
    account = await seed_account(api, "Toronto")
    response = await api.client.patch(
        f"/ebay-accounts/{account.id}", json={"house_name": "Montreal"}, headers=api.auth()
    )
    assert response.status_code == 409
    # A later, committed change is published; nothing from the refused one precedes it.
    await api.client.post(f"/ebay-accounts/{account.id}/deactivate", headers=api.auth())
    events = await events_of(js, topology, str(account.org_id), 1)
    assert [type(e) for e, _ in events] == [AccountDeactivated]
    assert (await js.stream_info(topology.events_stream)).state.messages == 1


async def test_no_event_carries_a_token(
    connect_api: Api, sandbox: SandboxHandle, js: JetStreamContext, topology: Topology
) -> None:
    await connect_api.wait_relay()
    account = await connect_seller(connect_api, sandbox, "demo_uk_seller", "UK")
    await connect_api.client.post(
        f"/ebay-accounts/{account['id']}/deactivate", headers=connect_api.auth()
    )
    async with connect_api.state.sessions() as session:
        token = await session.get(EbayToken, uuid.UUID(account["id"]))
        payloads = [m.payload for m in (await session.scalars(select(OutboxMessage))).all()]
    assert token is not None
    assert token.access_token_ct
    assert token.refresh_token_ct
    cipher = TokenCipher(connect_api.settings.key_ring())
    secrets_ = [
        cipher.decrypt(token.access_token_ct, token.account_id, "access_token"),
        cipher.decrypt(token.refresh_token_ct, token.account_id, "refresh_token"),
    ]
    published = await events_of(js, topology, await connect_api.org_id("org-a"), 2)
    everything = " ".join(payloads) + " ".join(e.model_dump_json() for e, _ in published)
    assert len(payloads) == 3  # connected, health check request, deactivated
    for secret in secrets_:
        assert secret not in everything
    assert "v^1.1" not in everything


async def test_nats_outage_delays_events_and_loses_none(
    api_settings: ApiSettings, dev_secret: str, tmp_path: Path, namespace: str
) -> None:
    port = free_port()
    settings = api_settings.model_copy(
        update={"nats": api_settings.nats.model_copy(update={"url": f"nats://127.0.0.1:{port}"})}
    )
    async with running_api(settings, dev_secret) as api:
        account = await seed_account(api, "A")
        response = await api.client.post(
            f"/ebay-accounts/{account.id}/deactivate", headers=api.auth()
        )
        assert response.status_code == 200  # the change commits while NATS is down
        ready = await api.client.get("/readyz")
        # Still ready: requests are served, the event waits in the outbox (a NATS incident must
        # not take every API pod out of its Service).
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "database": "ok", "nats": "unreachable"}
        nats = EmbeddedNats(tmp_path / "nats", port=port)
        nats.start()
        try:
            assert await provision_namespace(nats.url, namespace)  # what the Job does
            await api.wait_relay()

            async def published() -> bool:
                async with api.state.sessions() as session:
                    row = await session.scalar(select(OutboxMessage))
                    return row is not None and row.published_at is not None

            await wait_for(published, timeout=20)
            client = api.state.nats
            assert client is not None
            js = client.jetstream()
            events = await events_of(js, Topology(namespace), str(account.org_id), 1)
            assert isinstance(events[0][0], AccountDeactivated)
            assert (await api.client.get("/readyz")).status_code == 200
        finally:
            nats.stop()
