"""One durable JetStream pull consumer per worker kind, read by a plain nats-py pull loop.

Why not FastStream's subscriber (what this module used before): its pull subscriber fetches a
batch and takes the next only when the whole batch is settled, so one slow or rate-limited
message held back the rest (head-of-line blocking); it decodes the body before our handler sees
it, so some malformed messages never reached us and were redelivered until ``max_deliver``; and
its per-message machinery (dependency resolution in a worker thread, anyio task groups) cost more
than our handler's own work. Measured on this machine (docs/benchmarks.md, "The refresh path,
step by step").

Here the loop keeps up to ``concurrency`` messages requested or in work at all times: whenever a
quarter of that is free it asks JetStream for that many more (a pull request on
``$JS.API.CONSUMER.MSG.NEXT``), so consumption is continuous. Every message goes to the handler
as raw bytes in its own task, and the handler's :class:`Settle` is applied when it returns:

* the trace that came in the message headers is continued (one span per message, made in
  :meth:`WorkConsumer._process`: the one place to instrument);
* messages in work longer than ``ack_wait / 3`` get in-progress acks (one timer for all);
* the handler is bounded by ``handler_timeout``; an unexpected exception becomes a delayed nak,
  logged once per kind per interval (a database outage is one line, not one per message);
* the last allowed delivery is dead-lettered instead of naked;
* loop progress is reported for ``/livez`` (answers from JetStream, also empty ones).

Stopping stops asking for work, hands back what arrives afterwards, waits for the messages in
work up to the grace period, then abandons the rest (naked, so they are redelivered at once) and
says how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from opentelemetry import trace

from connector_common.logs import Throttle, get_logger
from connector_common.observability.messaging import process_attributes
from connector_common.redaction import redact_text
from connector_common.telemetry import extract_trace_context, traced_span
from connector_common.worker.backoff import retry_delay
from connector_common.worker.deadletter import DeadLetter, DeadLetters
from connector_common.worker.probes import Progress
from connector_common.worker.settings import ConsumerSettings
from connector_common.worker.settle import Delivery, Handler, Settle, describe

__all__ = ["Delivery", "Handler", "Settle", "WorkConsumer", "describe"]

log = get_logger(__name__)

# Errors that say a dependency (PostgreSQL, NATS, the network) is away, not that our code is
# wrong: logged without a stack trace.
DEPENDENCY_ERRORS = ("OperationalError", "InterfaceError", "DBAPIError", "ConnectionError")


@dataclass
class _Request:
    """A pull request JetStream has not finished answering."""

    remaining: int
    expires_at: float  # monotonic


@dataclass
class _InWork:
    msg: Msg
    started: float
    last_ack: float
    token: int
    task: asyncio.Task[None] | None = None
    settled: bool = False


@dataclass
class _Counters:
    requests: deque[_Request] = field(default_factory=deque)
    last_answer: float = field(default_factory=time.monotonic)
    broken: str | None = None  # why JetStream refuses our pull requests, while it does

    @property
    def requested(self) -> int:
        return sum(r.remaining for r in self.requests)


class WorkConsumer:
    """Binds a handler to a durable pull consumer on the WORK stream and settles its messages."""

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        *,
        kind: str,
        stream: str,
        subject: str,
        durable: str,
        settings: ConsumerSettings,
        handler: Handler,
        dead_letters: DeadLetters,
        progress: Progress,
        tracer: trace.Tracer,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self._nc = nc
        self._js = js
        self._stream = stream
        self._subject = subject
        self._durable = durable
        self._settings = settings
        self._handler = handler
        self._dead_letters = dead_letters
        self._progress = progress
        self._tracer = tracer
        self._on_idle = on_idle
        self._capacity = settings.concurrency
        self._threshold = max(1, settings.concurrency // 4)
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ""
        self._subscription: Subscription | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._in_work: dict[int, _InWork] = {}
        self._counters = _Counters()
        self._failures = Throttle(30.0)
        self._statuses = Throttle(30.0)
        self.stopping = False

    @property
    def in_work(self) -> int:
        return len(self._in_work)

    async def start(self) -> None:
        """Start pulling from the durable consumer. It is declared by provisioning
        (``connector nats provision``, ``connector dev``, the test fixtures), never here: the
        runtime waits, not ready, until it exists (connector_common.provisioning.missing)."""
        self._inbox = self._nc.new_inbox()
        self._subscription = await self._nc.subscribe(self._inbox, cb=self._on_message)
        self._loop_task = asyncio.create_task(self._run(), name=f"{self.kind}-pull-loop")

    async def stop(self, grace: float | None = None) -> int:
        """Stop taking work, finish what is in work within ``grace`` seconds; returns how many
        messages had to be abandoned (handed back for redelivery) because the grace ran out."""
        grace = self._settings.graceful_timeout_seconds if grace is None else grace
        self.stopping = True
        self._wake.set()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        # No more deliveries: our outstanding pull requests lose their interest, so JetStream
        # stops sending to them (messages in work keep their own reply subjects for the acks),
        # and what we hand back below goes to another replica, not to our own dead inbox.
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        tasks = [entry.task for entry in self._in_work.values() if entry.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        abandoned = [entry for entry in self._in_work.values() if not entry.settled]
        for entry in abandoned:
            if entry.task is not None:
                entry.task.cancel()
        for entry in abandoned:
            if entry.task is not None:
                with contextlib.suppress(BaseException):
                    await entry.task
            with contextlib.suppress(Exception):  # redelivered after AckWait if this is lost
                await entry.msg.nak()
        if abandoned:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
        return len(abandoned)

    # --- pulling ------------------------------------------------------------------------------

    async def _run(self) -> None:
        keep_alive_every = self._settings.ack_wait_seconds / 3
        tick = min(1.0, self._settings.fetch_timeout_seconds / 2, keep_alive_every)
        next_keep_alive = time.monotonic() + keep_alive_every
        while not self.stopping:
            now = time.monotonic()
            self._forget_expired(now)
            if self._nc.is_connected:
                await self._pull(now)
            self._report_progress(now)
            if now >= next_keep_alive:
                await self._keep_alive(now)
                next_keep_alive = now + keep_alive_every
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()

    async def _pull(self, now: float) -> None:
        room = self._capacity - len(self._in_work) - self._counters.requested
        if room < self._threshold and not (room > 0 and not self._in_work):
            return
        expires = self._settings.fetch_timeout_seconds
        request = json.dumps({"batch": room, "expires": int(expires * 1e9)}).encode()
        try:
            await self._nc.publish(self._next_subject, request, reply=self._inbox)
        except Exception as exc:  # disconnected meanwhile: the next turn asks again
            self._log_status("pull request not sent", type(exc).__name__)
            return
        # JetStream answers an expired request with a 408; if that never comes (a reconnect,
        # a restarted server), the request is forgotten a little after it expired.
        self._counters.requests.append(_Request(room, now + expires + 1.0))

    def _forget_expired(self, now: float) -> None:
        requests = self._counters.requests
        while requests and requests[0].expires_at <= now:
            requests.popleft()

    def _report_progress(self, now: float) -> None:
        if self._nc.is_closed:
            return  # closed for good (an -ERR from the server): /livez must fail
        if not self._nc.is_connected:
            self._progress.cycle()  # waiting for NATS to come back is not a hang
            return
        fresh = now - self._counters.last_answer <= self._settings.fetch_timeout_seconds + 2.0
        if self._counters.broken is None and (fresh or self._in_work):
            self._progress.cycle()

    async def _keep_alive(self, now: float) -> None:
        due = now - self._settings.ack_wait_seconds / 3
        for entry in list(self._in_work.values()):
            if entry.last_ack <= due and not entry.settled:
                entry.last_ack = now
                with contextlib.suppress(Exception):  # a lost +WPI only risks a redelivery
                    await entry.msg.in_progress()

    # --- receiving ----------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        if not msg.reply:  # JetStream's answers about our pull requests carry no ack subject
            self._on_status((msg.headers or {}).get("Status", ""), msg)
            return
        self._take_requested(1)
        self._counters.last_answer = time.monotonic()
        self._counters.broken = None
        if self.stopping:
            with contextlib.suppress(Exception):
                await msg.nak()  # fetched while shutting down: straight back to another replica
            return
        now = time.monotonic()
        entry = _InWork(msg, now, now, self._progress.started())
        key = id(msg)
        self._in_work[key] = entry
        entry.task = asyncio.create_task(self._process(key, entry))

    def _on_status(self, status: str, msg: Msg) -> None:
        headers = msg.headers or {}
        description = headers.get("Description", "")
        if status == "100":
            return  # heartbeat / flow control: nothing to do with pull requests
        pending = headers.get("Nats-Pending-Messages")
        if status in ("404", "408", "409") and pending is not None:
            self._take_requested(int(pending))
        elif self._counters.requests:
            self._counters.requests.popleft()  # the oldest request is over
        if status in ("404", "408"):
            self._counters.last_answer = time.monotonic()  # an empty cycle: alive
            self._counters.broken = None
            return
        if status == "409" and description.lower() not in (
            "consumer deleted",
            "consumer is push based",
        ):
            self._counters.last_answer = time.monotonic()  # e.g. leadership change: retried
            self._log_status("pull request ended early", description)
            return
        # 503 (JetStream or the consumer is not there) or a consumer that is gone: not progress.
        self._counters.broken = f"{status} {description}".strip()
        self._log_status("JetStream refused the pull request", self._counters.broken)
        self._wake.set()

    def _take_requested(self, count: int) -> None:
        requests = self._counters.requests
        while count > 0 and requests:
            head = requests[0]
            taken = min(count, head.remaining)
            head.remaining -= taken
            count -= taken
            if head.remaining <= 0:
                requests.popleft()

    def _log_status(self, event: str, detail: str) -> None:
        held = self._statuses.ready(event)
        if held is not None:
            log.warning(event, kind=self.kind, detail=detail[:200], repeated=held or None)

    # --- processing ---------------------------------------------------------------------------

    async def _process(self, key: int, entry: _InWork) -> None:
        msg = entry.msg
        try:
            await self._settle(msg, entry)
        except Exception as exc:  # settling failed (NATS away): redelivered after AckWait
            held = self._failures.ready("settle")
            if held is not None:
                log.warning(
                    "a message could not be settled; it will be redelivered",
                    kind=self.kind,
                    error=redact_text(f"{type(exc).__name__}: {exc}")[:200],
                    more_since_last_line=held,
                )
        finally:
            self._in_work.pop(key, None)
            self._progress.finished(entry.token)
            room = self._capacity - len(self._in_work) - self._counters.requested
            if room >= self._threshold:
                self._wake.set()
            if not self._in_work and self._on_idle is not None:
                self._on_idle()  # nothing in work: e.g. the summary line

    async def _settle(self, msg: Msg, entry: _InWork) -> None:
        """Run the handler for one message in its span, then settle the message."""
        metadata = msg.metadata
        delivery = Delivery(
            subject=msg.subject,
            headers=dict(msg.headers or {}),
            attempt=int(metadata.num_delivered or 1),
            max_deliver=self._settings.max_deliver,
            stream_seq=int(metadata.sequence.stream),
        )
        body = msg.data or b""
        name, attributes = process_attributes(
            delivery.subject,
            delivery.headers,
            consumer_group=self._durable,
            attempt=delivery.attempt,
            body_size=len(body),
        )
        # A child of the publish span whose context the message carried.
        context = extract_trace_context(delivery.headers)
        with traced_span(
            self._tracer, name, context=context, kind=trace.SpanKind.CONSUMER, attributes=attributes
        ) as span:
            settle = await self._run_handler(body, delivery)
            span.set_attribute("connector.settle", settle.action)
            await self._apply(msg, body, delivery, settle)
            entry.settled = True

    async def _run_handler(self, body: bytes, delivery: Delivery) -> Settle:
        try:
            async with asyncio.timeout(self._settings.handler_timeout_seconds):
                return await self._handler(body, delivery)
        except TimeoutError:
            return self._failed(delivery, "handler timed out")
        except Exception as exc:
            # Never swallowed: counted and logged (once per kind per interval), and the
            # message comes back later.
            kind = type(exc).__name__
            held = self._failures.ready(kind)
            if held is not None:
                dependency = kind in DEPENDENCY_ERRORS or isinstance(exc, OSError)
                (log.warning if dependency else log.error)(
                    "handler failed; the message will come back",
                    kind=self.kind,
                    error=redact_text(f"{kind}: {exc}")[:300],
                    stream_seq=delivery.stream_seq,
                    more_since_last_line=held,
                    exc_info=None if dependency else exc,
                )
            return self._failed(delivery, f"{kind}: {exc}")

    def _failed(self, delivery: Delivery, reason: str) -> Settle:
        delay = retry_delay(
            delivery.attempt, self._settings.retry_base_seconds, self._settings.retry_max_seconds
        )
        return Settle.nak(delay, redact_text(reason)[:300])

    async def _apply(self, msg: Msg, body: bytes, delivery: Delivery, settle: Settle) -> None:
        if settle.action == "ack":
            await msg.ack()
            return
        if settle.action == "nak" and not delivery.last_attempt:
            await msg.nak(delay=settle.delay)
            return
        reason = settle.reason or "dead-lettered"
        if settle.action == "nak":
            reason = f"retries spent after {delivery.attempt} deliveries: {reason}"
        try:
            await self._dead_letters.publish(
                DeadLetter(
                    kind=self.kind,
                    subject=delivery.subject,
                    payload=body,
                    headers=delivery.headers,
                    reason=reason,
                    deliveries=delivery.attempt,
                    stream=self._stream,
                    stream_seq=delivery.stream_seq,
                    consumer=self._durable,
                )
            )
        except Exception as exc:
            # The DLQ did not confirm: keep the message (redelivered later), lose nothing.
            log.error(
                "dead letter not stored; the message will come back",
                kind=self.kind,
                stream_seq=delivery.stream_seq,
                error=type(exc).__name__,
            )
            await msg.nak(delay=self._settings.retry_base_seconds)
            return
        await msg.term()
