"""`GET /` sends people to the admin page; `GET /me` says who the caller is and where their
organisation's events are published."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


async def test_the_root_sends_people_to_the_admin_page(api: Api) -> None:
    response = await api.client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "/admin"


async def test_me_names_the_caller_the_org_and_its_event_subject(api: Api) -> None:
    response = await api.client.get("/me", headers=api.auth(role="viewer", sub="vera"))
    assert response.status_code == 200, response.text
    body = response.json()
    org_id = await api.org_id(api.default_org)
    namespace = api.state.namespace
    assert body == {
        "subject": "vera",
        "roles": ["viewer"],
        "can_write": False,
        "org": {"id": org_id, "external_id": api.default_org, "name": api.default_org},
        "events": {
            "subject_prefix": f"{namespace}.events.{org_id}",
            "subscribe": f"{namespace}.events.{org_id}.>",
            "stream": f"{namespace.upper()}-EVENTS",
        },
    }


async def test_me_needs_a_token(api: Api) -> None:
    response = await api.client.get("/me")
    assert response.status_code == 401
