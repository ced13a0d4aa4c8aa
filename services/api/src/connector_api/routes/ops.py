"""Probes for Kubernetes (alive; ready: PostgreSQL reachable, NATS reported but not required)
and ``/metrics``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from connector_api import repository as repo
from connector_api.deps import StateDep
from connector_api.errors import NotFound
from connector_common.db.engine import unit_of_work
from connector_common.observability.prometheus import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/healthz", include_in_schema=True)
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "PostgreSQL is not reachable."}})
async def readyz(state: StateDep) -> JSONResponse:
    """Ready for traffic when PostgreSQL answers.

    NATS is reported but does not decide: while it is down the API keeps serving and the outbox
    keeps its events until NATS is back, so a NATS incident must not take every API pod out of
    its Service.
    """

    async def database() -> bool:
        try:
            async with asyncio.timeout(2):
                async with unit_of_work(state.sessions) as session:
                    await repo.ping(session)
        except Exception:
            return False
        return True

    db_ok, nats_ok = await asyncio.gather(database(), state.nats_ready())
    body = {
        "status": "ready" if db_ok else "not_ready",
        "database": "ok" if db_ok else "unreachable",
        # "unreachable" here only delays events (they wait in the outbox), never requests.
        "nats": "ok" if nats_ok else "unreachable",
    }
    return JSONResponse(body, status_code=200 if db_ok else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format (not traced, like the probes; keep it off the public ingress)."""
    text = state.telemetry.metrics_text()
    if text is None:
        raise NotFound("metrics are off (CONNECTOR_OTEL__PROMETHEUS=false)")
    return Response(text, media_type=CONTENT_TYPE)
