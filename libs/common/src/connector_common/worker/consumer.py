"""One durable JetStream pull consumer per worker kind, through FastStream, with explicit acks.

FastStream's NATS default ack policy (REJECT_ON_ERROR) terminates a message on any exception, so
a database blip would silently drop work. We use ``AckPolicy.MANUAL`` and settle every message
ourselves, after the database commit: the handler returns a :class:`Settle` and this module
applies it. Around every handler it

* continues the trace that came in the message headers,
* sends in-progress acks every ``ack_wait / 3`` while the handler runs (long eBay calls),
* bounds the handler by ``handler_timeout`` and turns an unexpected exception into a delayed nak,
* dead-letters instead of naking when this was the last allowed delivery,
* reports loop progress for ``/livez`` (every fetch cycle, also an empty one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy
from nats.js.errors import ServiceUnavailableError
from opentelemetry import trace
from pydantic import ValidationError

from connector_common.logs import get_logger
from connector_common.messaging import broker_security
from connector_common.redaction import redact_text
from connector_common.settings import NatsSettings
from connector_common.telemetry import extract_trace_context, traced_span
from connector_common.worker.backoff import retry_delay
from connector_common.worker.deadletter import DeadLetter, DeadLetters
from connector_common.worker.probes import Progress
from connector_common.worker.settings import ConsumerSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class Settle:
    """What to do with a message once the handler is done."""

    action: Literal["ack", "nak", "dead_letter"]
    delay: float | None = None  # nak: redeliver after this many seconds
    reason: str | None = None  # nak / dead_letter: why (redacted, short)

    @classmethod
    def ack(cls) -> Settle:
        return cls("ack")

    @classmethod
    def nak(cls, delay: float, reason: str) -> Settle:
        return cls("nak", max(0.0, delay), reason)

    @classmethod
    def dead_letter(cls, reason: str) -> Settle:
        return cls("dead_letter", None, reason)


@dataclass(frozen=True)
class Delivery:
    """What the handler may know about the message besides its body."""

    subject: str
    headers: dict[str, str]
    attempt: int  # 1 on the first delivery
    max_deliver: int
    stream_seq: int

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_deliver


Handler = Callable[[bytes, Delivery], Awaitable[Settle]]


def describe(error: ValidationError) -> str:
    """What is wrong with a message, naming fields only (the input may hold anything)."""
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in error.errors(include_input=False, include_url=False)
    ]
    return "; ".join(problems)[:250]


def create_broker(nats: NatsSettings, settings: ConsumerSettings, name: str) -> NatsBroker:
    """A FastStream NATS broker whose stop waits for in-flight handlers (graceful timeout)."""
    options: dict[str, Any] = {
        "name": name,
        "graceful_timeout": settings.graceful_timeout_seconds,
        "connect_timeout": nats.connect_timeout_seconds,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "ack_policy": AckPolicy.MANUAL,
        # Our handlers log what matters; FastStream's per-message lines go through our
        # structured, redacting handler under "faststream" (WARNING unless DEBUG is asked for).
        "logger": logging.getLogger("faststream.broker"),
        "log_level": logging.DEBUG,
    }
    if (security := broker_security(nats)) is not None:
        options["security"] = security  # user/password, token, .creds, NKey seed; TLS
    return NatsBroker(nats.servers, **options)


class WorkConsumer:
    """Binds a handler to a durable pull consumer on the WORK stream and settles its messages."""

    def __init__(
        self,
        broker: NatsBroker,
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
        self._on_idle = on_idle
        self._in_work = 0
        self._stream = stream
        self._durable = durable
        self._settings = settings
        self._handler = handler
        self._dead_letters = dead_letters
        self._progress = progress
        self._tracer = tracer
        self.stopping = False
        self._subscriber = broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),  # streams come from ensure_streams
            durable=durable,
            pull_sub=PullSub(
                batch_size=settings.concurrency, timeout=settings.fetch_timeout_seconds
            ),
            config=ConsumerConfig(
                durable_name=durable,
                ack_policy=JsAckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=settings.ack_wait_seconds,
                max_deliver=settings.max_deliver,
                max_ack_pending=settings.max_ack_pending,
                description=f"{kind} work, shared by every replica",
            ),
            ack_policy=AckPolicy.MANUAL,
        )
        self._subscriber(self._on_message)

    def track_fetches(self) -> None:
        """Count every fetch cycle as progress; call after the broker started."""
        subscription: Any = getattr(self._subscriber, "subscription", None)
        if subscription is None or getattr(subscription, "_connector_tracked", False):
            return
        fetch = subscription.fetch
        progress = self._progress
        fetch_timeout = self._settings.fetch_timeout_seconds

        async def counted_fetch(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await fetch(*args, **kwargs)
            except TimeoutError as exc:
                progress.cycle()  # an empty queue is progress too
                if isinstance(exc, NatsTimeoutError):
                    raise
                # nats-py sometimes raises the plain asyncio TimeoutError for an empty batch;
                # FastStream only expects its own, and would restart the loop with a traceback.
                raise NatsTimeoutError from exc
            except ServiceUnavailableError:
                # JetStream away for now: the loop goes on. Anything else (the durable consumer
                # was deleted...) is not progress: /livez fails and the new pod re-creates it.
                progress.cycle()
                raise
            except ConnectionClosedError:
                # Closed for good: nats-py closes on a server -ERR (an expired or revoked user,
                # say) and never reconnects (reconnecting is "reconnecting", not "closed"). Not
                # progress, so /livez fails and the pod restarts; and since such a fetch fails
                # without ever yielding, wait a fetch's time before FastStream's loop retries,
                # or the loop would starve every other task of the process.
                await asyncio.sleep(fetch_timeout)
                raise
            progress.cycle()
            return result

        subscription.fetch = counted_fetch
        subscription._connector_tracked = True

    async def _on_message(self, msg: NatsMessage) -> None:
        raw = msg.raw_message
        metadata = raw.metadata
        delivery = Delivery(
            subject=raw.subject,
            headers=dict(raw.headers or {}),
            attempt=int(metadata.num_delivered or 1),
            max_deliver=self._settings.max_deliver,
            stream_seq=int(metadata.sequence.stream),
        )
        token = self._progress.started()
        self._in_work += 1
        try:
            if self.stopping:
                # Fetched while shutting down: hand it straight back to another replica.
                await msg.nack(delay=None)
                return
            context = extract_trace_context(delivery.headers)
            with traced_span(
                self._tracer,
                f"{self.kind} process",
                context=context,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.destination.name": delivery.subject,
                    "messaging.message.delivery_attempt": delivery.attempt,
                },
            ) as span:
                settle = await self._run(msg, raw.data or b"", delivery)
                span.set_attribute("connector.settle", settle.action)
                await self._apply(msg, raw.data or b"", delivery, settle)
        finally:
            self._progress.finished(token)
            self._in_work -= 1
            if self._in_work == 0 and self._on_idle is not None:
                self._on_idle()  # the batch is done: e.g. its summary line

    async def _run(self, msg: NatsMessage, body: bytes, delivery: Delivery) -> Settle:
        keep_alive = asyncio.create_task(self._keep_alive(msg))
        try:
            async with asyncio.timeout(self._settings.handler_timeout_seconds):
                return await self._handler(body, delivery)
        except TimeoutError:
            return self._failed(delivery, "handler timed out")
        except Exception as exc:
            # Never swallowed: logged with its type, and the message comes back later.
            log.exception("handler failed", kind=self.kind, stream_seq=delivery.stream_seq)
            return self._failed(delivery, f"{type(exc).__name__}: {exc}")
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive

    def _failed(self, delivery: Delivery, reason: str) -> Settle:
        delay = retry_delay(
            delivery.attempt, self._settings.retry_base_seconds, self._settings.retry_max_seconds
        )
        return Settle.nak(delay, redact_text(reason)[:300])

    async def _keep_alive(self, msg: NatsMessage) -> None:
        interval = self._settings.ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # a lost +WPI only risks a redelivery
                await msg.in_progress()

    async def _apply(
        self, msg: NatsMessage, body: bytes, delivery: Delivery, settle: Settle
    ) -> None:
        if settle.action == "ack":
            await msg.ack()
            return
        if settle.action == "nak" and not delivery.last_attempt:
            await msg.nack(delay=settle.delay)
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
            await msg.nack(delay=self._settings.retry_base_seconds)
            return
        await msg.reject()
