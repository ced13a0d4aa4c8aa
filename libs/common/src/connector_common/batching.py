"""Group commit: many concurrent callers, one statement.

Each message is handled by its own task, which reads like a single-account refresh (claim, call
eBay, write). Where such a step is a database statement, the task submits its item to a
:class:`Batcher` and awaits its own result; the batcher runs one ``flush`` for everything
submitted meanwhile. While one flush is in flight the next items gather, so batches grow with the
load by themselves and nothing waits for a timer: at a trickle a batch is one item, at a burst
it is many (up to ``max_size``).

A flush that raises fails every item of its batch with that exception (a database outage fails
the messages in work, which come back later).

Traces: a flush of one item runs in its submitter's trace context, so its statement is a child
of the span that submitted it (at a trickle, every write sits in its own refresh's trace). A
flush of several runs in a span of its own (``<name> batch``) linked to every submitter's span,
instead of in the first submitter's trace (where the other accounts' writes do not belong).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Coalesces concurrent :meth:`submit` calls into calls of ``flush`` (one at a time)."""

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_size: int = 256,
        name: str = "flush",
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._flush = flush
        self._max_size = max_size
        self._name = name
        self._tracer = tracer
        self._queue: list[tuple[T, asyncio.Future[R], otel_context.Context]] = []
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0  # how many flushes ran (tests and metrics)

    async def submit(self, item: T) -> R:
        """The result ``flush`` gave for ``item`` (or the exception it raised)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, otel_context.get_current()))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # everything submitted in this turn of the loop joins in
            while self._queue:
                batch = self._queue[: self._max_size]
                del self._queue[: self._max_size]
                await self._run(batch)
        finally:
            self._task = None

    async def _run(self, batch: list[tuple[T, asyncio.Future[R], otel_context.Context]]) -> None:
        self.flushes += 1
        token = otel_context.attach(batch[0][2] if len(batch) == 1 else otel_context.Context())
        try:
            if len(batch) == 1:
                results = await self._flush([batch[0][0]])
            else:
                results = await self._flush_linked(batch)
        except Exception as exc:
            for _, future, _ctx in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future, _ctx in batch:
                future.cancel()
            raise
        finally:
            otel_context.detach(token)
        for (_, future, _ctx), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _flush_linked(
        self, batch: list[tuple[T, asyncio.Future[R], otel_context.Context]]
    ) -> Sequence[R]:
        links = []
        for _, _future, submitted in batch:
            span_context = trace.get_current_span(submitted).get_span_context()
            if span_context.is_valid:
                links.append(trace.Link(span_context))
        tracer = self._tracer or trace.get_tracer(__name__)
        with tracer.start_as_current_span(
            f"{self._name} batch",
            links=links,
            attributes={"connector.batch.size": len(batch)},
            record_exception=False,
        ):
            return await self._flush([item for item, _, _ctx in batch])
