"""Who the caller is: what an integrator needs to find their organisation's events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from connector_api import repository as repo
from connector_api.schemas import EventSubscription, Me, OrgInfo
from connector_api.services.context import RequestContext
from connector_common.messaging import Topology


async def who_am_i(session: AsyncSession, ctx: RequestContext, topology: Topology) -> Me:
    """The caller, their organisation (name and our id) and its events' NATS subjects."""
    principal = ctx.principal
    org_id = str(principal.org_id)
    prefix = topology.events_subject(org_id, "").rstrip(".")
    return Me(
        subject=principal.subject,
        roles=sorted(principal.roles),
        can_write=principal.can_write,
        org=OrgInfo(
            id=principal.org_id,
            external_id=principal.org_external_id,
            name=await repo.org_name(session, principal.org_id) or principal.org_external_id,
        ),
        events=EventSubscription(
            subject_prefix=prefix,
            subscribe=topology.events_subject(org_id),
            stream=topology.events_stream,
        ),
    )
