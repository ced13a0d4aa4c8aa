"""What every service function needs to know about the request it serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connector_api.auth import Principal
from connector_common.events import utcnow
from connector_common.platform_settings import BudgetSettings
from connector_common.status import RECONSENT_DUE


@dataclass(frozen=True)
class RequestContext:
    """The caller, the request id for the audit log, and the NATS namespace for the outbox."""

    principal: Principal
    namespace: str
    request_id: str | None = None
    now: datetime = field(default_factory=utcnow)
    # eBay's platform rules: when an account is reconsent_due, and the daily call budget.
    reconsent_window: timedelta = RECONSENT_DUE
    budget: BudgetSettings | None = None

    @property
    def actor(self) -> str:
        """Who is acting, as the audit log and events record it (the JWT subject)."""
        return self.principal.subject
