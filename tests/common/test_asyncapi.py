"""docs/asyncapi.yaml is what the code publishes and consumes: regenerated, it is the same file;
every command and event model is in it; real payloads validate against its schemas."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from connector_common.asyncapi import COMMANDS, render
from connector_common.events import (
    APP_EVENT_TYPES,
    EVENT_TYPES,
    AccountConnected,
    AppEvent,
    CheckHealth,
    Command,
    Event,
    HealthChecked,
    RefreshToken,
    TokenRefreshFailed,
    event_payload,
    utcnow,
)
from connector_common.messaging import Topology

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def subclasses(cls: type[Any]) -> set[type[Any]]:
    found: set[type[Any]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *subclasses(sub)}
    return found


def test_the_document_is_what_the_code_generates() -> None:
    assert DOCUMENT.read_text() == render(), "docs/asyncapi.yaml is stale: run `make asyncapi`"


def test_every_command_and_event_model_is_in_the_document() -> None:
    schemas = document()["components"]["schemas"]
    commands = {cls for cls in subclasses(Command) if "kind" in cls.__dict__}
    assert commands == set(COMMANDS), "a new command needs a place in connector_common.asyncapi"
    concrete_events = {cls for cls in subclasses(Event) if "type" in cls.__dict__}
    assert concrete_events == set(EVENT_TYPES.values()), "an event class is not in EVENT_TYPES"
    app_events = {cls for cls in subclasses(AppEvent) if "type" in cls.__dict__}
    assert app_events == set(APP_EVENT_TYPES.values()), "an app event is not in APP_EVENT_TYPES"
    for cls in [*COMMANDS, *EVENT_TYPES.values(), *APP_EVENT_TYPES.values()]:
        assert cls.__name__ in schemas
        assert set(schemas[cls.__name__]["properties"]) >= set(cls.model_fields)


def test_addresses_are_the_subjects_the_code_uses() -> None:
    topology = Topology("ebay")
    org = str(uuid.uuid4())
    addresses = {
        channel["address"].replace("{namespace}", "ebay").replace("{orgId}", org)
        for channel in document()["channels"].values()
    }
    account = AccountConnected(
        org_id=uuid.UUID(org),
        account_id=uuid.uuid4(),
        house_name="A",
        actor="alice",
        purpose="",
        ebay_user_id="u",
        username=None,
        marketplace_id="EBAY_US",
        site_id=0,
    )
    expected = {
        topology.refresh_subject,
        topology.health_subject,
        topology.dlq_subject("refresh"),
        topology.dlq_subject("health"),
        account.subject("ebay"),
        *(topology.events_subject(org, event_type) for event_type in EVENT_TYPES),
    }
    assert expected <= addresses
    assert RefreshToken.subject("ebay") == topology.refresh_subject
    assert CheckHealth.subject("ebay") == topology.health_subject


def test_published_payloads_validate_against_the_document() -> None:
    schemas = document()["components"]["schemas"]
    ids = {"org_id": uuid.uuid4(), "account_id": uuid.uuid4(), "house_name": "Warehouse-A"}
    samples: list[tuple[str, bytes]] = [
        ("RefreshToken", RefreshToken(token_version=3, **_command_ids(ids)).to_json()),
        ("CheckHealth", CheckHealth(slot=7, **_command_ids(ids)).to_json()),
        (
            "TokenRefreshFailed",
            event_payload(
                TokenRefreshFailed(
                    **ids,
                    error_kind="transient",
                    reason="eBay 503",
                    consecutive_failures=2,
                    retry_at=utcnow() + timedelta(minutes=1),
                )
            ),
        ),
        (
            "HealthChecked",
            event_payload(
                HealthChecked(
                    **ids,
                    outcome="healthy",
                    checked_at=utcnow(),
                    latency_ms=12,
                    http_status=200,
                    ebay_error_code=None,
                    ebay_request_id=None,
                    api="trading",
                )
            ),
        ),
    ]
    for name, payload in samples:
        jsonschema.validate(yaml.safe_load(payload), schemas[name])
    # And the schema is strict: the wrong event type or an unknown field is refused.
    bad = yaml.safe_load(samples[3][1])
    bad["type"] = "health.changed"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["HealthChecked"])


def _command_ids(ids: dict[str, Any]) -> dict[str, Any]:
    return {"org_id": ids["org_id"], "account_id": ids["account_id"]}
