"""Dead letters: work that cannot be done goes to ``{ns}.dlq.{kind}`` with the reason, and the
consumer moves on.

Two ways in:

* the handler decides (unparseable message, unknown account, retries spent): it publishes the
  original payload and headers plus the reason and delivery count, then terminates the message;
* a message whose last delivery was never settled (the process died on it every time) reaches
  ``max_deliver`` on its own. JetStream then announces it on
  ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`` and leaves it in the WORK
  stream; :class:`MaxDeliveriesWatcher` copies it to the DLQ and deletes it from WORK.

The DLQ publish carries ``Nats-Msg-Id: dlq:<stream>:<seq>``, so dead-lettering one message twice
(two replicas, a retry) stores it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import trace

from connector_common.logs import get_logger
from connector_common.messaging import Topology
from connector_common.observability.messaging import carry, end_publish_span, start_publish_span
from connector_common.redaction import redact_text

log = get_logger(__name__)

REASON_HEADER = "Connector-Dead-Letter-Reason"
SUBJECT_HEADER = "Connector-Original-Subject"
DELIVERIES_HEADER = "Connector-Deliveries"
STREAM_SEQ_HEADER = "Connector-Stream-Seq"
CONSUMER_HEADER = "Connector-Consumer"
MSG_ID_HEADER = "Connector-Original-Msg-Id"
TRUNCATED_HEADER = "Connector-Payload-Truncated"  # the original size, when the copy is cut
MAX_REASON = 300
# A dead letter keeps at most this much of the original payload. The copy carries more headers
# than the original: a message near the server's max_payload would not fit, nats-server answers
# such a publish with -ERR, and nats-py then closes the connection for good.
MAX_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """One message that will not be processed, and why."""

    kind: str  # refresh | health
    subject: str
    payload: bytes
    headers: Mapping[str, str]
    reason: str
    deliveries: int
    stream: str
    stream_seq: int
    consumer: str


class DeadLetters:
    """Publishes dead letters to the DLQ stream."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        timeout: float = 5.0,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._js = js
        self._topology = topology
        self._timeout = timeout
        self._tracer = tracer or trace.get_tracer(__name__)

    async def publish(self, letter: DeadLetter) -> None:
        """Store the dead letter; raises when JetStream did not confirm it."""
        headers = {
            key: value
            for key, value in letter.headers.items()
            if key != "Nats-Msg-Id" and not key.startswith("Nats-")
        }
        if original := letter.headers.get("Nats-Msg-Id"):
            headers[MSG_ID_HEADER] = original
        headers.update(
            {
                "Nats-Msg-Id": f"dlq:{letter.stream}:{letter.stream_seq}",
                REASON_HEADER: redact_text(letter.reason)[:MAX_REASON],
                SUBJECT_HEADER: letter.subject,
                DELIVERIES_HEADER: str(letter.deliveries),
                STREAM_SEQ_HEADER: str(letter.stream_seq),
                CONSUMER_HEADER: letter.consumer,
            }
        )
        payload = letter.payload
        if len(payload) > MAX_PAYLOAD:
            headers[TRUNCATED_HEADER] = str(len(payload))
            payload = payload[:MAX_PAYLOAD]
        # A PRODUCER span in the trace of the message that failed (the consumer's span is
        # current), whose context the dead letter carries instead of the original's.
        subject = self._topology.dlq_subject(letter.kind)
        span = start_publish_span(self._tracer, subject, message_id=headers["Nats-Msg-Id"])
        try:
            await self._js.publish(
                subject, payload, headers=carry(span, headers), timeout=self._timeout
            )
        except BaseException as exc:
            end_publish_span(span, False, type(exc).__name__)
            raise
        end_publish_span(span, True)
        log.warning(
            "message dead-lettered",
            kind=letter.kind,
            subject=letter.subject,
            stream_seq=letter.stream_seq,
            deliveries=letter.deliveries,
            reason=headers[REASON_HEADER],
        )


def max_deliveries_subject(stream: str, consumer: str) -> str:
    """The advisory JetStream publishes when a message reaches the consumer's max_deliver."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


class MaxDeliveriesWatcher:
    """Moves messages that exhausted their deliveries from the WORK stream to the DLQ.

    All replicas of a worker subscribe in one queue group, so each advisory is handled once.
    An advisory sent while no replica runs is missed; the message then stays in WORK until its
    max age, and the scheduler re-derives the work from PostgreSQL, so the cost is a delay.
    """

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        dead_letters: DeadLetters,
        *,
        kind: str,
        stream: str,
        consumer: str,
    ) -> None:
        self._nc = nc
        self._js = js
        self._dead_letters = dead_letters
        self._kind = kind
        self._stream = stream
        self._consumer = consumer
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(
            max_deliveries_subject(self._stream, self._consumer),
            queue=f"{self._consumer}-dlq",
            cb=self._on_advisory,
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _on_advisory(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg.data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, data: bytes) -> None:
        try:
            advisory = json.loads(data)
            seq = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries", 0))
        except (ValueError, KeyError, TypeError):
            log.error("unreadable max-deliveries advisory", consumer=self._consumer)
            return
        try:
            await self.dead_letter(seq, deliveries)
        except Exception as exc:
            log.error(
                "could not dead-letter an exhausted message",
                stream_seq=seq,
                error=redact_text(f"{type(exc).__name__}: {exc}")[:300],
            )

    async def dead_letter(self, seq: int, deliveries: int) -> bool:
        """Copy message ``seq`` to the DLQ and delete it from WORK; False if it is gone."""
        try:
            raw = await self._js.get_msg(self._stream, seq)
        except NotFoundError:
            return False  # settled meanwhile (a late ack), or already moved
        await self._dead_letters.publish(
            DeadLetter(
                kind=self._kind,
                subject=raw.subject or "",
                payload=raw.data or b"",
                headers=dict(raw.headers or {}),
                reason=f"max deliveries ({deliveries}) reached without being settled",
                deliveries=deliveries,
                stream=self._stream,
                stream_seq=seq,
                consumer=self._consumer,
            )
        )
        with contextlib.suppress(NotFoundError):
            await self._js.delete_msg(self._stream, seq)
        return True
