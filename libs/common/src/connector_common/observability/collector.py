"""The pipeline's queue and account signals, read on an interval, never per request.

One loop (run by the scheduler, and only while its replica leads, so each value is reported
once) reads JetStream (pending and ack-pending per durable consumer, DLQ depth) and PostgreSQL
(outbox backlog and its oldest message's age, open circuit breakers, accounts by status and
marketplace), keeps the last snapshot, and observable gauges report it at every scrape or OTLP
export. Labels are bounded: kind, consumer, state, status, marketplace; never an org or an
account id.

=========================================  ==============================  ======================
metric                                     labels                          source
=========================================  ==============================  ======================
``connector.jetstream.consumer.pending``   ``kind``, ``consumer``          consumer info
``connector.jetstream.consumer.ack_pending``  same                         consumer info
``connector.jetstream.consumer.redelivered``  same                         consumer info
``connector.jetstream.consumer.waiting``   same (pull requests waiting)    consumer info
``connector.jetstream.consumer.delivered`` same (counter)                  consumer info
``connector.dlq.messages``                 ``kind``                        DLQ stream subjects
``connector.outbox.backlog``               —                               outbox table
``connector.outbox.oldest_age``            — (seconds)                     outbox table
``connector.circuit_breakers``             ``state`` (open, half_open)     circuit_breakers table
``connector.accounts``                     ``status``, ``marketplace``     accounts and tokens
``connector.ebay.budget.used`` / ``.limit``  ``budget``                    :class:`BudgetSource`
``ebay.rate_limit.remaining`` / ``.limit``  ``ebay.api_name``, ``ebay.resource``  stored quotas
=========================================  ==============================  ======================
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.budget import repository as budget_repo
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import EbayAccount, EbayToken
from connector_common.db.status import status_sql
from connector_common.events import utcnow
from connector_common.logs import get_logger
from connector_common.messaging import Topology
from connector_common.redaction import redact_text
from connector_common.status import AccountStatus
from connector_common.telemetry import untraced

log = get_logger(__name__)

WORK_KINDS = ("refresh", "health")
BREAKER_STATES = ("open", "half_open")


@dataclass(frozen=True)
class ConsumerState:
    """One durable consumer as JetStream reports it."""

    kind: str
    consumer: str
    pending: int  # in the stream, not yet delivered
    ack_pending: int  # delivered, not yet acknowledged
    redelivered: int
    waiting: int  # pull requests waiting for messages (workers asking)
    delivered: int  # deliveries so far (consumer sequence): grows while workers take work


@dataclass(frozen=True)
class BudgetUsage:
    """How much of a daily eBay call budget is used (issue 8 adds the budget itself)."""

    budget: str  # a bounded name, e.g. "oauth.refresh_token"
    used: int
    limit: int


# ---------------------------------------------------------------------------------------------
# The daily eBay call budget: the scheduler passes connector_common.budget.usage.current_usage,
# which gives one BudgetUsage per budget; the gauges connector.ebay.budget.used / .limit feed
# the dashboard panel and the "budget nearly used" alert in deploy/observability/.
# ---------------------------------------------------------------------------------------------
BudgetSource = Callable[[], Awaitable[Sequence[BudgetUsage]]]


@dataclass
class PipelineSnapshot:
    """Everything one collection read."""

    consumers: list[ConsumerState] = field(default_factory=list)
    dlq: dict[str, int] = field(default_factory=dict)
    outbox_backlog: int = 0
    outbox_oldest_age: float = 0.0
    breakers: dict[str, int] = field(default_factory=dict)
    accounts: dict[tuple[str, str], int] = field(default_factory=dict)
    budgets: list[BudgetUsage] = field(default_factory=list)
    quotas: list[dict[str, Any]] = field(default_factory=list)


class PipelineCollector:
    """Reads the pipeline's state every ``interval`` seconds while ``active()`` says so."""

    def __init__(
        self,
        sessions: SessionFactory,
        js: JetStreamContext,
        topology: Topology,
        meter: metrics.Meter,
        *,
        interval: float = 15.0,
        active: Callable[[], bool] = lambda: True,
        budget: BudgetSource | None = None,
        quotas_max_age: float | None = None,
    ) -> None:
        self._sessions = sessions
        self._js = js
        self._topology = topology
        self._interval = interval
        self._active = active
        self._budget = budget
        # eBay's quotas as a health checker last stored them, reported while younger than this
        # (None: not reported); an older reading says nothing true about today's calls.
        self._quotas_max_age = quotas_max_age
        self.snapshot: PipelineSnapshot | None = None
        self.cycles = 0  # loop iterations, led or not
        self._register(meter)

    async def run(self, stop: asyncio.Event) -> None:
        """Collect until ``stop``; a failed read is logged and retried next interval."""
        with untraced():  # a metrics read every interval is no trace anyone looks for
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._active():
                try:
                    self.snapshot = await self.collect()
                except Exception as exc:
                    log.warning(
                        "collecting pipeline metrics failed",
                        error=redact_text(f"{type(exc).__name__}: {exc}")[:300],
                    )
            else:
                self.snapshot = None  # another replica reports them
            self.cycles += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def collect(self) -> PipelineSnapshot:
        """One read of JetStream and PostgreSQL."""
        snapshot = PipelineSnapshot()
        snapshot.consumers = await self._consumers()
        snapshot.dlq = await self._dlq()
        async with unit_of_work(self._sessions) as session:
            backlog, oldest = (
                await session.execute(
                    text(
                        "SELECT count(*), "
                        "coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                        "FROM outbox WHERE published_at IS NULL"
                    )
                )
            ).one()
            snapshot.outbox_backlog, snapshot.outbox_oldest_age = int(backlog), float(oldest)
            rows = await session.execute(
                text(
                    "SELECT state, count(*) FROM circuit_breakers "
                    "WHERE state <> 'closed' GROUP BY state"
                )
            )
            snapshot.breakers = {state: 0 for state in BREAKER_STATES}
            snapshot.breakers.update({str(state): int(n) for state, n in rows})
            snapshot.accounts = await self._accounts(session)
            if self._quotas_max_age is not None:
                read_at, quotas = await budget_repo.latest_quotas(session)
                if read_at is not None and (
                    (utcnow() - read_at).total_seconds() <= self._quotas_max_age
                ):
                    snapshot.quotas = quotas
        if self._budget is not None:
            snapshot.budgets = list(await self._budget())
        return snapshot

    async def _consumers(self) -> list[ConsumerState]:
        found = []
        topology = self._topology
        for kind, durable in (
            ("refresh", topology.refresher_durable),
            ("health", topology.health_durable),
        ):
            try:
                info = await self._js.consumer_info(topology.work_stream, durable, timeout=5)
            except NotFoundError:
                continue  # the worker has not created its consumer yet
            found.append(
                ConsumerState(
                    kind=kind,
                    consumer=durable,
                    pending=int(info.num_pending or 0),
                    ack_pending=int(info.num_ack_pending or 0),
                    redelivered=int(info.num_redelivered or 0),
                    waiting=int(info.num_waiting or 0),
                    delivered=int(info.delivered.consumer_seq or 0) if info.delivered else 0,
                )
            )
        return found

    async def _dlq(self) -> dict[str, int]:
        info = await self._js.stream_info(
            self._topology.dlq_stream, subjects_filter=self._topology.dlq_subject(">")
        )
        per_subject = info.state.subjects or {}
        depth = {kind: 0 for kind in WORK_KINDS}
        for subject, count in per_subject.items():
            kind = subject.rsplit(".", 1)[-1]
            depth[kind if kind in depth else "other"] = depth.get(kind, 0) + int(count)
        return depth

    async def _accounts(self, session: AsyncSession) -> dict[tuple[str, str], int]:
        status = status_sql(utcnow()).label("status")
        rows = await session.execute(
            select(status, EbayAccount.marketplace_id, func.count())
            .select_from(EbayAccount)
            .outerjoin(EbayToken, EbayToken.account_id == EbayAccount.id)
            .group_by(status, EbayAccount.marketplace_id)
        )
        # A tombstone (deleted by eBay) keeps no marketplace.
        counts = {(str(s), str(m) if m is not None else "unknown"): int(n) for s, m, n in rows}
        # Every status of every marketplace in use, zeros included: a rate over a series that
        # appears only when it is non-zero misses the first accounts that reach it.
        for marketplace in {m for _s, m in counts}:
            for known in AccountStatus:
                counts.setdefault((known.value, marketplace), 0)
        return counts

    # --- gauges --------------------------------------------------------------------------------

    def _register(self, meter: metrics.Meter) -> None:
        def consumer_gauge(name: str, attribute: str, description: str, counter: bool) -> None:
            def observe(options: CallbackOptions) -> Iterable[Observation]:
                if self.snapshot is None:
                    return ()
                return [
                    Observation(
                        getattr(state, attribute), {"kind": state.kind, "consumer": state.consumer}
                    )
                    for state in self.snapshot.consumers
                ]

            create = meter.create_observable_counter if counter else meter.create_observable_gauge
            create(name, [observe], unit="{message}", description=description)

        prefix = "connector.jetstream.consumer."
        consumer_gauge(prefix + "pending", "pending", "Work not yet delivered", False)
        consumer_gauge(prefix + "ack_pending", "ack_pending", "Work delivered, not acked", False)
        consumer_gauge(prefix + "redelivered", "redelivered", "Work delivered again", False)
        consumer_gauge(prefix + "waiting", "waiting", "Pull requests of workers waiting", False)
        consumer_gauge(prefix + "delivered", "delivered", "Deliveries to workers", True)

        def gauge(
            name: str,
            unit: str,
            description: str,
            read: Callable[[PipelineSnapshot], Iterable[tuple[float, dict[str, str]]]],
        ) -> None:
            def observe(options: CallbackOptions) -> Iterable[Observation]:
                if self.snapshot is None:
                    return ()
                return [Observation(value, labels) for value, labels in read(self.snapshot)]

            meter.create_observable_gauge(name, [observe], unit=unit, description=description)

        gauge(
            "connector.dlq.messages",
            "{message}",
            "Dead letters kept in the DLQ stream, by kind of work",
            lambda s: [(n, {"kind": kind}) for kind, n in s.dlq.items()],
        )
        gauge(
            "connector.outbox.backlog",
            "{message}",
            "Committed events and work not yet published to JetStream",
            lambda s: [(s.outbox_backlog, {})],
        )
        gauge(
            "connector.outbox.oldest_age",
            "s",
            "Age of the oldest unpublished outbox message",
            lambda s: [(s.outbox_oldest_age, {})],
        )
        gauge(
            "connector.circuit_breakers",
            "{breaker}",
            "Per-account eBay circuit breakers not closed, by state",
            lambda s: [(n, {"state": state}) for state, n in s.breakers.items()],
        )
        gauge(
            "connector.accounts",
            "{account}",
            "Accounts by status and marketplace",
            lambda s: [
                (n, {"status": status, "marketplace": marketplace})
                for (status, marketplace), n in s.accounts.items()
            ],
        )
        gauge(
            "connector.ebay.budget.used",
            "{call}",
            "eBay calls used today of a daily budget (issue 8)",
            lambda s: [(b.used, {"budget": b.budget}) for b in s.budgets],
        )
        gauge(
            "connector.ebay.budget.limit",
            "{call}",
            "eBay calls allowed per day by a budget (issue 8)",
            lambda s: [(b.limit, {"budget": b.budget}) for b in s.budgets],
        )
        # The same names and labels the eBay client gives Developer Analytics answers.
        gauge(
            "ebay.rate_limit.remaining",
            "{call}",
            "Calls eBay still allows in the current window (Developer Analytics)",
            lambda s: [
                (q["remaining"], quota_labels(q)) for q in s.quotas if q["remaining"] is not None
            ],
        )
        gauge(
            "ebay.rate_limit.limit",
            "{call}",
            "Calls eBay allows per window (Developer Analytics)",
            lambda s: [(q["limit"], quota_labels(q)) for q in s.quotas if q["limit"] is not None],
        )


def quota_labels(quota: dict[str, Any]) -> dict[str, str]:
    """The labels of one stored quota: API and resource names, never an account."""
    return {
        "ebay.api": "analytics",
        "ebay.api_context": str(quota["api_context"]),
        "ebay.api_name": str(quota["api_name"]),
        "ebay.resource": str(quota["resource"]),
    }
