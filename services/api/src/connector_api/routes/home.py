"""`GET /` sends people to the admin page; `GET /me` tells a caller who they are."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from connector_api.deps import ContextDep, SessionDep, StateDep
from connector_api.schemas import Me, error_responses
from connector_api.services import me

router = APIRouter()


@router.get("/", include_in_schema=False)
async def home() -> RedirectResponse:
    """People arrive here: the admin page (it links the API docs)."""
    return RedirectResponse("/admin", status_code=307)


@router.get("/me", response_model=Me, tags=["identity"], responses=error_responses(401, 403))
async def who_am_i(session: SessionDep, ctx: ContextDep, state: StateDep) -> Me:
    """Who you are, your organisation (its id is in every event subject) and the NATS subject
    to subscribe to for its events."""
    return await me.who_am_i(session, ctx, state.topology)
