"""The OpenAPI document is a contract: performance work (response serialisation, load
shedding, caches) must not change it. The snapshot was taken from the app before that work;
a deliberate change to the API regenerates it with ``CONNECTOR_UPDATE_OPENAPI=1``.

Building the document needs no database: the app is created, its lifespan never runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import SecretStr

from connector_api.app import create_app
from connector_api.settings import ApiSettings
from connector_common.settings import EbaySettings

SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"


def _document() -> dict[str, object]:
    settings = ApiSettings(
        env="development",
        database={"url": SecretStr("postgresql+psycopg://unused@127.0.0.1:9/unused")},
        nats={"url": "nats://127.0.0.1:9"},
        ebay=EbaySettings(local_base_url="http://127.0.0.1:9"),
        api={"jwt": {"dev_secret": SecretStr("x" * 40)}},
    )
    return create_app(settings).openapi()


def test_the_openapi_document_is_unchanged() -> None:
    document = json.loads(json.dumps(_document(), sort_keys=True))
    if os.environ.get("CONNECTOR_UPDATE_OPENAPI") == "1":
        SNAPSHOT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert document == expected, (
        "the OpenAPI document changed; if on purpose, run with CONNECTOR_UPDATE_OPENAPI=1"
    )
