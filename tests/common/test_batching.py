"""Group commit: concurrent submissions share one flush, and a failed flush fails its batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from connector_common.batching import Batcher


async def test_items_submitted_together_are_flushed_together_and_each_gets_its_result() -> None:
    seen: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert seen == [[0, 1, 2, 3, 4]]


async def test_items_arriving_during_a_flush_go_into_the_next_one() -> None:
    seen: list[list[int]] = []
    first_started = asyncio.Event()

    async def flush(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        first_started.set()
        await asyncio.sleep(0.05)
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush, max_size=3)
    early = asyncio.gather(*(batcher.submit(i) for i in range(4)))
    await first_started.wait()
    late = asyncio.gather(*(batcher.submit(i) for i in range(10, 12)))
    assert await early == [0, 1, 2, 3]
    assert await late == [10, 11]
    assert seen == [[0, 1, 2], [3, 10, 11]]  # at most max_size; the rest queued


async def test_a_failed_flush_fails_every_item_of_its_batch_and_the_next_batch_runs() -> None:
    calls = 0

    async def flush(items: Sequence[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database went away")
        return list(items)

    batcher: Batcher[str, str] = Batcher(flush)
    failed = await asyncio.gather(*(batcher.submit(s) for s in "ab"), return_exceptions=True)
    assert all(isinstance(f, ConnectionError) for f in failed)
    assert await batcher.submit("c") == "c"


async def test_a_flush_continues_its_one_submitters_trace_or_links_all_of_them() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    current: list[trace.SpanContext] = []

    async def flush(items: Sequence[int]) -> list[int]:
        current.append(trace.get_current_span().get_span_context())
        return list(items)

    batcher: Batcher[int, int] = Batcher(flush, name="token write", tracer=tracer)
    with tracer.start_as_current_span("refresh alone") as alone:
        await batcher.submit(0)
    # One item: the flush (its statements) is part of the submitter's trace.
    assert current[0] == alone.get_span_context()

    async def submit(number: int) -> trace.SpanContext:
        with tracer.start_as_current_span(f"refresh {number}") as span:
            await batcher.submit(number)
            return span.get_span_context()

    submitters = await asyncio.gather(*(submit(n) for n in range(3)))
    # Several: a span of the batch's own, in none of their traces, linked to each of them.
    (batch,) = [s for s in exporter.get_finished_spans() if s.name == "token write batch"]
    assert batch.context is not None
    assert current[1] == batch.context
    assert batch.parent is None
    assert batch.context.trace_id not in {s.trace_id for s in submitters}
    assert {link.context.span_id for link in batch.links} == {s.span_id for s in submitters}
